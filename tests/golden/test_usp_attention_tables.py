"""USP paper Tables 3 and 4 (numbering of usp_paper_tables.md): one attention layer, forward only,
8 GPUs, ring = 8 / ulysses, Llama-3-8B attention (32 heads of 128, 8 KV heads), batch 1, causal.
basic-ring = contiguous layout, lb-ring = zigzag. Targets: the predicted best Ulysses degree is
the measured best, for both ring layouts; zigzag beats the contiguous ring wherever ring > 1.

L20: the profile's all-to-all efficiency against group size (hardware_profiles/l20.yaml) was
fitted once on the 8K rows, so only the 32K and 128K rows are out-of-sample checks; the 128K
zigzag row passes narrowly (U2 2.4% ahead of U1 in the model, 5.6% measured).
Known miss (kept as a strict xfail so it turns red if it starts passing; see docs/cost-model.md
"Accuracy"): A100 lb-ring at 128K, where the four measured values lie within 5% and imply
~50 TFLOPS/GPU against ~150 at 32K.
"""

import pytest

from sp_planner.catalog import load_hardware
from sp_planner.cost.attention import attention_layer_time_s

A100 = {  # Table 3, 8 x A100-SXM4 NVLink: {seq: {ulysses: (basic it/s, lb it/s)}}
    32768: {8: (135.569, 136.375), 4: (103.525, 132.979), 2: (91.365, 132.979), 1: (81.985, 113.79)},
    131072: {8: (2.782, 2.785), 4: (2.024, 2.771), 2: (1.73, 2.89), 1: (1.628, 2.91)},
}
L20 = {  # Table 4, 8 x L20 PCIe
    8192: {8: (57.346, 57.098), 4: (153.134, 152.189), 2: (415.5, 454.93), 1: (358.595, 361.969)},
    32768: {8: (15.229, 14.262), 4: (28.584, 32.818), 2: (44.348, 62.754), 1: (40.478, 58.377)},
    131072: {8: (2.563, 2.586), 4: (3.217, 4.235), 2: (3.399, 5.476), 1: (3.131, 5.186)},
}
LAYOUTS = ("contiguous", "zigzag")


def iterations_per_s(hardware, seq_len, ulysses, layout):
    t = attention_layer_time_s(hardware, batch=1, seq_len=seq_len, num_heads=32, num_kv_heads=8,
                               head_dim=128, tp=1, ulysses=ulysses, ring=8 // ulysses, causal=True,
                               ring_layout=layout, gpus_per_node=8, elem_bytes=2, backward=False)
    return 1.0 / t


CASES = [("A100-80GB", A100, s, layout) for s in A100 for layout in LAYOUTS]
CASES += [("L20", L20, s, layout) for s in L20 for layout in LAYOUTS]
CASES[3] = pytest.param(*CASES[3], marks=pytest.mark.xfail(
    strict=True, reason="A100 lb-ring 128K: measured values within 5% of each other"))


@pytest.mark.parametrize("hardware_name, table, seq_len, layout", CASES,
                         ids=lambda v: v if isinstance(v, (str, int)) else "")
def test_predicted_best_ulysses_degree_matches(hardware_name, table, seq_len, layout):
    hardware = load_hardware(hardware_name)
    column = LAYOUTS.index(layout)
    measured = {u: row[column] for u, row in table[seq_len].items()}
    predicted = {u: iterations_per_s(hardware, seq_len, u, layout) for u in measured}
    assert max(predicted, key=predicted.get) == max(measured, key=measured.get), predicted


@pytest.mark.parametrize("hardware_name, table", [("A100-80GB", A100), ("L20", L20)])
def test_zigzag_beats_contiguous_ring(hardware_name, table):
    """Never slower; at 128K, where compute dominates, at least 1.25x (measured: 1.32 to 1.79)."""
    hardware = load_hardware(hardware_name)
    for seq_len, rows in table.items():
        for ulysses in rows:
            basic = iterations_per_s(hardware, seq_len, ulysses, "contiguous")
            zigzag = iterations_per_s(hardware, seq_len, ulysses, "zigzag")
            if ulysses == 8:
                assert zigzag == pytest.approx(basic)  # no ring, nothing to balance
            else:
                assert zigzag > basic
                if seq_len == 131072:
                    assert zigzag > 1.25 * basic

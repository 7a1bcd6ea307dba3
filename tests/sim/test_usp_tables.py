"""The USP paper's attention-only tables: does the simulator rank the Ulysses degrees as measured?

Fang & Zhao 2024, "A Unified Sequence Parallelism Approach for Long Context Generative AI"
(arXiv 2405.07719), Tables 3 (8 x A100-SXM4, NVLink) and 4 (8 x L20, PCIe): iterations/s of one
LLAMA3-8B attention forward (32 heads of 128, 8 KV heads, batch 1), ring = 8 / ulysses;
basic ring = contiguous layout, lb ring = zigzag. A row matches when every pair of degrees whose
measured speeds differ by more than 2% is ordered the same way by the simulator (closer pairs,
e.g. the 132.979 tie at 32K, are within the measurements' noise).

The L20 rows rely on the profile's all-to-all efficiency against group size (the two-socket PCIe
tree is not in the cluster graph, which has one PCIe switch per node); that figure was fitted once
on the analytic model at 8K (hardware_profiles/l20.yaml), so the 32K and 128K rows are out of sample.
Known gap (strict xfail, so a fix shows up): the A100 128K zigzag row, whose measured speeds lie
within 5% of each other.
"""

from __future__ import annotations

import itertools

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.sim.attention_only import attention_forward_time_s

# (hardware, seq_len, layout) -> measured it/s for ulysses = 8, 4, 2, 1.
MEASURED = {
    ("a100-80gb", 32768, "basic"): (135.569, 103.525, 91.365, 81.985),
    ("a100-80gb", 32768, "lb"): (136.375, 132.979, 132.979, 113.79),
    ("a100-80gb", 131072, "basic"): (2.782, 2.024, 1.73, 1.628),
    ("a100-80gb", 131072, "lb"): (2.785, 2.771, 2.89, 2.91),
    ("l20", 8192, "basic"): (57.346, 153.134, 415.5, 358.595),
    ("l20", 8192, "lb"): (57.098, 152.189, 454.93, 361.969),
    ("l20", 32768, "basic"): (15.229, 28.584, 44.348, 40.478),
    ("l20", 32768, "lb"): (14.262, 32.818, 62.754, 58.377),
    ("l20", 131072, "basic"): (2.563, 3.217, 3.399, 3.131),
    ("l20", 131072, "lb"): (2.586, 4.235, 5.476, 5.186),
}
DEGREES = (8, 4, 2, 1)
MATCHING = {("a100-80gb", 32768, "basic"), ("a100-80gb", 32768, "lb"), ("a100-80gb", 131072, "basic")}
MATCHING |= {key for key in MEASURED if key[0] == "l20"}


def _disagreements(hardware: str, seq_len: int, layout: str) -> list[tuple[int, int]]:
    hw, model = load_hardware(hardware), load_model("llama3-8b")
    simulated = {u: 1.0 / attention_forward_time_s(hw, model, seq_len=seq_len, ulysses=u, ring=8 // u,
                                                   causal=True, zigzag=layout == "lb") for u in DEGREES}
    measured = dict(zip(DEGREES, MEASURED[(hardware, seq_len, layout)]))
    wrong = []
    for a, b in itertools.permutations(DEGREES, 2):
        if measured[a] > 1.02 * measured[b] and not simulated[a] > simulated[b]:
            wrong.append((a, b))
    return wrong


@pytest.mark.parametrize("row", sorted(MATCHING))
def test_simulator_ranks_ulysses_degrees_as_measured(row):
    assert _disagreements(*row) == []


@pytest.mark.xfail(strict=True, reason="known gap, see module docstring")
@pytest.mark.parametrize("row", sorted(set(MEASURED) - MATCHING))
def test_known_ranking_gaps(row):
    assert _disagreements(*row) == []

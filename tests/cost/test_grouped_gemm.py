"""Expert grouped-GEMM efficiency by rows per expert: the DeepGEMM table by hand, and its use in
cost.moe."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.grouped_gemm import grouped_gemm_efficiency_factor
from sp_planner.cost.moe import moe_times, rows_per_expert

# deepseek-ai/DeepGEMM README.md at a9967bc2 (2025-04-09), H800 FP8 TFLOPS, for the shapes
# N x K = 4096 x 7168 and 7168 x 2048; large M = the contiguous grouped rows, M 8192 per group.
LARGE = (1346.0, 1214.0)
MASKED_256 = (932.0, 815.0)  # "Grouped GEMMs (masked layout)", 4 groups of 256 rows
MASKED_1024 = (1233.0, 925.0)  # 1 group of 1024 rows
DENSE_64 = (287.0, 295.0)  # "Normal GEMMs for dense models", M 64


def _ratio(row):
    return (row[0] / LARGE[0] + row[1] / LARGE[1]) / 2


def test_a_table_point_by_hand():
    # 4 groups of 256 rows: 932/1346 = 0.6924 and 815/1214 = 0.6713, mean 0.6819.
    assert float(grouped_gemm_efficiency_factor(256)) == pytest.approx(_ratio(MASKED_256), rel=1e-12)
    assert float(grouped_gemm_efficiency_factor(256)) == pytest.approx(0.6819, abs=1e-4)


def test_between_points_linear_in_log_rows_and_below_the_table_proportional():
    # 2048 rows lie halfway (in log) between 1024 and 4096 (ratio 1).
    assert float(grouped_gemm_efficiency_factor(2048)) == pytest.approx((_ratio(MASKED_1024) + 1.0) / 2, rel=1e-12)
    # Below 64 rows the weight reads bound the GEMM: half the rows, half the rate.
    assert float(grouped_gemm_efficiency_factor(32)) == pytest.approx(_ratio(DENSE_64) / 2, rel=1e-12)
    assert float(grouped_gemm_efficiency_factor(8192)) == 1.0 == float(grouped_gemm_efficiency_factor(1e6))


def test_efficiency_never_falls_with_more_rows():
    rows = np.geomspace(0.5, 1e6, 400)
    factor = grouped_gemm_efficiency_factor(rows)
    assert np.all(np.diff(factor) >= 0) and np.all(factor > 0) and np.all(factor <= 1)
    assert factor[0] == factor[1]  # fewer than one row counts as one


QWEN3_30B = load_model("Qwen3-30B-A3B")  # hidden 2048, 128 experts, top-8, moe_ffn 768, all 48 layers MoE


@pytest.mark.parametrize("ep,load", [(1, 1.0), (8, 1.25)])
def test_expert_gemm_time_by_hand(ep, load):
    hw = load_hardware("b200")
    tokens = 4096  # micro batch 1 x 4K, tp 1
    # Rows per local expert: 4096 tokens x top-8 copies x the busiest rank's load over 128/ep experts.
    rows = tokens * 8 * load / (128 / ep)
    assert float(rows_per_expert(QWEN3_30B, tokens, ep, 1)) == pytest.approx(rows)
    assert rows == (256 if ep == 1 else 2560)
    factor = float(grouped_gemm_efficiency_factor(rows))
    routed_flops = 2 * 3 * 2048 * 8 * 768 * tokens  # gate, up, down of 8 experts per token
    flat_s = routed_flops / (hw.peak_bf16_flops * hw.efficiency.gemm * hw.efficiency.sustained_fraction)
    times = moe_times(hw, QWEN3_30B, tokens_per_tp_rank=tokens, ep=ep, etp=1, ep_stride=1, elem_bytes=2,
                      gpus_per_node=8)
    # Beyond the mean at the flat efficiency (which the layer GEMMs time): load / factor - 1.
    assert float(times.extra_expert_gemm_fwd_s) == pytest.approx(flat_s * (load / factor - 1), rel=1e-12)
    if ep == 1:  # 256 rows: 0.68 of the large-shape rate, the expert GEMMs take 1.47 x as long
        assert float(times.extra_expert_gemm_fwd_s) / flat_s == pytest.approx(1 / 0.6819 - 1, rel=1e-3)

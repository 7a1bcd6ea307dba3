"""Expert GEMMs: the single-kernel grouped curve by rows per expert (the DeepGEMM table by hand) and
its use in cost.moe; one GEMM per expert against Transformer Engine's own benchmark; each
framework's choice."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.gemm_outputs import output_ratio
from sp_planner.cost.gemm_shapes import contraction_ratio
from sp_planner.cost.grouped_gemm import (
    framework_expert_gemm,
    grouped_gemm_efficiency_factor,
    with_expert_gemm,
    with_framework_expert_gemm,
)
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
QWEN3_30B_GROUPED = with_expert_gemm(QWEN3_30B, "grouped")


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
    times = moe_times(hw, QWEN3_30B_GROUPED, tokens_per_tp_rank=tokens, ep=ep, etp=1, ep_stride=1, elem_bytes=2,
                      gpus_per_node=8)
    # Beyond the mean at the flat efficiency (which the layer GEMMs time): load / factor - 1.
    assert float(times.extra_expert_gemm_fwd_s) == pytest.approx(flat_s * (load / factor - 1), rel=1e-12)
    if ep == 1:  # 256 rows: 0.68 of the large-shape rate, the expert GEMMs take 1.47 x as long
        assert float(times.extra_expert_gemm_fwd_s) / flat_s == pytest.approx(1 / 0.6819 - 1, rel=1e-3)
    # One GEMM per expert (the default) takes its shape's ratios in cost.gemm_shapes instead: here only
    # the busiest rank's load above the mean.
    times = moe_times(hw, QWEN3_30B, tokens_per_tp_rank=tokens, ep=ep, etp=1, ep_stride=1, elem_bytes=2,
                      gpus_per_node=8)
    assert float(times.extra_expert_gemm_fwd_s) == pytest.approx(flat_s * (load - 1), rel=1e-12, abs=1e-15)


def test_per_expert_gemms_keep_the_grouped_curve_where_no_output_table_exists():
    # A800 has no output-size table (cost.gemm_outputs): its per-expert GEMMs take the grouped curve.
    hw = load_hardware("a800")
    times = moe_times(hw, QWEN3_30B, tokens_per_tp_rank=4096, ep=1, etp=1, ep_stride=1, elem_bytes=2,
                      gpus_per_node=8)
    grouped = moe_times(hw, QWEN3_30B_GROUPED, tokens_per_tp_rank=4096, ep=1, etp=1, ep_stride=1, elem_bytes=2,
                        gpus_per_node=8)
    assert float(times.extra_expert_gemm_fwd_s) == float(grouped.extra_expert_gemm_fwd_s) > 0


# NVIDIA/TransformerEngine PR #2045 (yaox12's update: TE 2.7, CUDA 12.9, H100, BF16), TFLOPS of the
# grouped GEMM of (experts, rows each, N, K): TE's multi-stream cuBLAS path and the CUTLASS kernel.
TE_PR2045 = ((16, 2048, 768, 2048, 553.945, 636.927), (8, 4096, 768, 2048, 627.903, 650.574))


@pytest.mark.parametrize("experts,rows,n,k,multi_stream,cutlass", TE_PR2045)
def test_expert_gemm_rates_against_transformer_engines_benchmark(experts, rows, n, k, multi_stream, cutlass):
    """A forward expert GEMM of `rows` x n over k on H100: one GEMM per expert at its K and output-size
    ratios, against TE's multi-stream figure; one grouped kernel at its K ratio and the grouped
    curve, against CUTLASS's. Per expert is 6-18% under the multi-stream figure (four streams overlap
    the small GEMMs), grouped 9-16% over CUTLASS's."""
    hw = load_hardware("h100-sxm")
    flat_tflops = hw.peak_bf16_flops * hw.efficiency.gemm / 1e12
    per_expert = flat_tflops * float(contraction_ratio(hw, k)) * float(output_ratio(hw, rows * n, k))
    grouped = flat_tflops * float(contraction_ratio(hw, k)) * float(grouped_gemm_efficiency_factor(rows))
    assert 0.8 < per_expert / multi_stream < 1.0
    assert 1.0 < grouped / cutlass < 1.2
    # The single-kernel curve, which timed TE's per-expert path before, was 20-25% over TE's figure.
    assert grouped / multi_stream > 1.19


def test_each_framework_runs_its_own_expert_gemms():
    # Megatron-LM's --moe-grouped-gemm (TE GroupedLinear): one GEMM per expert; torchtitan's
    # torch._grouped_mm: one kernel.
    assert framework_expert_gemm("megatron") == "per_expert" == QWEN3_30B.moe.expert_gemm
    assert framework_expert_gemm("torchtitan") == "grouped"
    assert with_expert_gemm(QWEN3_30B, "grouped").moe.expert_gemm == "grouped"
    dense = load_model("llama3-8b")
    assert with_expert_gemm(dense, "grouped") is dense
    # The framework's choice applies where the model's spec states none; a spec's own wins.
    assert with_framework_expert_gemm(QWEN3_30B, "torchtitan").moe.expert_gemm == "grouped"
    stated = QWEN3_30B.model_copy(update={"moe": QWEN3_30B.moe.model_validate(
        {**QWEN3_30B.moe.model_dump(), "expert_gemm": "per_expert"})})
    assert with_framework_expert_gemm(stated, "torchtitan").moe.expert_gemm == "per_expert"

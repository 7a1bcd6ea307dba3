"""How a run launches its expert GEMMs, and a single-kernel grouped GEMM's efficiency by the rows
each expert receives (vectorized).

Two ways to run the local experts' GEMMs (MoESpec.expert_gemm):
  - per_expert: one GEMM per local expert. Megatron-Core's TEGroupedMLP (what --moe-grouped-gemm
    selects with Transformer Engine) calls TE's GroupedLinear, whose default path loops over the
    experts launching one cuBLAS GEMM each, round-robin over 4 streams (TE v2.9 70f53666
    common/gemm/cublaslt_gemm.cu multi_stream_cublas_gemm; common/util/multi_stream.cpp
    get_num_compute_streams 4). Each is a layer GEMM of its own shape, timed as the dense GEMMs are
    (cost.gemm_shapes: K and output size, rows x N forward, rows x K data gradient, K x N weight
    gradient); where the profile has no output-size table (cost.gemm_outputs), the curve below.
  - grouped: one kernel over every expert: torchtitan's GroupedExperts (torch._grouped_mm,
    MoEArgs.use_grouped_mm True), TE's opt-in CUTLASS grouped GEMM (NVTE_USE_CUTLASS_GROUPED_GEMM,
    Hopper BF16), the CuTe-DSL fused grouped MLP of Megatron-Bridge's Blackwell MXFP8 recipes. Timed
    by the curve below.
Check against TE's own benchmark of both on H100 (NVIDIA/TransformerEngine PR #2045, yaox12's
update: TE 2.7, CUDA 12.9, tests/pytorch/test_group_gemm.py, BF16, (experts, rows, N, K)):
  (16, 2048, 768, 2048): multi-stream 553.945, CUTLASS 636.927 TFLOPS; model per_expert 456.6
    (-17.6%), grouped 692.5 (+8.7% on CUTLASS; +25.0% on the multi-stream figure);
  (8, 4096, 768, 2048): multi-stream 627.903, CUTLASS 650.574; model per_expert 592.0 (-5.7%),
    grouped 753.2 (+15.8%; +19.9%).
The per_expert timing is below the multi-stream figures because four streams overlap the small
GEMMs (no measurement of that overlap by shape was found), and well below the single-kernel curve,
which is what the per-expert path was timed by before (stop 40).

A grouped GEMM's groups share N and K and differ in M, the token copies routed to each expert.
Each group reads its own weights, so its arithmetic intensity grows with M: below the roofline
ridge the GEMM is bound by the weight reads and its throughput falls roughly in proportion to M.
The profiles' `efficiency.gemm` (and `gemm_fp8`/`gemm_mxfp8`) are large-shape figures; the curve
gives the fraction of them a grouped expert GEMM reaches at M rows per expert.

Source: deepseek-ai/DeepGEMM README.md at a9967bc27cdcead54e8d11e1736644eb51d49b33 (2025-04-09),
section "Performance", H800 SXM5, NVCC 12.8, FP8 with fine-grained scaling. The two expert shapes
measured at every M (N x K = 4096 x 7168 and 7168 x 2048), TFLOPS:
  M per group   table                              4096 x 7168   7168 x 2048
  64, 128       "Normal GEMMs for dense models"    287, 533      295, 510
  256, 512,     "Grouped GEMMs (masked layout)",   932, 1040,    815, 916,
  1024          4 / 2 / 1 groups                   1233          925
  4096, 8192    "Grouped GEMMs (contiguous         1346, 1346    1214, 1214
                layout)", 8 / 4 groups
Each shape's figures are divided by its M = 8192 grouped figure (the large-M grouped rate, which
the dense large-shape efficiency stands for) and the two shapes averaged: GROUPED_GEMM_POINTS. The
shapes differ by at most 0.08 at any M, so N is not modelled (the table has two shapes only); the
contraction length K is cost.gemm_shapes', applied on top. Between points: linear in log M.
Above 8192: 1. Below 64 (no data): proportional to M, the weight-read-bound regime the table's
small M already shows (64 -> 128 rows nearly doubles TFLOPS), with a floor of one row.

Transfer to BF16 and to other GPUs: low confidence, no BF16 grouped-GEMM table by M was found.
The roofline argument for carrying the ratios over: the ridge in M is peak / (HBM bandwidth x
bytes per weight / 2 FLOPs per weight-row): FP8 on H800 1979e12 / 3.35e12 x 1/2 = 295 rows, BF16
on H100 989e12 / 3.35e12 = 295 rows, BF16 on B200 2.25e15 / 8e12 = 281 rows, MXFP8 on B200
4.5e15 / 8e12 / 2 = 281 rows, so the same M sits at the same place on every roofline. A published
BF16 cross-check (dense torch/cuBLAS on H100, vllm-project/vllm PR 49363,
benchmarks/kernels/benchmark_fp8_gemm.py, N = 12288, K = 5376): 182.6 TFLOPS at M = 64 and 352.6
at M = 128, 0.23 and 0.44 of the H100 profile's large-shape 794.5 TFLOPS (MAMF), against 0.23
and 0.41 here.
The weight-gradient GEMM (the expert's rows become the reduction dimension) is not in the table;
it takes the same factor, as the backward is timed as 2 x the forward.
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.gemm_outputs import has_output_table
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.moe import MoEExpertGemm

# (M rows per expert, TFLOPS for N x K = 4096 x 7168, TFLOPS for 7168 x 2048): DeepGEMM README
# at a9967bc2, H800 FP8 (module docstring).
DEEPGEMM_H800_FP8_TFLOPS = (
    (64, 287.0, 295.0),
    (128, 533.0, 510.0),
    (256, 932.0, 815.0),
    (512, 1040.0, 916.0),
    (1024, 1233.0, 925.0),
    (4096, 1346.0, 1214.0),
    (8192, 1346.0, 1214.0),
)
_LARGE_M = DEEPGEMM_H800_FP8_TFLOPS[-1]
# (M, efficiency relative to large M), the two shapes averaged.
GROUPED_GEMM_POINTS = tuple(
    (m, 0.5 * (a / _LARGE_M[1] + b / _LARGE_M[2])) for m, a, b in DEEPGEMM_H800_FP8_TFLOPS
)


def grouped_gemm_efficiency_factor(rows_per_expert):
    """Fraction of the large-shape GEMM efficiency an expert GEMM of `rows_per_expert` rows
    reaches (1 for large M; module docstring for the data and the regime below 64 rows)."""
    rows = np.maximum(np.asarray(rows_per_expert, dtype=np.float64), 1.0)
    ms = np.array([p[0] for p in GROUPED_GEMM_POINTS], dtype=np.float64)
    effs = np.array([p[1] for p in GROUPED_GEMM_POINTS])
    inside = np.interp(np.log(rows), np.log(ms), effs)
    return np.where(rows < ms[0], effs[0] * rows / ms[0], inside)


def grouped_curve_times(model: ModelSpec, hardware: HardwareProfile) -> bool:
    """Whether the grouped curve times the model's expert GEMMs on `hardware`: one grouped kernel,
    or per-expert GEMMs on a profile without an output-size table (module docstring); False for a
    dense model."""
    if model.moe is None:
        return False
    return model.moe.expert_gemm == "grouped" or not has_output_table(hardware)


# The expert GEMMs of each framework sp-plan emits for (MoESpec.expert_gemm); Megatron's for the
# others and for "all": Megatron-LM's --moe-grouped-gemm on TE (per_expert); torchtitan's
# torch._grouped_mm (grouped). MindSpeed's GMM on Ascend is one kernel too, and the Ascend
# profiles, without an output-size table, time per_expert by the grouped curve anyway.
FRAMEWORK_EXPERT_GEMM: dict[str, MoEExpertGemm] = {"torchtitan": "grouped"}


def framework_expert_gemm(framework: str) -> MoEExpertGemm:
    """How `framework` runs the expert GEMMs (FRAMEWORK_EXPERT_GEMM; per_expert by default)."""
    return FRAMEWORK_EXPERT_GEMM.get(framework, "per_expert")


def with_expert_gemm(model: ModelSpec, expert_gemm: MoEExpertGemm) -> ModelSpec:
    """The model with its expert GEMMs run as `expert_gemm`; a dense model as it is."""
    if model.moe is None or model.moe.expert_gemm == expert_gemm:
        return model
    return model.model_copy(update={"moe": model.moe.model_copy(update={"expert_gemm": expert_gemm})})


def with_framework_expert_gemm(model: ModelSpec, framework: str) -> ModelSpec:
    """The model with its expert GEMMs run as `framework` runs them, unless its spec states
    expert_gemm itself (a model file's own setting wins)."""
    if model.moe is None or "expert_gemm" in model.moe.model_fields_set:
        return model
    return with_expert_gemm(model, framework_expert_gemm(framework))

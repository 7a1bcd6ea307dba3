"""FP8 / MXFP8 GEMMs as Transformer Engine runs them (vectorized over candidates' precision codes).

What runs in FP8: the four GEMMs of each decoder layer (QKV, attention out-projection, FC1, FC2),
forward and backward, through TE's Linear / LayerNormLinear under fp8_autocast. What stays bf16:
core attention (Megatron's --fp8-dot-product-attention is off by default), the embedding, the
output layer and its cross entropy (Megatron's output layer is a plain ColumnParallelLinear, not a
TE module), norms and elementwise ops, and every collective but one: with Megatron's
--fp8-param-gather the distributed optimizer gathers per-tensor FP8 weights in FP8 (cost.fp8_params).

Costs added (per layer, per micro-batch):
- GEMMs at `peak_fp8_flops` x `efficiency.gemm_fp8` (or `gemm_mxfp8`), both from the profile's
  microbenchmarks.
- Quantization (quantize_bytes_per_elem), for the inputs in the forward and the output gradients
  in the backward (an MoE layer's experts cast each routed copy of a token, mlp_input_copies);
  weights are cast once per step (is_first_microbatch caching). By recipe:
  delayed scaling (TE Float8Quantizer): one fused cast-transpose with the scale from the amax
  history, recording this tensor's amax in the same kernel (transformer_engine/common/transpose/
  cast_transpose.cu): reads bf16 (2) and writes the FP8 data (1) and, where the chip's FP8 GEMMs
  are TN only (Hopper), the FP8 transpose the backward GEMMs need (1): 4 bytes, 3 on Blackwell.
  Current scaling (Megatron --fp8-recipe tensorwise, TE Float8CurrentScalingQuantizer, v2.9
  csrc/quantizer.cpp quantize_impl): nvte_compute_amax reads the bf16 tensor first (2 more bytes),
  then nvte_compute_scale_from_amax (one scalar) and the same cast: 6 bytes, 5 on Blackwell. (TE
  fuses the amax into its own norm kernels, csrc/extensions/normalization.cpp
  FUSED_NORM_AMAX_FP8, but then the norm writes bf16 for the cast to read back instead of FP8:
  2 + 2 - 1 = 3 bytes over delayed's fused norm-cast, about the amax pass charged here.)
  MXFP8 (TE MXFP8Quantizer): one cast writing row- and column-wise FP8, each with an E8M0 scale
  per 32 elements, on every chip: 2 + 2 x (1 + 1/32) bytes. Block scaling (Megatron --fp8-recipe
  blockwise, TE Float8BlockQuantizer, Hopper only: on Blackwell TE emulates it through MXFP8, its
  gemm_profiling.rst note): one cast writing row- and column-wise FP8 with an fp32 scale per 1x128
  block (weights 128x128), 2 + 2 x (1 + 4/128) bytes; its GEMMs run below per-tensor FP8's:
  BLOCKWISE_GEMM_FACTOR. TE's GEMM benchmark bounds these:
  tests/cost/test_precision.py checks them against its autocast-minus-pre-quantized times.
- Memory: TE's FP8 weight (the weight workspace TE caches across micro-batches, or with
  --fp8-param-gather the weight itself, cost.fp8_params). Per-tensor FP8 (TE Float8Tensor): the
  data, 1 byte per GEMM parameter, and on Hopper its transpose, 1 more (TE v2.9 quantizer.cpp:
  with_transpose = columnwise_usage && !nvte_is_non_tn_fp8_gemm_supported(); Blackwell's FP8
  GEMMs take either layout, HardwareProfile.fp8_gemm_any_layout). MXFP8 (TE MXFP8Tensor, 1x32
  blocks): row- and column-wise data, each with one E8M0 scale per 32 elements, on every chip
  (the blocks run along one dimension). The GEMM inputs saved for backward are stored quantized (TE
  linear.py / layernorm_linear.py save the FP8 input for the weight-gradient GEMM): 1 byte instead
  of 2 for LN1 out, the attention output, LN2 out and the FC2 input. Delayed-scaling state (amax
  history of length 1, scale, scale_inv, fp32, for input, weight and gradient of each GEMM:
  Megatron's --fp8-amax-history-len default 1) is 4 x 3 x 3 x 4 = 144 bytes per layer.
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.kernels import sustained_fraction
from sp_planner.cost.moe import moe_layer_fraction
from sp_planner.plan import PRECISIONS
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec

# Precision codes (indices into plan.PRECISIONS), not byte widths: those are cost.dtypes'.
BF16, FP8, MXFP8 = (PRECISIONS.index(p) for p in ("bf16", "fp8", "mxfp8"))
MX_BLOCK = 32  # MXFP8: one E8M0 scale byte per 32 elements (OCP MX spec; TE MXFP8BlockScaling)
# Current scaling's separate amax pass reads the bf16 tensor once (TE v2.9 quantizer.cpp
# Float8CurrentScalingQuantizer::quantize_impl: nvte_compute_amax before nvte_quantize_v2).
AMAX_PASS_BYTES_PER_ELEM = BF16_BYTES
FP8_ELEM_BYTES = 1
SCALING_STATE_BYTES_PER_LAYER = 4 * 3 * 3 * 4  # GEMMs x tensors x (amax, scale, scale_inv) x fp32
FP8_BLOCK = 128  # block scaling: one fp32 scale per 1x128 block of an activation or gradient
FP32_SCALE_BYTES = 4
# Block scaling's cast: read bf16, write row- and column-wise FP8 with an fp32 scale per block.
BLOCK_CAST_BYTES_PER_ELEM = BF16_BYTES + 2 * (FP8_ELEM_BYTES + FP32_SCALE_BYTES / FP8_BLOCK)
# Block-scaled FP8 GEMM kernels' rate over per-tensor FP8's on Hopper, from Transformer Engine's GEMM
# benchmark on an H200 (docs/examples/gemm_profiling/gemm_profiling.rst at d0067d0, "Worked Example:
# 5B Model on H200", 12 GEMMs a layer of hidden 4096, intermediate 16384, M 15872): FP8Block runs
# only in autocast, 22.882 ms a layer, of which the casts are the 2,483,027,968 elements the benchmark
# quantizes (tests/cost/test_precision.py) x (2 + 2 x (1 + 4/128)) bytes at the H200 profile's
# memory-bound rate (0.76 x 4.8 TB/s): 2.765 ms, leaving 20.117 ms of GEMM kernels against
# per-tensor FP8's 16.785 (FP8Current, pre-quantized): 0.834.
BLOCKWISE_GEMM_FACTOR = 16.785 / (22.882 - 2_483_027_968 * BLOCK_CAST_BYTES_PER_ELEM / (0.76 * 4.8e12) * 1e3)


def _scale_overhead(precision):
    return np.where(np.asarray(precision) == MXFP8, 1.0 / MX_BLOCK, 0.0)


def fp8_weight_bytes_per_param(precision, any_layout: bool = False):
    """Bytes per GEMM parameter of TE's FP8 weight (0 for bf16): per-tensor FP8 its data, plus the
    transpose unless the chip's FP8 GEMMs take any layout (`any_layout`,
    HardwareProfile.fp8_gemm_any_layout); MXFP8 row- and column-wise data with their scales."""
    precision = np.asarray(precision)
    copies = np.where((precision == FP8) & any_layout, 1, 2)
    return np.where(precision != BF16, copies * (FP8_ELEM_BYTES + _scale_overhead(precision)), 0.0)


def quantize_bytes_per_elem(precision, fp8_current, any_layout: bool = False, fp8_blockwise=False):
    """HBM bytes per quantized element of one bf16 tensor's quantization (module docstring; 0 for
    bf16): per-tensor FP8's cast, without the transpose where the chip's FP8 GEMMs take any layout
    (`any_layout`, HardwareProfile.fp8_gemm_any_layout), plus the amax pass under current scaling
    (`fp8_current`, plan.fp8_recipe tensorwise); block scaling's row- and column-wise cast with an
    fp32 scale per 128 (`fp8_blockwise`); MXFP8's row- and column-wise cast with scales."""
    precision = np.asarray(precision)
    # A cast reads the bf16 tensor and writes TE's FP8 tensor: the bytes an FP8 weight holds.
    cast = BF16_BYTES + fp8_weight_bytes_per_param(precision, any_layout)
    block = (precision == FP8) & np.asarray(fp8_blockwise)
    cast = np.where(block, BLOCK_CAST_BYTES_PER_ELEM, cast)
    amax = np.where((precision == FP8) & np.asarray(fp8_current), AMAX_PASS_BYTES_PER_ELEM, 0)
    return np.where(precision != BF16, cast + amax, 0.0).astype(np.float64)


def mlp_input_copies(model: ModelSpec) -> float:
    """Copies of a token's hidden state that its MLP's first GEMMs take as input (and its last
    GEMMs' output gradients hold), averaged over the layers: 1 on a dense layer; on an MoE layer
    the top_k routed copies, which the experts' GroupedLinear quantizes row by row after the
    permutation (TE v2.9 70f53666 pytorch/module/grouped_linear.py line 127, tex.split_quantize
    of the permuted input; its output gradient likewise, lines 316-323), plus one for the shared
    experts' unpermuted input."""
    if model.moe is None:
        return 1.0
    copies = model.moe.top_k + (1 if model.moe.num_shared_experts else 0)
    return 1.0 + moe_layer_fraction(model) * (copies - 1)


def gemm_inputs_per_token(model: ModelSpec, ffn: float) -> float:
    """Elements of the four GEMMs' inputs per token, all TP ranks together: LN1 out (h), attention
    output (q), LN2 out (h per copy the MLP takes, mlp_input_copies), FC2 input (ffn)."""
    return model.hidden_size * (1 + mlp_input_copies(model)) + model.q_size + ffn


def gemm_output_grads_per_token(model: ModelSpec, ffn: float) -> float:
    """Elements of the four GEMMs' output gradients per token: QKV (q + 2kv), out-projection (h),
    FC1 (gate and up: (matrices - 1) x ffn), FC2 (h per copy, mlp_input_copies)."""
    return (model.q_size + 2 * model.kv_size + model.hidden_size * (1 + mlp_input_copies(model))
            + (model.num_mlp_matrices - 1) * ffn)


def routed_gemm_inputs_per_token(model: ModelSpec) -> float:
    """The routed experts' part of gemm_inputs_per_token, averaged over the layers: FC1's top_k
    copies of h and FC2's top_k x moe_ffn inputs (0 for a dense model): what a framework whose
    converter leaves the experts bf16 does not cast (cost.tp_gathers)."""
    if model.moe is None:
        return 0.0
    return moe_layer_fraction(model) * model.moe.top_k * (model.hidden_size + model.moe.moe_intermediate_size)


def routed_gemm_output_grads_per_token(model: ModelSpec) -> float:
    """The routed experts' part of gemm_output_grads_per_token: FC1's (matrices - 1) x moe_ffn and
    FC2's h, top_k copies, averaged over the layers (0 for a dense model)."""
    if model.moe is None:
        return 0.0
    widths = (model.num_mlp_matrices - 1) * model.moe.moe_intermediate_size + model.hidden_size
    return moe_layer_fraction(model) * model.moe.top_k * widths


def fp8_saving_per_element(precision):
    """Bytes a saved GEMM input element takes less in the candidate's precision than in bf16 (0 for bf16)."""
    return np.where(np.asarray(precision) != BF16, BF16_BYTES - FP8_ELEM_BYTES - _scale_overhead(precision), 0.0)


def fp8_activation_savings_per_layer(model: ModelSpec, *, tokens, tp, precision, ffn: float | None = None,
                                     routed_experts: bool = True):
    """Bytes per layer per micro-batch saved by storing the GEMM inputs in FP8 instead of bf16;
    `routed_experts` False: the routed experts' inputs (routed_gemm_inputs_per_token) stay bf16, a
    framework's converter leaving those GEMMs bf16 and uncast (cost.tp_gathers.low_precision_experts)."""
    from sp_planner.cost.flops import _active_ffn_width

    width = _active_ffn_width(model) if ffn is None else ffn
    per_elem = fp8_saving_per_element(precision)
    inputs = gemm_inputs_per_token(model, width)
    if not routed_experts:
        inputs = inputs - routed_gemm_inputs_per_token(model)
    return per_elem * tokens * inputs / tp


def gemm_peak_flops(hardware: HardwareProfile, precision, fp8_blockwise=False):
    """Sustained GEMM FLOP/s at each candidate's precision (peak x microbenchmarked efficiency);
    block-scaled FP8 (`fp8_blockwise`, Hopper only) at BLOCKWISE_GEMM_FACTOR of per-tensor FP8's."""
    precision = np.asarray(precision)
    block = (precision == FP8) & np.asarray(fp8_blockwise)
    if block.any():
        check_blockwise(hardware)
    bf16 = hardware.peak_bf16_flops * hardware.efficiency.gemm * sustained_fraction(hardware)
    if "fp8" not in hardware.precisions and "mxfp8" not in hardware.precisions:
        if (precision != BF16).any():
            raise ValueError(f"{hardware.name} has no FP8 GEMM peak/efficiency in its profile")
        return np.full(precision.shape, bf16)
    peak8 = hardware.peak_fp8_flops or 0.0
    fp8 = peak8 * (hardware.efficiency.gemm_fp8 or np.nan)
    mx = peak8 * (hardware.efficiency.gemm_mxfp8 or np.nan)
    rate = np.select([block, precision == FP8, precision == MXFP8], [fp8 * BLOCKWISE_GEMM_FACTOR, fp8, mx], bf16)
    if np.isnan(rate).any():
        raise ValueError(f"{hardware.name} cannot run a requested precision (profile: {hardware.precisions})")
    return rate


def precision_problem(precision: str, hardware: HardwareProfile) -> str | None:
    """Why `hardware` cannot run its GEMMs in `precision` ('fp8 is not available on A800: ...'), or
    None when it can: what sp-plan's --precision and a plan file's plan.precision are refused with."""
    if precision in hardware.precisions:
        return None
    why = ("MXFP8 runs on Blackwell GPUs only" if precision == "mxfp8"
           else "its profile gives no FP8 peak and FP8 GEMM efficiency" if hardware.peak_fp8_flops is None
           else "its profile gives an FP8 peak but no measured FP8 GEMM efficiency (efficiency.gemm_fp8)")
    usable = hardware.precisions
    return (f"{precision} is not available on {hardware.name}: {why}; use "
            f"{'one of ' if len(usable) > 1 else ''}{', '.join(usable)}")


def check_blockwise(hardware: HardwareProfile) -> None:
    """Block-scaled FP8 runs natively on Hopper only (TE emulates it through MXFP8 on Blackwell and
    has no kernel before Hopper); its GEMM rate is measured on an H200."""
    from sp_planner.cost.families import HOPPER_PROFILES, profile_key

    if profile_key(hardware) not in HOPPER_PROFILES:
        raise ValueError(f"FP8 block scaling (fp8_recipe blockwise) is timed on Hopper only (TE's H200 benchmark; "
                         f"Blackwell runs it emulated through MXFP8), not on {hardware.name}; use precision mxfp8 "
                         "on Blackwell, or fp8_recipe delayed or tensorwise")


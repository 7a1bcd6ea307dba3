"""FP8 primary weights: Megatron-LM's --fp8-param-gather (vectorized over candidates).

The flag ("Keep the compute param in fp8 (do not use any other intermediate dtype) and perform the
param all-gather in fp8", megatron/training/arguments.py; validate_args asserts the distributed
optimizer, torch FSDP2 or Megatron-FSDP) sets TransformerConfig.fp8_param, under which Transformer
Engine builds each GEMM weight as an FP8 tensor (TE v2.9 module/base.py reset_parameters:
quantizer.set_usage(rowwise=True, columnwise=torch.is_grad_enabled()), then quantizer(param)):
the weight is TE's FP8 weight, with no bf16 copy. The distributed optimizer's fp32 main
parameters stay as they were and are cast into the weights' shards after each step (Megatron-Core
fp8_utils.quantize_param_shard; TE tensor/utils.py cast_master_weights_to_fp8). Megatron-Bridge's
FP8 presets set it (v0.2.0 and v0.6.0 training/mixed_precision.py: bf16_with_fp8_delayed_scaling_
mixed, bf16_with_fp8_current_scaling_mixed, bf16_with_mxfp8_mixed, the last with
reuse_grad_buf_for_mxfp8_param_ag).

Modelled for FP8 and MXFP8 plans with the distributed optimizer (ZeRO-1), and for FP8 plans
(per-tensor scaling or 128x128 block scaling) under Megatron-FSDP with its parameters sharded
(ZeRO-3, optim_grads_params), where the framework's TrainingStates say it runs (cost.states:
Megatron-LM, whose flags sp-plan emits; corpus rows that state it). Megatron-FSDP (megatron-core
d98e8a6, megatron/core/distributed/fsdp/src: README.md line 136, megatron_fsdp.py lines 476-498
and 620-633): the FP8 weights are the sharded parameters (1 B a GEMM parameter over the shard
group), all-gathered per unit in FP8 and released after use like bf16 ones. The weights' buffer
is uint8 (param_and_grad_buffer.py lines 2631-2632) holding the row-wise data only
(mixed_precision.py fp8_get_raw_data, `_rowwise_data` or `_data`); only MXFP8 adds a column-wise
buffer (fp8_need_transpose_data, lines 2634-2643), so block-scaled weights move 1 B a parameter as
per-tensor ones do. Their fp32 scales (one per 128x128 block, 4/16384 B a parameter) are not
gathered: every rank holds them whole, each step's block amaxes all-reduced over the shard group
(TE d0067d0 tensor/utils.py _cast_master_weights_to_fp8_blockwise_scaling), a term under 0.03% of
the weights' bytes and not counted. On Hopper each gathered weight holds its transpose too
(per-tensor: TE's `_transpose`; block scaling: the column-wise copy, tex.fp8_transpose of the
row-wise data, float8_blockwise_tensor_storage.py _create_columnwise), built twice a micro-batch:
in forward by TE's quantize_weight (module/base.py, update_usage with the column-wise usage
reset_parameters set for training; float8_tensor_storage.py update_usage builds the transpose,
float8_blockwise_tensor_storage.py the column-wise copy), which Megatron-FSDP drops after the
forward (release_module_parameters -> fp8_discard_transpose_cache), and after the backward's
gather (fp8_create_transpose_cache, `if bwd`; TE post_all_gather_processing), dropped after use
(keep_fp8_transpose_cache, default False, "will cause (number of parameter x 1 Byte) of memory
overhead" when set, "but can skip the weight transpose operation in the backward"). TE caches no
whole copy. MXFP8 parameters under Megatron-FSDP (which gathers their row-wise data in forward and
their column-wise buffer in backward, 1 B each), and ZeRO-2 (optim_grads, parameters not sharded),
are not modelled: sp-plan emits no --fp8-param-gather there, and those plans run bf16 weights
with TE's cast.

ZeRO-3 without reshard after forward is torch FSDP2 under Megatron (--use-torch-fsdp2,
flags.megatron_fsdp), which with Transformer Engine >= 2.0 turns --fp8-param-gather off and gathers
bf16 weights (megatron/training/arguments.py at d98e8a6 lines 1051-1056): those plans run bf16
weights (fp8_weights_modelled), gathered at 2 B a parameter and kept whole in bf16 from forward to
backward, as a bf16 plan's. TE's linears under FSDP2 (TE d0067d0, from v2.16, 0a088c1d5 "Fix FSDP2
memory leaks for FP8 weight workspaces", module/linear.py) keep no FP8 weight across micro-batches
(cache_name None when is_fsdp2, line 1958, whatever Megatron's is_first_microbatch says), so each
micro-batch's forward casts the gathered bf16 weight row-wise only (columnwise_usage `not is_fsdp2`,
line 467; the FP8 copy is not saved, line 644) and the backward casts it again in both layouts
(set_usage(rowwise=True, columnwise=True), lines 1030-1031) and drops the column-wise data after the
dgrad GEMM (clear_columnwise_cache, line 1108). Under full recompute Megatron runs te_checkpoint
(megatron/core/recompute.py at d98e8a6 line 134), whose first forward asks the column-wise layout
too (is_fp8_activation_recompute_enabled, line 472) and whose recomputed forward casts row-wise
again (torch_fsdp2_cast_bytes_per_param). Those casts are one layer's weights at a time and hold no
whole FP8 copy (cost.stage_states); the layer's transient FP8 copy is not counted.

Per GEMM parameter (megatron-core as Megatron-Bridge v0.2.0 and v0.6.0 pin it, 0d8e0714 and
cd4afffa, distributed/param_and_grad_buffer.py):
- memory: TE's FP8 weight, the bytes cost.precision.fp8_weight_bytes_per_param counts for TE's
  weight copies, and no bf16 weight (2 B less). Per-tensor FP8 weights' data is the distributed
  optimizer's uint8 parameter buffer (FP8 parameters get param_dtype torch.uint8, and
  modify_underlying_storage points their data at it); MXFP8 weights' buffer shares the gradient
  buffer (shared_buffer in the gradient dtype, param_data a bf16 view of its first half), so it
  adds nothing.
- the parameter all-gather after the step: per-tensor FP8 in its uint8 buffer, 1 B; MXFP8 in
  bf16 through the shared buffer, 2 B, copied into the MXFP8 weights after the gather
  (param.data.copy_ of each slice, which quantizes). Non-GEMM parameters (embedding, output layer,
  norms) stay in bf16 buffers; MoE routers are counted with the GEMM weights (h x E a layer, under
  0.1% of a MoE layer).
- the once-a-step weight cast (cost.step; with bf16 weights the quantization of
  cost.precision.quantize_bytes_per_elem, by recipe and chip): per-tensor FP8 on Hopper rebuilds
  the transpose from the gathered data (the cast resets the caches, TE tensor/utils.py
  _cast_master_weights_to_fp8_*_scaling model_weight._reset_caches(); the forward's update_usage
  creates the transpose): read 1, write 1; nothing on Blackwell, which keeps no transpose; MXFP8
  quantizes the gathered bf16 weights, read 2, write 2 (+ scales), as the bf16 case. The
  optimizer's cast of its own shard is 1/Z of that and not counted. Under Megatron-FSDP the
  transpose is rebuilt twice a micro-batch, in forward and in backward (above).
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.fsdp import reshard_after_forward
from sp_planner.cost.kernels import memory_pass_time_s
from sp_planner.cost.moe_params import expert_params_per_rank
from sp_planner.cost.params import layer_params_per_rank
from sp_planner.cost.precision import (
    AMAX_PASS_BYTES_PER_ELEM,
    BF16,
    FP8,
    FP8_ELEM_BYTES,
    MXFP8,
    quantize_bytes_per_elem,
)
from sp_planner.cost.states import TrainingStates
from sp_planner.cost.tp_gathers import TE_TP_GATHERS, TpGathers, fp8_weight_cast_bytes
from sp_planner.plan import RECOMPUTE_FULL
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec

# Per GEMM parameter, weight cast per step with FP8 weights: per-tensor FP8 on Hopper reads the
# data and writes its transpose (module docstring).
TRANSPOSE_REBUILD_BYTES_PER_ELEM = 2 * FP8_ELEM_BYTES
# Megatron-FSDP's FP8 weights rebuild it in each pass that gathers them, forward and backward
# (module docstring: TE quantize_weight's update_usage, then fp8_create_transpose_cache).
FSDP_TRANSPOSE_REBUILDS_PER_MICRO_BATCH = 2


def fp8_weights_modelled(precision, zero, reshard):
    """The plans whose GEMM weights can be FP8 under --fp8-param-gather (module docstring): FP8 or
    MXFP8 with the distributed optimizer (ZeRO-1), or FP8 (per-tensor or block scaling) under
    Megatron-FSDP with sharded parameters (ZeRO-3 resharding after forward, `reshard`). ZeRO-3
    keeping the parameters is torch FSDP2 under Megatron (--use-torch-fsdp2), which turns
    --fp8-param-gather off with Transformer Engine >= 2.0 and gathers bf16 weights (arguments.py at
    d98e8a6 lines 1051-1056; torch_fsdp2_casts). The cost model, sp-plan's flags and the corpus
    rows ask this."""
    precision, zero = np.asarray(precision), np.asarray(zero)
    resharded = np.asarray(reshard, dtype=bool)
    return ((precision != BF16) & (zero == 1)) | ((precision == FP8) & (zero == 3) & resharded)


def fp8_params_active(states: TrainingStates, precision, zero, reshard):
    """The candidates whose GEMM weights are FP8: the framework runs --fp8-param-gather on a plan
    fp8_weights_modelled allows."""
    return states.fp8_param_gather & fp8_weights_modelled(precision, zero, reshard)


def sharded_fp8_params(states: TrainingStates, precision, zero, reshard):
    """The candidates whose FP8 GEMM weights are Megatron-FSDP's sharded parameters (ZeRO-3)."""
    return fp8_params_active(states, precision, zero, reshard) & (np.asarray(zero) == 3)


def torch_fsdp2_casts(states: TrainingStates, precision, zero, reshard):
    """The low-precision candidates whose Transformer Engine linears run under torch FSDP2 (ZeRO-3
    without reshard after forward where the framework runs it so, states.zero3_keep_is_torch_fsdp2):
    bf16 weights gathered at 2 B, cast to FP8 in every forward and backward (module docstring,
    torch_fsdp2_cast_bytes_per_param)."""
    keep = (np.asarray(zero) == 3) & ~np.asarray(reshard, dtype=bool)
    return states.zero3_keep_is_torch_fsdp2 & (np.asarray(precision) != BF16) & keep


def gather_bytes_per_gemm_param(states: TrainingStates, precision, zero, reshard):
    """Bytes a GEMM parameter moves in the parameter all-gather: 1 for FP8 weights (per-tensor or
    block-scaled: their row-wise data, module docstring), else the framework's gathered width
    (MXFP8 weights are gathered in bf16)."""
    fp8 = fp8_params_active(states, precision, zero, reshard) & (np.asarray(precision) == FP8)
    return np.where(fp8, FP8_ELEM_BYTES, states.compute_param_bytes)


def dense_gemm_params(model: ModelSpec, tp, ep, etp, layers):
    """GEMM parameters among a stage's non-expert parameters: its layers' less their norms and
    routed experts (the embedding, output layer and final norm are not GEMM weights TE holds)."""
    per_layer = layer_params_per_rank(model, tp, ep, etp) - expert_params_per_rank(model, 1, ep, etp, layers=1)
    return layers * (per_layer - model.norm_params_per_layer)


def gathered_bytes(states: TrainingStates, precision, zero, reshard, params, gemm_params):
    """Bytes of `params` parameters, `gemm_params` of them GEMM weights, in the parameter
    all-gather."""
    saved = states.compute_param_bytes - gather_bytes_per_gemm_param(states, precision, zero, reshard)
    return states.compute_param_bytes * params - saved * gemm_params


def unit_gather_width(states: TrainingStates, precision, zero, reshard, params, gemm_params):
    """Bytes a parameter of a gathered unit of `params` parameters, `gemm_params` of them GEMM
    weights, moves on average (gathered_bytes over params; 0 where the unit is empty)."""
    params = np.asarray(params, dtype=np.float64)
    return np.where(params > 0, gathered_bytes(states, precision, zero, reshard, params, gemm_params)
                    / np.maximum(params, 1), 0.0)


def weight_cast_bytes_per_param(states: TrainingStates, precision, zero, reshard, any_layout: bool,
                                fp8_current=False, fp8_blockwise=False):
    """HBM bytes per GEMM parameter of the weights' once-a-step cast (module docstring); 0 for bf16.
    `fp8_current`: per-tensor FP8 with current scaling (plan.fp8_recipe tensorwise); `fp8_blockwise`:
    block scaling (plan.fp8_recipe blockwise)."""
    precision = np.asarray(precision)
    fp8_weights = np.where((precision == FP8) & any_layout, 0, TRANSPOSE_REBUILD_BYTES_PER_ELEM)
    cast = np.where(fp8_params_active(states, precision, zero, reshard) & (precision == FP8), fp8_weights,
                    quantize_bytes_per_elem(precision, fp8_current, any_layout, fp8_blockwise))
    return np.where(precision != BF16, cast, 0)


def torch_fsdp2_cast_bytes_per_param(precision, recompute, any_layout: bool, fp8_current=False,
                                     fp8_blockwise=False):
    """HBM bytes per GEMM parameter a micro-batch of TE's casts of a torch-FSDP2-gathered bf16
    weight (module docstring): the forward's row-wise cast (read 2, write one layout) and the
    backward's cast in both layouts (cost.precision.quantize_bytes_per_elem); under full recompute
    (te_checkpoint) the first forward casts both layouts and the recomputed forward row-wise."""
    precision = np.asarray(precision)
    both = quantize_bytes_per_elem(precision, fp8_current, any_layout, fp8_blockwise)
    amax = np.where((precision == FP8) & np.asarray(fp8_current, dtype=bool), AMAX_PASS_BYTES_PER_ELEM, 0)
    # Per-tensor FP8 on a chip whose FP8 GEMMs take any layout keeps one layout; others write two.
    layouts = np.where((precision == FP8) & ~np.asarray(fp8_blockwise, dtype=bool) & any_layout, 1, 2)
    rowwise = BF16_BYTES + (both - amax - BF16_BYTES) / layouts + amax
    full = np.asarray(recompute) == RECOMPUTE_FULL
    return np.where(precision != BF16, rowwise + both + np.where(full, both, 0.0), 0.0)


def cast_gemm_params_per_layer(model: ModelSpec, gathers: TpGathers, *, tp, ep, etp):
    """GEMM weights of the average layer on a rank that the framework's linears cast in low
    precision: all but the norms, less the routed experts' where its converter leaves them bf16
    (gathers.low_precision_experts False, cost.tp_gathers)."""
    gemm_params = layer_params_per_rank(model, tp, ep, etp) - model.norm_params_per_layer
    if not gathers.low_precision_experts:
        gemm_params = gemm_params - expert_params_per_rank(model, 1, ep, etp, layers=1)
    return gemm_params


def weight_cast_s(hardware: HardwareProfile, model: ModelSpec, states: TrainingStates, c, layers, micro_batches,
                  gathers: TpGathers = TE_TP_GATHERS):
    """Seconds a step spends casting the GEMM weights of `layers` layers on a rank (TE's
    is_first_microbatch caching: once a step; Megatron-FSDP's FP8 parameters: their transpose twice
    a micro-batch, FSDP_TRANSPOSE_REBUILDS_PER_MICRO_BATCH; torch FSDP2's bf16 weights: forward and
    backward casts every micro-batch, torch_fsdp2_cast_bytes_per_param; weight_cast_bytes_per_param by recipe;
    0 for bf16), for candidates `c` or one ParallelPlan. The analytic step (cost.step) and the
    simulator both take it here. `gathers`: the
    framework's linears (cost.tp_gathers): torchao's cast every micro-batch (caches_weight_casts
    False), per-tensor FP8's at the compiled forward's and backward's casts together
    (cost.tp_gathers.fp8_weight_cast_bytes, by TP degree and recompute; docs/cost-model.md stops 47
    and 48), MXFP8's at its two one-layout
    casts (gathers.mxfp8_weight_cast_bytes), others at TE's bytes, and leave
    the routed experts' weights bf16 (low_precision_experts False)."""
    reshard = reshard_after_forward(c)
    per_param = weight_cast_bytes_per_param(states, c.precision, c.zero, reshard, hardware.fp8_gemm_any_layout,
                                            c.fp8_current, c.fp8_blockwise)
    torchao_bytes = fp8_weight_cast_bytes(gathers, tp=c.tp, recompute=c.recompute)
    if torchao_bytes is not None:
        # Compiled torchao float8: the forward's cast and the backward's cast again from the bf16
        # weight a micro-batch, once where the forward's FP8 shard is kept (tp > 1, nothing
        # recomputed), a third time after full recompute's second amax pass (cost.tp_gathers, traced).
        torchao = (np.asarray(c.precision) == FP8) & ~np.asarray(c.fp8_blockwise, dtype=bool)
        per_param = np.where(torchao, torchao_bytes, per_param)
    if gathers.mxfp8_weight_cast_bytes is not None:
        # torchao's MX linears: one cast a layout, forward and backward (cost.tp_gathers).
        per_param = np.where(np.asarray(c.precision) == MXFP8, gathers.mxfp8_weight_cast_bytes, per_param)
    # TE's linears under torch FSDP2 cache no FP8 weight: forward and backward casts every
    # micro-batch (module docstring).
    fsdp2 = torch_fsdp2_casts(states, c.precision, c.zero, reshard) & gathers.caches_weight_casts
    per_param = np.where(fsdp2, torch_fsdp2_cast_bytes_per_param(
        c.precision, c.recompute, hardware.fp8_gemm_any_layout, c.fp8_current, c.fp8_blockwise), per_param)
    sharded = sharded_fp8_params(states, c.precision, c.zero, reshard)
    every_micro_batch = sharded | fsdp2 | (not gathers.caches_weight_casts)
    casts = np.where(every_micro_batch, micro_batches, 1)
    # Megatron-FSDP's FP8 weights: the forward's transpose is dropped with the gathered unit and
    # built again after the backward's gather (module docstring).
    casts = np.where(sharded, FSDP_TRANSPOSE_REBUILDS_PER_MICRO_BATCH * micro_batches, casts)
    gemm_params = cast_gemm_params_per_layer(model, gathers, tp=c.tp, ep=c.ep, etp=c.etp)
    return np.where(np.asarray(c.precision) != BF16, casts * memory_pass_time_s(
        hardware, per_param * layers * gemm_params), 0.0)

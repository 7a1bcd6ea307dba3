"""A layer's GEMM-side work on one rank per micro-batch (vectorized): what the analytic step
(cost.step) and the simulator's step work (sim.step_work) both time as "GEMMs".

- The layer's GEMMs at the plan's precision (cost.precision), forward 2 x params-per-token FLOPs on
  the rank's tokens over tp; backward 2 x forward (Narayanan et al. 2021), each slowed where it
  contracts over a short K (cost.gemm_shapes; the backward's extra over 2 x forward).
- FP8's casts (cost.precision): the GEMM inputs forward, the output gradients backward; the
  backward reuses the forward's quantized inputs (Transformer Engine saves them). Where the
  framework gathers bf16 and casts after (cost.tp_gathers), the gathered tensors are cast whole.
  Where its converter leaves the routed experts bf16 (torchtitan's, cost.tp_gathers), their GEMMs
  run at the bf16 rate, with bf16's K and output-size ratios (cost.gemm_shapes.routed_expert_slowdowns),
  and their inputs and gradients are not cast.
- The memory-bound ops between the GEMMs (elementwise_bytes_per_token), forward with the GEMMs and
  twice in backward, at the profile's memory-bound rate; split over the TP ranks, or, for a run
  without sequence parallelism, the norms and residual adds on all of each rank's tokens.
- DeepSeek Sparse Attention's unfused RoPE (cost.rope.unfused_rope_bytes_per_token), forward and
  backward each on its own.
- The hidden dropouts' passes where the model has them (cost.dropout: the mask forward, a kernel of
  their own backward), in the region the residual adds run in.
- Where the framework unpads around the attention kernel (llm-foundry's attn_impl flash,
  cost.unpad_passes), those gathers and scatters, forward and backward each on their own.
- FP8 current scaling's amax all-reduces over the TP group (cost.amax_reduce), forward and backward,
  where the group gathers the quantized tensors.
- Per-tensor FP8 on Hopper with sequence parallelism: the backward's FP8 transposes of the tensors
  the TP group gathers (cost.gathered_transpose).
- The MoE router's gating GEMM (cost.router), bf16 whatever the plan's precision; its backward on
  TF32 tensor cores with fp32 casts where the run sets Megatron's --moe-router-dtype fp32.
- The logits GEMMs (forward + 2 x backward, bf16) and the vocab-parallel cross entropy
  (LOSS_BYTES_PER_LOGIT a logit), on the loss stage.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.cost.activations import sequence_parallel_region_tokens
from sp_planner.cost.amax_reduce import amax_reduction_s
from sp_planner.cost.axiswise_amax import axiswise_amax_reduction_s
from sp_planner.cost.dropout import hidden_dropout_bytes_per_token
from sp_planner.cost.attention_comm import kv_heads_per_tp_rank
from sp_planner.cost.flops import (
    _active_ffn_width,
    layer_gemm_flops_per_token,
    logits_gemm_flops_per_token,
    mla_down_proj_flops_per_token,
)
from sp_planner.cost.gathered_transpose import cast_after_gather_elements, gathered_transpose_s
from sp_planner.cost.moe import routed_gemm_flops_per_token
from sp_planner.cost.tp_gathers import TE_TP_GATHERS, TpGathers, expert_precision
from sp_planner.cost.gemm_shapes import layer_gemm_slowdowns, routed_expert_slowdowns
from sp_planner.cost.kernels import gemm_time_s, memory_pass_time_s
from sp_planner.cost.precision import (
    BF16,
    gemm_inputs_per_token,
    gemm_output_grads_per_token,
    gemm_peak_flops,
    quantize_bytes_per_elem,
    routed_gemm_inputs_per_token,
    routed_gemm_output_grads_per_token,
)
from sp_planner.cost.qk_norm import qk_norm_bytes_per_token
from sp_planner.cost.router import router_times_s
from sp_planner.cost.rope import rope_elements_per_token, unfused_rope_bytes_per_token
from sp_planner.cost.unpad_passes import unpad_bytes_per_token
from sp_planner.distinct import per_distinct
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec

# Memory-bound ops between the GEMMs, per token of one layer, forward (bf16): two RMSNorms
# (read + write h: 8h), two residual adds (read 2h, write h: 12h), RoPE on q and k where the model
# has it (read + write: 4(q + kv); MLA's own kernels; the mean over RoPE and NoPE layers; DSA's
# unfused RoPE is timed each way on its own: cost.rope),
# SwiGLU/GeLU (read 2ffn or ffn, write ffn), the QK norm where the model has one (cost.qk_norm).
# Backward reads the saved input and the incoming gradient and writes a gradient: twice the
# forward traffic (counted by timing these with the forward GEMMs, which the layer total
# multiplies by 3).
# Vocab-parallel cross entropy per logit: forward float() (2+4), max (4), subtract, exp, divide in
# place (3 x 8), sum (4); backward subtract one-hot and scale in place (2 x 8), cast to bf16 (6).
LOSS_BYTES_PER_LOGIT = 60

# Rows from which gemm_work prices its GEMM shape slowdowns once per distinct shape (distinct.per_distinct).
SHAPE_MIN_ROWS = 64


def elementwise_bytes_per_token(model: ModelSpec) -> float:
    """Forward HBM traffic of one layer's memory-bound ops for one token (all TP ranks together)."""
    h, ffn = model.hidden_size, _active_ffn_width(model)
    activation_inputs = model.num_mlp_matrices - 1  # gate and up for SwiGLU, one for GeLU
    elements = 4 * h + 6 * h + rope_elements_per_token(model) + (activation_inputs + 1) * ffn
    return float(2 * elements) + qk_norm_bytes_per_token(model)


def sequence_region_bytes_per_token(model: ModelSpec) -> float:
    """The part of elementwise_bytes_per_token outside the tensor-parallel region: the two norms and
    the two residual adds on the hidden state (2 x (4h + 6h) bytes). Megatron's sequence
    parallelism splits them over the TP ranks by tokens; without it every TP rank runs them on all
    of its tokens (Korthikanti et al. 2022, arXiv 2205.05198, section 4.2 and Table 2: tensor
    parallelism alone leaves the layer-norm and dropout regions replicated on every TP rank,
    sequence parallelism splits them)."""
    return float(2 * 10 * model.hidden_size)


class GemmWork(NamedTuple):
    """Seconds per layer (logits: per loss stage) and micro-batch on one rank, per candidate."""

    fwd_s: np.ndarray  # GEMMs, the inputs' FP8 casts and amax all-reduces, the memory-bound ops, `extra_fwd_s`
    bwd_s: np.ndarray  # twice that without the casts, the short-K extra, the gradients' casts and all-reduces,
    # the gathered FP8 tensors' transposes
    gemm_only_s: np.ndarray  # the forward GEMMs alone (what TP userbuffers hide behind)
    logits_s: np.ndarray  # logits GEMMs forward and backward, and the cross entropy


def gemm_work(model: ModelSpec, hardware: HardwareProfile, *, seq_len: int, tp, micro_batch, cp, ep, etp,
              precision, fp8_current, gpus_per_node: int, extra_fwd_s=0.0,
              loss_bytes_per_logit: int = LOSS_BYTES_PER_LOGIT, fp8_blockwise=False,
              sequence_parallel: bool = True, tp_gathers: TpGathers = TE_TP_GATHERS,
              unpads_attention: bool = False, moe_router_dtype: str | None = None) -> GemmWork:
    """The layer's GEMM-side work (module docstring); `precision` codes as plan.PRECISIONS,
    `extra_fwd_s`: forward GEMM time beyond the layer's mean (the busiest EP rank's expert GEMMs,
    cost.moe), backward twice it; `loss_bytes_per_logit`: the cross entropy's HBM traffic
    (Megatron's unfused loss by default; cost.loss_memory for TE's fused one); `fp8_blockwise`:
    FP8 with block scaling (cost.precision); `gpus_per_node`: where the TP group's amax all-reduces
    run (cost.amax_reduce); `sequence_parallel` False: TP without Megatron's sequence parallelism,
    its norms and residual adds on every token of each TP rank (sequence_region_bytes_per_token);
    `tp_gathers`: the recipes whose TP all-gathers the framework moves in low precision
    (cost.tp_gathers), whose gathered FP8 tensors the weight gradients transpose; `unpads_attention`:
    the framework unpads q, k, v and pads the output around the attention kernel (cost.unpad_passes);
    `moe_router_dtype`: Megatron's --moe-router-dtype (None or "fp32", cost.router)."""
    tokens = micro_batch * seq_len / cp  # per rank in the sequence-sharded regions
    gemm_rate = gemm_peak_flops(hardware, precision, fp8_blockwise)
    # KV heads replicated where tp exceeds them (Megatron copies one per rank, cost.attention_comm):
    # a rank's QKV GEMM computes its max(G/tp, 1) heads' K and V, more than the kv/tp a split gives.
    kv_heads = kv_heads_per_tp_rank(model.num_kv_heads, np.asarray(tp))
    kv_extra = 0.0 if model.mla is not None else (
        2 * model.hidden_size * 2 * model.head_dim * (kv_heads - model.num_kv_heads / np.asarray(tp)))
    gemm_flat = np.asarray((layer_gemm_flops_per_token(model) / tp + kv_extra) * tokens) / gemm_rate
    # MLA's down projections on the whole gathered input where the framework runs them so
    # (torchtitan, TpGathers.whole_mla_down_projections): the (1 - 1/tp) the split took off, back,
    # at the flat rate (the shape slowdowns below weigh the rank's split GEMMs, not these whole ones).
    whole_down_flat = (mla_down_proj_flops_per_token(model) * (1 - 1 / np.asarray(tp)) * tokens / gemm_rate
                       if tp_gathers.whole_mla_down_projections else 0.0)
    # Routed experts the framework's converter leaves bf16 (torchtitan's, cost.tp_gathers) at the bf16 rate.
    experts_rate = gemm_peak_flops(hardware, expert_precision(precision, tp_gathers), fp8_blockwise)
    routed = routed_gemm_flops_per_token(model) * tokens / np.asarray(tp)
    gemm_flat = np.where(experts_rate != gemm_rate, gemm_flat + routed * (1 / experts_rate - 1 / gemm_rate), gemm_flat)
    # Once per distinct (tp, micro batch, cp, ep, etp, low precision) of the chunk, spread back (a few
    # dozen of ~10^5 rows; a few hundred of the few thousand distinct rows cost.layer_times prices
    # in an MoE search: worth it from SHAPE_MIN_ROWS rows, the slowdowns take hundreds of numpy
    # calls). FP8/MXFP8 GEMMs take their own shape ratios (cost.gemm_shapes, cost.gemm_outputs).
    low = (np.asarray(precision) != BF16).astype(np.int64)
    distinct = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v)) for v in (tp, micro_batch, cp, ep, etp, low)))

    def per_shape(slowdowns, fp8=True):
        """cost.gemm_shapes' `slowdowns` per distinct shape, with FP8's ratios where the row runs low
        precision (and `fp8`)."""
        return per_distinct(lambda tp_, b_, cp_, ep_, etp_, low_: slowdowns(
            hardware, model, tp=tp_, tokens=b_ * seq_len / cp_, ep=ep_, etp=etp_, fp8=fp8 & (low_ != 0)), *distinct,
            min_rows=SHAPE_MIN_ROWS)

    slow_fwd, slow_bwd = per_shape(layer_gemm_slowdowns)
    if routed_gemm_flops_per_token(model) > 0 and not tp_gathers.low_precision_experts:
        # bf16 routed experts beside FP8 GEMMs (torchtitan, cost.tp_gathers) take bf16's shape ratios:
        # the other GEMMs keep the FP8 factor less the experts' FP8 terms, over their share, each
        # part timed on its own flat time; as one factor over gemm_flat for the backward below.
        share, low_fwd, low_bwd = per_shape(routed_expert_slowdowns)
        _, bf16_fwd, bf16_bwd = per_shape(routed_expert_slowdowns, fp8=False)
        routed_flat = routed / experts_rate
        others_flat = gemm_flat - routed_flat

        def mixed(slow, low_term, bf16_term):
            return np.where(low != 0, (others_flat * (slow - low_term) / (1 - share) + routed_flat * bf16_term / share)
                            / gemm_flat, slow)
        slow_fwd, slow_bwd = mixed(slow_fwd, low_fwd, bf16_fwd), mixed(slow_bwd, low_bwd, bf16_bwd)
    gemm_only = gemm_flat * slow_fwd + whole_down_flat
    ffn = _active_ffn_width(model)
    # Quantizing the GEMM inputs (forward) and output gradients (backward) by recipe (0 for bf16).
    quant = quantize_bytes_per_elem(precision, fp8_current, hardware.fp8_gemm_any_layout, fp8_blockwise)
    # A framework that gathers bf16 and casts after casts the gathered tensors whole (cost.tp_gathers).
    after_fwd, after_bwd = cast_after_gather_elements(model, tokens=tokens, tp=tp, precision=precision,
                                                      gathers=tp_gathers, sequence_parallel=sequence_parallel)
    inputs, grads = gemm_inputs_per_token(model, ffn), gemm_output_grads_per_token(model, ffn)
    if not tp_gathers.low_precision_experts:  # bf16 routed experts cast nothing (cost.tp_gathers)
        inputs, grads = inputs - routed_gemm_inputs_per_token(model), grads - routed_gemm_output_grads_per_token(model)
    cast_fwd = memory_pass_time_s(hardware, quant * (inputs * tokens / tp + after_fwd))
    cast_bwd = memory_pass_time_s(hardware, quant * (grads * tokens / tp + after_bwd))
    fwd = gemm_only + cast_fwd
    logits = gemm_time_s(hardware, 3 * logits_gemm_flops_per_token(model) * tokens / tp)
    logits = logits + memory_pass_time_s(hardware, loss_bytes_per_logit * tokens * model.vocab_size / tp)
    # Elementwise work rides with the GEMMs (recomputed with them under full recompute).
    elementwise = elementwise_bytes_per_token(model) * tokens / tp
    if not sequence_parallel:
        elementwise = elementwise + sequence_region_bytes_per_token(model) * tokens * (1 - 1 / np.asarray(tp))
    fwd = fwd + memory_pass_time_s(hardware, elementwise)
    fwd = fwd + extra_fwd_s
    # Backward: twice the forward's GEMMs and elementwise work (its extra over 2x for short K), and
    # of FP8's casts only the output gradients': TE saves the forward's quantized inputs (row- and
    # column-wise) for the weight gradient and caches the weights' transposes (cost.precision).
    bwd = 2 * (fwd - cast_fwd) + 2 * gemm_flat * (slow_bwd - slow_fwd) + cast_bwd
    # The MoE router's gating GEMM, bf16 whatever the precision (its backward TF32 with fp32 casts
    # under --moe-router-dtype fp32), each way on its own (cost.router).
    router_fwd, router_bwd = router_times_s(hardware, model, tokens / np.asarray(tp), moe_router_dtype)
    fwd, bwd = fwd + router_fwd, bwd + router_bwd
    # Current scaling's amax all-reduces, each way on its own (not twice the forward's).
    amax_fwd, amax_bwd = amax_reduction_s(model, tp=tp, precision=precision, fp8_current=fp8_current,
                                          gpus_per_node=gpus_per_node, gathers=tp_gathers)
    fwd, bwd = fwd + amax_fwd, bwd + amax_bwd
    # Rowwise float8's amax vectors, all-reduced where a cast runs along a TP-sharded dimension.
    vec_fwd, vec_bwd = axiswise_amax_reduction_s(model, hardware, tokens=tokens, tp=tp, precision=precision,
                                                 gpus_per_node=gpus_per_node, gathers=tp_gathers,
                                                 fp8_blockwise=fp8_blockwise)
    fwd, bwd = fwd + vec_fwd, bwd + vec_bwd
    # The hidden dropouts beyond the residual adds, each way on its own (cost.dropout), on the
    # hidden state's tokens: split over tp with sequence parallelism, whole on each rank without.
    drop_fwd, drop_bwd = hidden_dropout_bytes_per_token(model)
    region_tokens = sequence_parallel_region_tokens(tokens, tp, sequence_parallel)
    fwd = fwd + memory_pass_time_s(hardware, drop_fwd * region_tokens)
    bwd = bwd + memory_pass_time_s(hardware, drop_bwd * region_tokens)
    # Unfused RoPE (DSA's, cost.rope), each way on its own, on the rank's heads; in the forward, so
    # full recompute runs it again. The fused kernels are elementwise_bytes_per_token's.
    rope_fwd, rope_bwd = unfused_rope_bytes_per_token(model)
    if rope_fwd:
        fwd = fwd + memory_pass_time_s(hardware, rope_fwd * tokens / np.asarray(tp))
        bwd = bwd + memory_pass_time_s(hardware, rope_bwd * tokens / np.asarray(tp))
    if unpads_attention:
        # llm-foundry's unpad and pad passes, each way on its own, on the rank's heads (split over tp;
        # cost.unpad_passes); in the forward, so full recompute runs them again.
        unpad_fwd, unpad_bwd = unpad_bytes_per_token(model)
        fwd = fwd + memory_pass_time_s(hardware, unpad_fwd * tokens / np.asarray(tp))
        bwd = bwd + memory_pass_time_s(hardware, unpad_bwd * tokens / np.asarray(tp))
    # The gathered FP8 tensors' transposes for the weight gradients (Hopper, per-tensor FP8 gathered, SP).
    bwd = bwd + gathered_transpose_s(model, hardware, tokens=tokens, tp=tp, precision=precision, gathers=tp_gathers,
                                     fp8_blockwise=fp8_blockwise, sequence_parallel=sequence_parallel)
    return GemmWork(fwd_s=fwd, bwd_s=bwd, gemm_only_s=gemm_only, logits_s=np.broadcast_to(logits, np.shape(fwd)))

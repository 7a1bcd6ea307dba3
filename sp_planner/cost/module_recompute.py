"""Megatron's output-discarding module recompute of MoE layers (plan recompute "moe_act" and
"moe_act+layernorm"): what it frees, keeps and re-runs.

Megatron-LM at d98e8a64 (megatron/core/transformer/), --recompute-granularity selective
--recompute-modules moe_act [layernorm]. Both modules use tensor_parallel.CheckpointWithoutOutput
(transformer_config.py lines 579-581): the module runs under no_grad, its inputs are saved, and
once its consumer has run the output's storage is released (discard_output_and_register_recompute)
and rebuilt by a hook when the consumer's gradient arrives.
  moe_act (moe/experts.py lines 269-276, 1019-1030): TEGroupedMLP's activation (SwiGLU or GeLU,
    times the routing probabilities) on each routed copy. Freed: its output, linear_fc2's input,
    one moe_ffn-wide bf16 tensor per routed copy on the busiest EP rank (cost.moe, as
    cost.activations counts it); kept: fc1's output, which the activation's backward needs either
    way. Under FP8 linear_fc2 saves the original (discarded) input, not its FP8 cast
    (set_save_original_input, lines 273-276), so FP8 saves nothing more on it. The probabilities'
    product's own saved input is freed too; cost.activations counts neither it nor the weighted
    activation kernels' internals, so they cancel.
  layernorm (transformer_layer.py lines 475-531, 695-732, 818-832): the input_layernorm and
    pre_mlp_layernorm where they are modules of their own, not IdentityOp: with the Transformer
    Engine spec (models/gpt/gpt_layer_specs.py lines 294-338) the input norm is fused into the QKV
    linear (TELayerNormColumnParallelLinear) except with MLA, whose input_layernorm is a TENorm,
    and the pre-MLP norm is a TENorm on MoE layers only (dense layers fuse it into fc1). Freed: the
    norm's output (LN1 out / LN2 out of cost.activations, h wide in the sequence-parallel region);
    kept: its input, the residual. Under FP8 the linears it feeds save the original input, so the
    FP8 saving on it goes too: MLA's down-projections (set_for_recompute_input_layernorm, line
    479) and the shared experts' fc1 (moe_layer.py lines 743-750); the routed experts take the
    permuted copies, unchanged. Megatron drops the pre-MLP part with the router CUDA-graphed
    unless the preprocess is graphed too with the alltoall dispatcher (lines 481-521):
    effective_recompute.
Compute: each module's forward again in backward, memory-bound: the activation reads fc1's output
and writes its own (2 bytes an element, as cost.gemm_work prices the forward's), a norm reads and
writes h (cost.gemm_work's 4h bytes a norm), at the profile's memory-bound rate (cost.kernels).
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.cuda_graphs import MOE_PREPROCESS, MOE_ROUTER
from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.kernels import memory_pass_time_s
from sp_planner.cost.moe import busiest_rank_load, moe_layer_fraction
from sp_planner.recompute import Recompute, recomputes_layernorm, recomputes_moe_act
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec


def routed_act_elements(model: ModelSpec, *, tokens, tp, ep, pad_load=0.0):
    """Elements of the routed experts' activation output per layer (averaged over the layers) on the
    busiest rank: tokens/tp x top_k copies x moe_ffn x its load (cost.activations.moe_activation_bytes).
    `tokens`: n."""
    if model.moe is None:
        return 0.0
    copies = tokens / np.asarray(tp) * model.moe.top_k * busiest_rank_load(model, ep, pad_load)
    return moe_layer_fraction(model) * copies * model.moe.moe_intermediate_size


def standalone_norms(model: ModelSpec) -> float:
    """Standalone norms per layer (averaged) the layernorm module re-runs: the input norm on every
    MLA layer, the pre-MLP norm on the MoE layers (module docstring)."""
    if model.moe is None:
        return 0.0
    return (1.0 if model.mla is not None else 0.0) + moe_layer_fraction(model)


def module_recompute_saved_delta_bytes(model: ModelSpec, *, tokens, region, tp, ep, recompute, pad_load=0.0):
    """Bytes the module recomputes save beyond nothing recomputed (negative: they free; module
    docstring), bf16 as cost.activations counts them; `region`: the rank's tokens in the
    sequence-parallel region (cost.activations.sequence_parallel_region_tokens)."""
    act = BF16_BYTES * routed_act_elements(model, tokens=tokens, tp=tp, ep=ep, pad_load=pad_load)
    norms = BF16_BYTES * np.asarray(region) * model.hidden_size * standalone_norms(model)
    return -(np.where(recomputes_moe_act(recompute), act, 0.0) + np.where(recomputes_layernorm(recompute), norms, 0.0))


def module_recompute_fp8_unsaved_elements(model: ModelSpec, *, tokens, tp, recompute):
    """Elements of the GEMM inputs cost.precision counts as saved in FP8 that the module recomputes
    free instead (the linears save the discarded original): fc2's routed inputs under moe_act, the
    MLA down-projections' and the shared experts' input under layernorm. Averaged load, as
    cost.precision.fp8_activation_savings_per_layer counts them. `tokens`: n."""
    if model.moe is None:
        return 0.0
    per_token = np.asarray(tokens) / np.asarray(tp)
    act = moe_layer_fraction(model) * model.moe.top_k * model.moe.moe_intermediate_size
    shared = moe_layer_fraction(model) if model.moe.num_shared_experts else 0.0
    norms = model.hidden_size * ((1.0 if model.mla is not None else 0.0) + shared)
    return per_token * (np.where(recomputes_moe_act(recompute), act, 0.0)
                        + np.where(recomputes_layernorm(recompute), norms, 0.0))


def module_recompute_s(model: ModelSpec, hardware: HardwareProfile, *, tokens, region, tp, ep, recompute,
                       pad_load=0.0):
    """Seconds per layer and micro-batch backward spends re-running the modules (module docstring)."""
    if model.moe is None:
        return np.zeros(np.shape(recompute))
    act = BF16_BYTES * model.num_mlp_matrices * routed_act_elements(model, tokens=tokens, tp=tp, ep=ep,
                                                                    pad_load=pad_load)
    norms = 2 * BF16_BYTES * np.asarray(region) * model.hidden_size * standalone_norms(model)
    return memory_pass_time_s(hardware, np.where(recomputes_moe_act(recompute), act, 0.0)
                              + np.where(recomputes_layernorm(recompute), norms, 0.0))


def effective_recompute(model: ModelSpec, recompute: Recompute, cuda_graphs: frozenset[str],
                        dispatcher: str) -> Recompute:
    """The choice Megatron runs: moe_act+layernorm is moe_act alone where the router is CUDA-graphed
    without the alltoall dispatcher's graphed preprocess (transformer_layer.py lines 481-521 turn
    the pre-MLP norm's recompute off) and there is no standalone input norm (not MLA)."""
    graphed_router = MOE_ROUTER in cuda_graphs and not (MOE_PREPROCESS in cuda_graphs and dispatcher == "alltoall")
    if recompute == "moe_act+layernorm" and graphed_router and model.mla is None:
        return "moe_act"
    return recompute

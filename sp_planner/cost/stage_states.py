"""Model-state bytes of each pipeline stage's rank (vectorized over candidates): parameters,
gradients and optimizer states as ZeRO shards them, with the gathered copies a framework keeps
and FP8's weight copies; cost.memory adds them to the stage's activations and buffers.

Model states (Rajbhandari et al. 2020, ZeRO, section 3.1): the bytes per parameter of the
framework's parameters, gradients and optimizer states, and the lowest ZeRO stage that shards
each (cost.states: Megatron's bf16 weights + fp32 main gradients + fp32 master and Adam moments,
2 + 4 + 12; torch FSDP's fp32 sharded parameters + fp32 gradients + Adam moments, 4 + 4 + 8;
DeepSpeed's 2 + 2 + 12). ZeRO shards over the dp x cp group (Megatron's dp-cp group; under HSDP
dp_shard x cp, cost.fsdp). Gathered parameters are bf16 (the GEMMs' copy): held whole beside the
shard from forward to backward when not resharded after forward (ZeRO-3 with
reshard_after_forward false, FSDP2 reshard_after_forward=False; FSDP's ZeRO-1/2), and, for a
framework whose GEMMs read a cast of unsharded fp32 parameters (torchtitan's DDP), autocast's
casts saved for backward.

FP8 (Transformer Engine, cost/precision.py): the layers' GEMM weights also live as FP8 copies, and
the GEMM inputs saved for backward are stored in FP8. With FP8 weights (Megatron --fp8-param-gather,
cost.fp8_params) those FP8 tensors are the weights, and the bf16 GEMM weights are gone; under
Megatron-FSDP (ZeRO-3) they are the 1 B shards, gathered per unit at TE's FP8 bytes, with no whole
copy. torchao's linears (torchtitan; TpGathers.caches_weight_casts False) keep no FP8 weight:
Float8Linear's and MX's autograd functions save the bf16 weight for backward (torchao v0.16.0 and
v0.18.0 float8/float8_linear.py line 45, ctx.save_for_backward(input_hp, weight_hp_t); v0.16.0
prototype/mx_formats/mx_linear.py line 53, v0.18.0 prototype/moe_training/mxfp8_linear.py line
108) and cast it again in backward; compiled, the min-cut partitioner saves the parameter itself,
free to save (torch 2.13 _functorch/config.py treat_parameters_as_free_to_save, lines 51-53;
partitioners.py get_node_weight, lines 2265-2277), with the scalar scales, and casts again in
backward rather than keep the FP8 weight (docs/cost-model.md stop 47: traced), so none is held
across micro-batches or within one. Nor do TE's linears under torch FSDP2 (Megatron's ZeRO-3
without reshard after forward, whose weights are bf16, cost.fp8_params.torch_fsdp2_casts): TE
from v2.16 caches no FP8 weight there and casts the gathered layer's in each pass.

ZeRO-3's root unit (cost.memory's module docstring): gathered and kept under
reshard_after_forward, its output layer's gradients held through backward wherever parameters are
sharded into units.
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.fp8_params import fp8_params_active, sharded_fp8_params, torch_fsdp2_casts
from sp_planner.cost.fsdp import expert_shard_size, shard_group_size
from sp_planner.cost.precision import FP8_ELEM_BYTES, SCALING_STATE_BYTES_PER_LAYER, fp8_weight_bytes_per_param
from sp_planner.cost.stage_params import StageParams
from sp_planner.cost.states import (
    TrainingStates,
    optimizer_bytes_per_param,
    params_sharded,
    sharded_state_bytes,
    whole_compute_copy,
)
from sp_planner.pipeline import StageLayers
from sp_planner.candidates import Candidates
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec

StageStates = tuple[np.ndarray, np.ndarray, np.ndarray]  # (params, grads, optimizer) bytes
FirstMiddleLastStates = tuple[StageStates, StageStates, StageStates]  # the first, a middle and the last stage's


def stage_state_bytes(model: ModelSpec, hardware: HardwareProfile, c: Candidates, states: TrainingStates,
                      own: StageParams, stages: StageLayers, *, caches_weight_casts: bool
                      ) -> FirstMiddleLastStates:
    """(params, grads, optimizer) bytes on the rank of each stage (first, middle, last) with the
    framework's training states (cost.states): `own` the stage's parameters (cost.stage_params),
    `stages` its layers; `caches_weight_casts`: the linears keep FP8 copies of their weights
    across micro-batches (TpGathers.caches_weight_casts; module docstring)."""
    zero = c.zero
    zgroup, eshard = shard_group_size(c), expert_shard_size(c)
    # A whole bf16 copy beside the stored parameters (gathered and kept for backward, cost.states).
    kept = whole_compute_copy(states, zero, c.reshard)
    # ZeRO-3's root unit on each stage (module docstring): its non-layer parameters, gathered and
    # kept under reshard_after_forward, and the output layer's gradients held through backward
    # wherever parameters are sharded into units.
    root_gathered = (zero == 3) & np.asarray(c.reshard, dtype=bool)
    units = params_sharded(states, zero)
    output_layer = model.vocab_size * model.hidden_size / c.tp + (
        model.embedding_params - model.vocab_size * model.hidden_size * (1 if model.tie_word_embeddings else 2))
    # FP8 copies of the stage's GEMM weights (whole on the rank: TE casts the gathered weights and
    # keeps them across micro-batches); none where the linears cast them every micro-batch and
    # save the bf16 weight for backward (torchao's, TpGathers.caches_weight_casts; module docstring).
    fp8_per_param = (fp8_weight_bytes_per_param(c.precision, hardware.fp8_gemm_any_layout)
                     if caches_weight_casts else np.zeros(np.shape(c.precision)))
    # TE's linears under torch FSDP2 (ZeRO-3 keeping the bf16 weights, Megatron --use-torch-fsdp2)
    # cache no FP8 weight either: each pass casts the gathered layer's (cost.fp8_params).
    fp8_per_param = np.where(torch_fsdp2_casts(states, c.precision, zero, c.reshard), 0.0, fp8_per_param)
    # The expert GEMMs' weights too: TE keeps FP8 copies of the grouped expert GEMMs' weights under
    # --fp8-format as of the dense ones (Megatron TEGroupedMLP): a stage's layers less their norms.
    # FP8 weights (cost.fp8_params): those copies are the GEMM weights, which have no bf16 copy;
    # under Megatron-FSDP (ZeRO-3) the FP8 weights are the shards, gathered per unit, and no whole
    # copy is held.
    fp8_weights = fp8_params_active(states, c.precision, zero, c.reshard)
    fp8_shards = sharded_fp8_params(states, c.precision, zero, c.reshard)

    # Adam's moments in bf16 where the plan says so (cost.states).
    optimizer_per_param = optimizer_bytes_per_param(states, c.adam_moments_bf16, c.master_as_remainder)

    def one(at: int, layers, holds_output):
        """The stage's (index `at` in own's (first, middle, last)) states over its `layers` layers."""
        params, experts, root = own.params[at], own.experts[at], own.root[at]
        # Its GEMM weights: its layers' less their norms, and the MTP depths' among its root ones.
        stage_gemm = params - root - layers * model.norm_params_per_layer + own.root_gemm[at]
        # Routed experts of the stage's layers are sharded by ZeRO over the expert-data-parallel
        # group (cost.moe), edp / dp_replicate ranks under HSDP (cost.fsdp.expert_shard_size), the
        # rest over the ZeRO group.
        dense_states = sharded_state_bytes(states, zero, params - experts, zgroup, optimizer_per_param)
        expert_states = sharded_state_bytes(states, zero, experts, eshard, optimizer_per_param)
        p_stored, g_stored, optimizer = (d + e for d, e in zip(dense_states, expert_states))
        bf16 = states.compute_param_bytes
        fp8 = (np.where(fp8_shards, 0.0, fp8_per_param * stage_gemm)
               + layers * np.where(c.precision != 0, SCALING_STATE_BYTES_PER_LAYER, 0))
        # Megatron-FSDP's FP8 shards: the GEMM weights' share of the stored shard in 1 B (the
        # experts' over edp, the rest over the ZeRO group), and a kept gathered copy likewise.
        gemm_shard = (stage_gemm - experts) / zgroup + experts / eshard
        saved = (states.param_bytes - FP8_ELEM_BYTES) * gemm_shard
        kept_bytes = bf16 * params - np.where(fp8_shards, (bf16 - FP8_ELEM_BYTES) * stage_gemm, 0.0)
        p = (p_stored + np.where(kept, kept_bytes, 0.0) + np.where(root_gathered, bf16 * root, 0.0) + fp8
             - np.where(fp8_weights & ~fp8_shards, states.param_bytes * stage_gemm, 0.0)
             - np.where(fp8_shards, saved, 0.0))
        g = g_stored + np.where(units & holds_output, states.grad_bytes * output_layer, 0.0)
        return p, g, optimizer

    return one(0, stages.first, c.pp == 1), one(1, stages.middle, False), one(2, stages.last, True)

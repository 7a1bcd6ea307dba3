"""Parameters whole on every tensor-parallel rank that see only the rank's share of the work: their
gradients' TP all-reduces at step end (vectorized).

Once a step finalize_model_grads calls _allreduce_non_tensor_model_parallel_grads (Megatron-LM
d98e8a6 megatron/core/distributed/finalize_model_grads.py lines 416-481), which, for tp > 1,
gathers the main_grad of every parameter with requires_grad on the rank (all its layers and
chunks) into two buffers, each flattened and all-reduced over the TP group in a call of its own,
the SUM buffer first:
- AVG: parameters marked average_gradients_across_tp_domain. DeepSeek Sparse Attention's lightning
  indexer is whole on every TP rank (dsa.py DSAIndexer: linear_wq_b, linear_wk,
  linear_weights_proj parallel_mode "duplicated", k_norm a LayerNorm), and DSAIndexer.__init__ marks
  all its parameters so. Without the indexer loss it runs on detached inputs (cost.dsa) and its
  main_grad stays the zeroed buffer, but the parameters keep requires_grad, so the call runs.
- SUM: parameters marked `sequence_parallel` where config.sequence_parallel, and those named
  q_layernorm / k_layernorm where config.qk_layernorm (with or without sequence parallelism: each
  TP rank normalizes its own heads). Marked, under sequence parallelism (each rank's share of the
  tokens), in the layers sp-planner describes (sequence_parallel_layer_params):
  the input and pre-MLP norms (TE's LayerNorm/RMSNorm, transformer_engine d0067d0
  pytorch/module/layernorm.py lines 138-139, rmsnorm.py line 142, through Megatron's TENorm; fused
  into the next linear, layernorm_linear.py lines 1653-1655, layernorm_mlp.py lines 2252-2254);
  the row-parallel linears' biases (the output projection's and the dense MLP's second, under
  linear_bias: transformer_engine.py line 1998, tensor_parallel/layers.py line 1499); the MoE
  router's weight (moe/router.py line 85); MLA's down projections, TELinear "duplicated" in the TE
  layer spec (multi_latent_attention.py lines 526-527 and 573-574; transformer_engine.py lines
  1310-1316), and its latent norms (lines 620-630, fused into the up projections under
  qk_layernorm, gpt_layer_specs.py lines 245-254); the final norm, on the last stage; MTP's three
  norms and its layer's, on the last stage. Not counted: the router's bias where add_bias_linear
  (num_experts elements).
- sizes: elements x the gradient buffer's width (cost.states grad_bytes: main_grad, fp32 under
  Megatron's bf16 runs); Megatron-FSDP hands the call the main_grad DTensor's local shard
  (`grad._local_tensor`), 1 / (dp_shard x cp), where it shards gradients.
- when: after every chunk's finish_grad_sync (the data-parallel gradient sync waited for), before
  the optimizer, on the compute stream: exposed whole, each call with its ring's latency, like the
  tied table's (cost.tied_embedding). The first stage ends its backward last under 1F1B, so its
  layers are the ones priced (the final norm and MTP's only where it is also the last, pp 1).
MindSpeed runs Megatron's finalize_model_grads (MindSpeed-LLM c77308a patches the layer-norm
all-reduce only for 2D TP, features_manager/tensor_parallel/tp_2d.py lines 13-15). Other frameworks
(Runtime.sums_sequence_parallel_grads False) are priced without the SUM buffer: torchtitan's
SequenceParallel norms hold a Partial gradient over TP that FSDP2 redistributes to Replicate, one
all-reduce per parameter in each unit's post-backward (torch 2.13.0
distributed/fsdp/_fully_shard/_fsdp_param.py FSDPParam._get_grad_inner_tensor), cost.partial_tp_grads;
DeepSpeed and yunchang have no TP.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.cost.collective_sizes import all_reduce_shares
from sp_planner.cost.fsdp import shard_group_size
from sp_planner.cost.links import ring_collective_time_s
from sp_planner.cost.moe import mlp_layer_is_moe
from sp_planner.cost.moe_params import dense_mlp_tp_duplicated_params
from sp_planner.cost.params import candidate_stage_layers, mla_tp_duplicated_params
from sp_planner.cost.stage_params import stage_moe_counts
from sp_planner.cost.states import TrainingStates
from sp_planner.layout import axis_stride
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec


class ReplicatedGrads(NamedTuple):
    """Per candidate, the two buffers' bytes (module docstring): SUM's, then AVG's."""

    summed: np.ndarray  # sequence-parallel parameters and QK norms
    averaged: np.ndarray  # DSA's indexer


def sequence_parallel_layer_params(model: ModelSpec, *, moe: bool, sequence_parallel: bool) -> int:
    """Elements one decoder layer (a MoE one where `moe`) puts in the SUM buffer (module docstring):
    its QK norms' 2 x head_dim always; under sequence parallelism its two norms, the row-parallel
    biases, MLA's down projections and latent norms and the router's weight."""
    qk_norms = 2 * model.head_dim if model.qk_norm else 0
    if not sequence_parallel:
        return qk_norms
    h = model.hidden_size
    marked = model.norm_params_per_layer
    if model.linear_bias:  # linear_proj's bias, and linear_fc2's in a dense MLP (the experts' are expert-parallel)
        marked += h + (0 if moe else dense_mlp_tp_duplicated_params(model))
    marked += mla_tp_duplicated_params(model)
    if moe:
        assert model.moe is not None
        marked += h * model.moe.num_experts
    return qk_norms + marked


def _last_stage_params(model: ModelSpec, sequence_parallel: bool) -> int:
    """Elements the last stage adds beyond its layers: the final norm and each MTP depth's three
    norms and layer (the last decoder layer's kind, cost.mtp)."""
    if not sequence_parallel:  # their norms are marked only; an MTP layer's QK norms are not
        return model.mtp_layers * sequence_parallel_layer_params(model, moe=mlp_layer_is_moe(model)[-1],
                                                                 sequence_parallel=False)
    final_norm = model.norm_params_per_layer // 2
    mtp_layer = sequence_parallel_layer_params(model, moe=mlp_layer_is_moe(model)[-1], sequence_parallel=True)
    return final_norm + model.mtp_layers * (model.mtp_norm_params + mtp_layer)


def replicated_grad_bytes(model: ModelSpec, c, states: TrainingStates, *, seq_len: int,
                          sums_sequence_parallel: bool, sequence_parallel: bool) -> ReplicatedGrads:
    """Bytes of main gradient the first stage's GPU all-reduces over TP in each call once a step
    (module docstring), a 1 / (dp_shard x cp) shard where the framework shards gradients; 0 at
    tp 1, and SUM's 0 where the framework runs no such call (`sums_sequence_parallel`).
    `sequence_parallel`: Megatron's (Runtime.sequence_parallel); `seq_len` places the MoE layers."""
    tp = np.asarray(c.tp)
    stages = candidate_stage_layers(model, c)
    layers = np.asarray(stages.first, dtype=np.float64)
    averaged = model.indexer_params_per_layer * layers
    summed = np.zeros(np.shape(tp))
    if sums_sequence_parallel:
        moe = np.asarray(stage_moe_counts(model, seq_len, c, stages)[0], dtype=np.float64) if model.moe else 0.0
        summed = ((layers - moe) * sequence_parallel_layer_params(model, moe=False, sequence_parallel=sequence_parallel)
                  + moe * (sequence_parallel_layer_params(model, moe=True, sequence_parallel=sequence_parallel)
                           if model.moe else 0)
                  + np.where(np.asarray(c.pp) == 1, _last_stage_params(model, sequence_parallel), 0))
    share = states.grad_bytes / np.where(np.asarray(c.zero) >= states.grad_shard_stage, shard_group_size(c), 1)
    return ReplicatedGrads(*(np.where(tp > 1, share * elements, 0.0) for elements in (summed, averaged)))


def replicated_sent_bytes(model: ModelSpec, c, states: TrainingStates, *, seq_len: int,
                          sums_sequence_parallel: bool, sequence_parallel: bool) -> ReplicatedGrads:
    """Bytes each rank sends in each call: 2 (tp - 1) / tp x its buffer (a ring all-reduce,
    cost.collective_sizes.all_reduce_shares); the keywords replicated_grad_bytes'."""
    share = all_reduce_shares(c.tp)
    buffers = replicated_grad_bytes(model, c, states, seq_len=seq_len, sums_sequence_parallel=sums_sequence_parallel,
                                    sequence_parallel=sequence_parallel)
    return ReplicatedGrads(*(share * b for b in buffers))


def replicated_all_reduce_s(model: ModelSpec, hardware: HardwareProfile, c, *, gpus_per_node: int,
                            states: TrainingStates, seq_len: int, sums_sequence_parallel: bool,
                            sequence_parallel: bool):
    """Seconds of the step-end all-reduces over the TP group: each non-empty buffer's ring
    all-reduce of replicated_sent_bytes plus its ring latency (0 where there is none); the other
    keywords replicated_grad_bytes'."""
    tp = np.asarray(c.tp)
    total = np.zeros(np.shape(tp))
    for sent in replicated_sent_bytes(model, c, states, seq_len=seq_len, sums_sequence_parallel=sums_sequence_parallel,
                                      sequence_parallel=sequence_parallel):
        if np.any(sent > 0):
            t = ring_collective_time_s(hardware, "all_reduce", sent, tp, axis_stride(c, "tp"), gpus_per_node)
            total = total + np.where(sent > 0, t, 0.0)
    return total

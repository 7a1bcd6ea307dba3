"""DeepSeek Sparse Attention's duplicated indexer: its gradients' TP all-reduce at step end (vectorized).

The lightning indexer's projections are whole on every tensor-parallel rank (Megatron-LM d98e8a6
megatron/core/transformer/experimental_attention_variant/dsa.py DSAIndexer: linear_wq_b, linear_wk,
linear_weights_proj parallel_mode "duplicated", k_norm a LayerNorm), and DSAIndexer.__init__ marks
every one of its parameters average_gradients_across_tp_domain. Once a step
finalize_model_grads calls _allreduce_non_tensor_model_parallel_grads (finalize_model_grads.py
at d98e8a6), which, for tp > 1, flattens the main_grad of every such parameter with requires_grad
on the rank (all its layers and chunks) into one buffer and all-reduces it (ReduceOp.AVG) over the
TP group:
- its size: indexer parameters x the rank's layers x the gradient buffer's width (cost.states
  grad_bytes: main_grad, fp32 under Megatron's bf16 runs); Megatron-FSDP hands it the main_grad
  DTensor's local shard (`grad._local_tensor`), 1 / (dp_shard x cp), where it shards gradients;
- whether the indexer trains or not: without the indexer loss the indexer runs on detached inputs
  (cost.dsa) and its main_grad stays the zeroed buffer, but the parameters keep requires_grad and
  their main_grad, so the call runs all the same;
- when: after every chunk's finish_grad_sync (the data-parallel gradient sync waited for), before
  the optimizer, on the compute stream: exposed whole, like the tied table's (cost.tied_embedding).
  The first stage ends its backward last under 1F1B, so its layers are the ones priced.
The same call also sums sequence-parallel norms' gradients (a separate SUM buffer); sp-planner
prices neither those nor this call's latency beside them beyond its own ring.
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.collective_sizes import bus_factor
from sp_planner.cost.fsdp import shard_group_size
from sp_planner.cost.links import ring_collective_time_s
from sp_planner.cost.params import candidate_stage_layers
from sp_planner.cost.states import TrainingStates
from sp_planner.layout import axis_stride
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec


def indexer_grad_bytes(model: ModelSpec, c, states: TrainingStates):
    """Bytes of main gradient the first stage's GPU all-reduces over TP once a step (module
    docstring): indexer parameters x its layers x grad_bytes, a 1 / (dp_shard x cp) shard where the
    framework shards gradients; 0 without DSA or at tp 1."""
    per_layer = model.indexer_params_per_layer
    tp = np.asarray(c.tp)
    if per_layer == 0:
        return np.zeros(np.shape(tp))
    layers = np.asarray(candidate_stage_layers(model, c).first, dtype=np.float64)
    elements = per_layer * layers
    sharded = np.asarray(c.zero) >= states.grad_shard_stage
    elements = elements / np.where(sharded, shard_group_size(c), 1)
    return np.where(tp > 1, states.grad_bytes * elements, 0.0)


def indexer_sent_bytes(model: ModelSpec, c, states: TrainingStates):
    """Bytes each rank sends in that all-reduce: 2 (tp - 1) / tp x indexer_grad_bytes (a ring
    all-reduce, cost.collective_sizes.bus_factor)."""
    share = np.vectorize(lambda n: bus_factor("all_reduce", int(n)), otypes=[np.float64])(np.asarray(c.tp))
    return share * indexer_grad_bytes(model, c, states)


def indexer_all_reduce_s(model: ModelSpec, hardware: HardwareProfile, c, *, gpus_per_node: int,
                         states: TrainingStates):
    """Seconds of the step-end all-reduce over the TP group (0 where there is none): a ring
    all-reduce of indexer_sent_bytes plus its ring latency."""
    if model.indexer_params_per_layer == 0:  # the search's hot path: nothing to price
        return np.zeros(np.shape(c.tp))
    tp = np.asarray(c.tp)
    t = ring_collective_time_s(hardware, "all_reduce", indexer_sent_bytes(model, c, states), tp,
                               axis_stride(c, "tp"), gpus_per_node)
    return np.where(tp > 1, t, 0.0)

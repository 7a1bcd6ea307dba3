"""torchtitan's parameters whole on every tensor-parallel rank whose gradient DTensor is Partial
over TP: FSDP2 all-reduces each on its own in the post-backward of the unit that holds it
(vectorized).

Which: torchtitan (v0.2.2 models/llama3/infra/parallelize.py lines 181, 219, 233;
deepseek_v3/infra/parallelize.py lines 230-294; b5bcd76c models/common/decoder_sharding.py
norm_config, "pending BWD AR handled by FSDP") makes its norms SequenceParallel (Replicate weights,
Shard(1) inputs) and MLA's wq_a, q_norm, wkv_a, kv_norm NoParallel(use_local_output=False) on the
gathered input. Qwen3's QK norms (RMSNorm over head_dim, ModelSpec.qk_norm) run on the rank's own
heads with their weights whole: v0.2.2 models/qwen3/infra/parallelize.py lines 263-264 make q_norm
and k_norm SequenceParallel(sequence_dim=2) on the colwise wq/wk output, sharded by heads (dim 2
of (b, s, heads, head_dim)); b5bcd76c models/qwen3/sharding.py lines 82-91 give qk_norm's weight
Replicate over TP (spmd.R) on the (tokens, heads, dim) layout sharded by heads. No collective
forward (the input is already head-sharded). Under torch 2.13.0 DTensor all of their gradients
come out Partial(sum) over TP (checked on 2 gloo ranks: attention_norm, wkv_a and kv_norm's
grads Partial, the colwise and rowwise weights' Shard; q_norm behind a colwise wq, input and
output Shard(2), weight grad Partial(sum), sp-plan's developers, stop 65); the MoE router's gate
(NoParallel on a local input) and the TP-sharded weights do not.
When: FSDPParamGroup.post_backward reads each parameter's unsharded_grad_data, whose
FSDPParam._get_grad_inner_tensor redistributes Partial to Replicate (torch 2.13.0
distributed/fsdp/_fully_shard/_fsdp_param.py lines 934-967): one funcol all_reduce per parameter,
waited at once (DTensor redistribute with async_op False, tensor/_redistribute.py lines 1763-1766),
so the compute stream stalls on each before the unit's reduce-scatter is issued: exposed whole,
each with its ring's latency. Every micro-batch that reduces (cost.fsdp.grad_reduces_per_step:
every one under FSDP without PP; once a step where torch.distributed.pipelining syncs a stage
after its last backward, or without FSDP at v0.2.2's dp_shard 1 and cp 1, where no wrapper
reduces and the optimizer's and clip_grad_norm_'s DTensor ops redistribute the Partial gradients
at step end, counted once as a floor). torchtitan b5bcd76c wraps every plan in fully_shard
(shard degree 1 too, models/llama3/parallelize.py lines 57-78), whose zero-0 HSDP-of-1 reduces every
micro-batch: counted once, as cost.fsdp counts its data-parallel reduce.
Width: the unsharded gradient in FSDP2's param_dtype (bf16, torchtitan's
mixed_precision_param default) where each backward reduces; the reduce_dtype's fp32 where the
backwards before accumulated it (FSDPParam.to_accumulated_grad_if_needed, lines 802-813).
Layers: the first stage's (it ends its backward last), the final norm where it is also the last.
Megatron's and MindSpeed's sequence-parallel gradients are cost.replicated_grads' instead.
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.collective_sizes import all_reduce_shares
from sp_planner.cost.dtypes import BF16_BYTES, FP32_BYTES
from sp_planner.cost.fsdp import grad_reduces_per_step, stage_synced
from sp_planner.cost.links import ring_collective_time_s
from sp_planner.cost.params import candidate_stage_layers, mla_tp_duplicated_param_sizes
from sp_planner.layout import axis_stride
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec


def partial_grad_layer_params(model: ModelSpec) -> tuple[int, ...]:
    """Elements of each parameter of one decoder layer with a Partial gradient (module docstring),
    one entry a call: the two norms' weights (and biases, a LayerNorm's), then MLA's down
    projections and latent norms (cost.params.mla_tp_duplicated_param_sizes), then the QK norms'
    weights (head_dim each, q_norm and k_norm) where the model has them."""
    h = model.hidden_size
    qk_norms = (model.head_dim,) * 2 if model.qk_norm else ()
    return (h,) * (model.norm_params_per_layer // h) + mla_tp_duplicated_param_sizes(model) + qk_norms


def partial_grad_calls(model: ModelSpec, layers, pp) -> dict[int, np.ndarray]:
    """All-reduces per reducing micro-batch by parameter size: `layers` decoder layers' and, where
    `pp` is 1, the final norm's (norm_params_per_layer / 2 elements, one call a tensor)."""
    h = model.hidden_size
    final = np.where(np.asarray(pp) == 1, model.norm_params_per_layer // 2 // h, 0)
    sizes = partial_grad_layer_params(model)
    return {n: np.asarray(layers) * sizes.count(n) + (final if n == h else 0) for n in sorted(set(sizes))}


def partial_grad_elem_bytes(c, pp_stage_grad_sync: bool):
    """Bytes per gradient element each call moves (module docstring): fp32 where the stage is
    synced once after accumulating (cost.fsdp.stage_synced), bf16 where every backward reduces."""
    return np.where(stage_synced(pp_stage_grad_sync, c.pp, c.zero), FP32_BYTES, BF16_BYTES)


def _calls(model: ModelSpec, c, micro_batches, pp_stage_grad_sync: bool):
    """(bytes each rank sends per call by parameter size, {size: calls per reducing micro-batch},
    reducing rounds a step), per candidate: each rank sends 2 (tp - 1) / tp x a gradient
    (cost.collective_sizes.all_reduce_shares)."""
    share = all_reduce_shares(c.tp)
    elem = partial_grad_elem_bytes(c, pp_stage_grad_sync)
    calls = partial_grad_calls(model, candidate_stage_layers(model, c).first, c.pp)
    return share * elem, calls, grad_reduces_per_step(c, micro_batches, pp_stage_grad_sync)


def partial_grad_all_reduce_s(model: ModelSpec, hardware: HardwareProfile, c, micro_batches, *,
                              gpus_per_node: int, pp_stage_grad_sync: bool):
    """Seconds a step of the per-parameter TP all-reduces (module docstring), per candidate (as
    run, cost.fsdp.torch_fsdp_as_run); 0 at tp 1."""
    tp = np.asarray(c.tp)
    sent_per_elem, calls, rounds = _calls(model, c, micro_batches, pp_stage_grad_sync)
    total = np.zeros(np.shape(tp))
    for n, count in calls.items():
        t = ring_collective_time_s(hardware, "all_reduce", sent_per_elem * n, tp, axis_stride(c, "tp"), gpus_per_node)
        total = total + count * t
    return np.where(tp > 1, rounds * total, 0.0)


def partial_grad_sent_bytes(model: ModelSpec, c, micro_batches, *, pp_stage_grad_sync: bool):
    """Bytes each rank sends a step in those all-reduces (cost.comm's tp_all_reduce), per candidate;
    0 at tp 1."""
    tp = np.asarray(c.tp)
    sent_per_elem, calls, rounds = _calls(model, c, micro_batches, pp_stage_grad_sync)
    elements = sum(count * n for n, count in calls.items())
    return np.where(tp > 1, rounds * sent_per_elem * elements, 0.0)

"""Bytes each GPU sends per step, by collective, and which link each group spans (vectorized).

Attention traffic comes from `attention_comm` (the contract shared with the executor), per
layer per micro-batch, times layers per stage and micro-batches, plus the forward again when
recompute re-runs attention (Megatron's core_attn and full recompute both re-run the CP
communication inside core attention). A DeepSeek Sparse Attention layer's all-gather CP moves its
latent and indexer keys instead, and its indexer gathers its inputs over TP (cost.dsa_times) and,
trained, reduce-scatters its key's gradient over CP (cost.dsa_loss); at step end the gradients
of the parameters whole on every TP rank, the sequence-parallel ones (norms) and DSA's duplicated
indexer, are all-reduced over TP (cost.replicated_grads).

TP with sequence parallelism: the collectives cost.tp_calls counts, each of b*s/cp*h bf16
elements, but a layer's all-gathers in the low precision the framework gathers (cost.tp_gathers:
per-tensor FP8 at 1 byte, MXFP8 data and scales by tensor, cost.gathered_transpose); the
embedding's and the output layer's in bf16. The first stage's GPU, whose bytes are counted, holds
both at pp 1.

DP/ZeRO over the dp x cp group, P = parameters on the rank, gradients in the framework's
reduction width (cost.states: fp32 for Megatron and torch FSDP's reduce_dtype, bf16 for
DeepSpeed's communication_data_type default): ZeRO-0 all-reduces gradients (reduce-scatter +
all-gather, both counted); ZeRO-1 reduce-scatters gradients once per step
and all-gathers bf16 parameters after the update (Megatron distributed optimizer; per-tensor
FP8 GEMM weights in FP8 under --fp8-param-gather, cost.fp8_params); ZeRO-2
reduce-scatters every micro-batch (DeepSpeed stage 2); ZeRO-3 also all-gathers parameters in
every micro-batch's forward and backward (FSDP / DeepSpeed stage 3), or only in forward when
reshard_after_forward is false; Megatron-FSDP's root unit (embedding, output layer, final norm)
once a step (cost.fsdp.root_gathers_per_micro_batch), and in a torch.distributed.pipelining
pipeline each ZeRO-3 stage reduces once a step and gathers in its first forward and, resharding
after forward, every backward (cost.fsdp.stage_synced). Under HSDP (dp_replicate > 1) the ZeRO group is dp_shard x cp
and each reduce-scatter of gradients is followed by an all-reduce of the shard across the
replicas (cost.fsdp); the routed experts' likewise over edp / dp_replicate, their shard
all-reduced over the same replica ranks (cost.fsdp.expert_shard_size). All-gather CP moves the
ring axis' K/V with an all-gather (forward, and again in backward) and dK/dV with a
reduce-scatter instead of P2P (attention_comm).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.cost.attention_comm import (
    allgather_bytes_per_layer,
    allgather_reduce_scatter_bytes_per_layer,
    kv_heads_for_ulysses,
    ring_bytes_per_layer,
    ulysses_bytes_per_layer,
)
from sp_planner.cost.fsdp import (
    expert_shard_size,
    grad_reduces_per_step,
    param_gathers_per_step,
    replicate_stride,
    reshard_after_forward,
    root_gathers_per_micro_batch,
    shard_group_size,
)
from sp_planner.cost.links import LINK_NAMES, group_link
from sp_planner.cost.partial_tp_grads import partial_grad_sent_bytes
from sp_planner.cost.replicated_grads import replicated_sent_bytes
from sp_planner.cost.ring_impl import TE_RING, RingImpl
from sp_planner.cost.dsa_loss import indexer_loss_bytes
from sp_planner.cost.dsa_times import dsa_comm_bytes
from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.params import candidate_stage_layers
from sp_planner.cost.stage_params import stage_moe_counts, stage_params
from sp_planner.cost.moe import (
    ETP_BACKWARD_COLLECTIVES,
    ETP_FORWARD_COLLECTIVES,
    MOE_ALL_TO_ALLS_PER_LAYER,
    MOE_FORWARD_ALL_TO_ALLS,
    dispatch_bytes,
    busiest_rank_load,
    moe_layer_fraction,
)
from sp_planner.cost.fp8_params import gathered_bytes
from sp_planner.cost.gathered_transpose import layer_gather_bytes
from sp_planner.cost.states import MEGATRON_STATES, TrainingStates
from sp_planner.cost.mlp_recompute import mlp_recompute_layers
from sp_planner.cost.tp_calls import TP_GRAD_ALL_GATHERS, tp_calls_per_step
from sp_planner.cost.tp_gathers import TE_TP_GATHERS, TpGathers
from sp_planner.layout import CP_AXES, DP_CP_AXES, axis_stride, group_size, group_stride
from sp_planner.plan import RECOMPUTE_FULL
from sp_planner.recompute import reruns_core_attention
from sp_planner.candidates import Candidates
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload

class PerCollective(NamedTuple):
    """One array per collective of a step (the fields of estimate.CommBytes and CommLinks)."""

    ulysses_all_to_all: np.ndarray
    ring_p2p: np.ndarray
    tp_all_gather: np.ndarray
    tp_reduce_scatter: np.ndarray
    pp_p2p: np.ndarray
    dp_reduce_scatter: np.ndarray
    dp_all_gather: np.ndarray
    cp_all_gather: np.ndarray
    cp_reduce_scatter: np.ndarray
    dp_all_reduce: np.ndarray
    ep_all_to_all: np.ndarray  # MoE dispatch + combine (cost.moe)
    etp_all_gather: np.ndarray  # MoE token all-gathers and reduce-scatters over etp
    edp_reduce_scatter: np.ndarray  # routed experts' gradients over the expert-data-parallel group
    edp_all_gather: np.ndarray
    tp_all_reduce: np.ndarray  # replicated parameters' gradients at step end, both calls (cost.replicated_grads)


class CommColumns(NamedTuple):
    sent_bytes: PerCollective  # int64: bytes one GPU sends per step
    links: PerCollective  # str: "none", "intra" or "inter", the link the collective's group spans


def micro_batches(workload: Workload, c: Candidates) -> np.ndarray:
    """Integer micro-batches per step (0 where the batch rule is broken)."""
    return workload.global_batch // (c.dp * c.micro_batch)


def ring_forward_bytes_per_layer(model: ModelSpec, workload: Workload, c: Candidates):
    """The forward share of ring_bytes_per_layer: K and V for R-1 steps."""
    kv = kv_heads_for_ulysses(model.num_kv_heads, c.tp, c.ulysses) // c.ulysses
    block = c.micro_batch * (workload.seq_len // c.ring) * kv * model.head_dim
    return 2 * (c.ring - 1) * block * BF16_BYTES


def comm_columns(model: ModelSpec, workload: Workload, c: Candidates, *, gpus_per_node: int,
                 states: TrainingStates = MEGATRON_STATES, ring_impl: RingImpl = TE_RING,
                 sequence_parallel: bool = True, tp_gathers: TpGathers = TE_TP_GATHERS,
                 sums_sequence_parallel_grads: bool = True, root_gathered_once: bool = False,
                 pp_stage_grad_sync: bool = False, partial_tp_grads: bool = False) -> CommColumns:
    """Bytes each GPU sends per step by collective, and the link each collective's group spans;
    gradients and gathered parameters in the framework's widths (cost.states); `sequence_parallel`
    False: TP's all-reduces (cost.tp_calls); `tp_gathers`: the recipes whose TP all-gathers the
    framework moves in low precision and whether it gathers the saved inputs again (cost.tp_gathers;
    Transformer Engine's by default); `sums_sequence_parallel_grads`: the step-end TP all-reduce of
    the sequence-parallel parameters' gradients (cost.replicated_grads; Megatron's);
    `root_gathered_once`: ZeRO-3's root unit gathered once a step
    (cost.overlap.Overlap.root_gathered_once, cost.fsdp.root_gathers_per_micro_batch);
    `pp_stage_grad_sync`: a pipeline's ZeRO-3 stages reduce once a step (cost.fsdp.stage_synced);
    `partial_tp_grads`: FSDP2's per-parameter TP all-reduces of Partial gradients (cost.partial_tp_grads;
    torchtitan's)."""
    grad_bytes = states.grad_bytes
    tp, u, r, pp = c.tp, c.ulysses, c.ring, c.pp
    b, recompute = c.micro_batch, c.recompute
    stages = candidate_stage_layers(model, c)
    layers = stages.first.astype(np.int64)  # the first stage's GPU (whose parameters are counted)
    m = micro_batches(workload, c)
    shape = dict(batch=b, seq_len=workload.seq_len, num_kv_heads=model.num_kv_heads,
                 head_dim=model.head_dim, tp=tp, ulysses=u, ring=r, elem_bytes=BF16_BYTES)
    uly_layer = ulysses_bytes_per_layer(num_heads=model.num_heads, **shape)
    gather = c.allgather
    ring_layer = np.where(gather, 0, ring_bytes_per_layer(**shape, grad_elem_bytes=ring_impl.grad_elem_bytes,
                                                          grad_home_hop=ring_impl.grad_home_hop))
    kv_shape = {k: v for k, v in shape.items() if k != "elem_bytes"}
    cp_ag_layer = np.where(gather, allgather_bytes_per_layer(**shape), 0)
    cp_rs_layer = np.where(gather, allgather_reduce_scatter_bytes_per_layer(
        **kv_shape, grad_elem_bytes=ring_impl.grad_elem_bytes), 0)
    again = reruns_core_attention(recompute)  # selective and full (not mla_up_proj) re-run core attention
    uly_layer = uly_layer + np.where(again, uly_layer // 2, 0)
    ring_layer = ring_layer + np.where(again & ~gather, ring_forward_bytes_per_layer(model, workload, c), 0)
    cp_ag_layer = cp_ag_layer + np.where(again, cp_ag_layer // 2, 0)  # the forward gather again
    dsa_tp = 0
    if model.dsa is not None:  # DSA's gathers in place of K/V's, forward only but again (cost.dsa_times)
        dsa = dsa_comm_bytes(model, seq_len=workload.seq_len, batch=b, tp=tp, ulysses=u, ring=r)
        times = np.where(again, 2, 1)
        cp_ag_layer = np.where(gather, times * dsa.cp_gather, 0).astype(np.int64)
        # The trained indexer's key gradient over CP, backward (cost.dsa_loss). Its target's TP
        # all-reduce stays out of the TP columns, which size the simulator's per-layer TP calls: it
        # runs inside the loss's forward (cost.dsa_loss.indexer_loss_bytes has its bytes).
        loss = indexer_loss_bytes(model, seq_len=workload.seq_len, batch=b, tp=tp, ring=r)
        cp_rs_layer = np.where(gather, dsa.cp_scatter + loss.cp_scatter, 0).astype(np.int64)
        dsa_tp = (times * dsa.tp_gather).astype(np.int64)  # the indexer's inputs, per layer

    gathered = b * (workload.seq_len // group_size(c, CP_AXES)) * model.hidden_size * BF16_BYTES
    tp_sent = gathered * (tp - 1) // tp
    full = recompute == RECOMPUTE_FULL
    tp_ag_calls, tp_rs_calls, layer_ag_calls = tp_calls_per_step(
        layers=layers, micro_batches=m, full_recompute=full, pp=pp, position_embedding=model.position_embedding,
        sequence_parallel=sequence_parallel, regathers=tp_gathers.regathers_saved_inputs,
        mlp_recomputes=mlp_recompute_layers(model, layers=layers, recompute=recompute))
    # The layers' gathers in FP8 under per-tensor FP8, MXFP8 by tensor, where the framework gathers
    # them so (cost.tp_gathers, cost.gathered_transpose); the embedding's and the output layer's in bf16.
    elem = layer_gather_bytes(model, tp=tp, precision=c.precision, fp8_blockwise=c.fp8_blockwise,
                              sequence_parallel=sequence_parallel, gathers=tp_gathers)
    same = tp_sent * (tp_ag_calls - layer_ag_calls) + (tp_sent * elem.fwd / BF16_BYTES) * layer_ag_calls
    # Where a layer's gathers differ by tensor (MXFP8): the output gradients' apart.
    grad_calls = layers * TP_GRAD_ALL_GATHERS * m
    by_tensor = same + (tp_sent * (elem.grad - elem.fwd) / BF16_BYTES) * grad_calls
    tp_ag_sent = np.where(elem.grad == elem.fwd, same, by_tensor)
    pp_sent = np.where(pp > 1, 2 * (gathered // tp), 0)

    zgroup, eshard = shard_group_size(c), expert_shard_size(c)
    # The first stage's GPU, with its layers of the split (uneven stages included) and its own MoE
    # layers (cost.stage_params).
    own = stage_params(model, tp, pp, c.ep, c.etp, stages, stage_moe_counts(model, workload.seq_len, c, stages))
    experts = own.experts[0].astype(np.int64)
    params = own.params[0].astype(np.int64) - experts
    zero = c.zero
    rounds = grad_reduces_per_step(c, m, pp_stage_grad_sync)
    gathers = param_gathers_per_step(c, m, pp_stage_grad_sync)

    def reductions(params, group, gathered):
        share = lambda nbytes: nbytes * (group - 1) // group  # noqa: E731  (n-1)/n of a buffer
        rs = share(grad_bytes * params) * rounds
        ag = np.select(
            [zero == 0, zero == 3],
            [share(grad_bytes * params), gathers * share(gathered.astype(np.int64))],
            share(gathered.astype(np.int64)),
        )
        return rs, ag

    # Routed experts reduce over the expert-data-parallel group (cost.moe), the rest over the ZeRO
    # group. The distributed optimizer's and Megatron-FSDP's gathers move per-tensor FP8 GEMM
    # weights in FP8 under --fp8-param-gather (cost.fp8_params); the experts are all GEMM weights.
    dense_gathered = gathered_bytes(states, c.precision, zero, reshard_after_forward(c), params, own.dense_gemm[0])
    grads_rs, params_ag = reductions(params, zgroup, np.asarray(dense_gathered))
    # Megatron-FSDP gathers the root unit (the stage's non-layer parameters, in the compute width)
    # in the step's first forward only (cost.fsdp.root_gathers_per_micro_batch).
    once = root_gathers_per_micro_batch(root_gathered_once, zero, reshard_after_forward(c), m) < 1
    if np.any(once):
        root = (own.root[0] * states.compute_param_bytes).astype(np.int64)
        layer_gathered = np.asarray(dense_gathered).astype(np.int64) - root
        params_ag = np.where(once, gathers * (layer_gathered * (zgroup - 1) // zgroup)
                             + root * (zgroup - 1) // zgroup, params_ag)
    expert_rs, expert_ag = reductions(experts, eshard, np.asarray(gathered_bytes(states, c.precision, zero,
                                                                              reshard_after_forward(c), experts,
                                                                              experts)))
    # HSDP: all-reduce of this rank's gradient shards, the dense one's and the routed experts',
    # over dp_replicate ranks (sent 2(r-1)/r; one replica group serves both, cost.fsdp).
    rep = c.dp_replicate
    replica_ar = 2 * (grad_bytes * params // zgroup + grad_bytes * experts // eshard) * (rep - 1) // rep * rounds
    # MoE: dispatch + combine forward and backward, each the rank's token copies (top_k of its n/tp
    # tokens, x the busiest rank's load: imbalance or capacity) less the share it keeps; etp gathers them.
    tokens = b * (workload.seq_len // group_size(c, CP_AXES)) // tp
    moe_share = moe_layer_fraction(model) if model.moe else 0.0
    copies = dispatch_bytes(model, tokens, BF16_BYTES) * busiest_rank_load(model, c.ep) * moe_share
    a2a_count = MOE_ALL_TO_ALLS_PER_LAYER + np.where(full, MOE_FORWARD_ALL_TO_ALLS, 0)
    etp_count = ETP_FORWARD_COLLECTIVES + ETP_BACKWARD_COLLECTIVES + np.where(full, ETP_FORWARD_COLLECTIVES, 0)
    ep_sent = (copies * (c.ep - 1) / c.ep * a2a_count).astype(np.int64)
    etp_sent = (copies * (c.etp - 1) * etp_count).astype(np.int64)
    per_stage = layers * m
    # Both step-end calls over TP, SUM's and AVG's (cost.replicated_grads).
    calls = replicated_sent_bytes(model, c, states, seq_len=workload.seq_len,
                                  sums_sequence_parallel=sums_sequence_parallel_grads,
                                  sequence_parallel=sequence_parallel)
    replicated = np.asarray(calls.summed + calls.averaged)
    if partial_tp_grads:
        replicated = replicated + partial_grad_sent_bytes(model, c, m, pp_stage_grad_sync=pp_stage_grad_sync)
    sent = PerCollective(
        ulysses_all_to_all=uly_layer * per_stage,
        ring_p2p=ring_layer * per_stage,
        tp_all_gather=tp_ag_sent + dsa_tp * per_stage,
        tp_reduce_scatter=tp_sent * tp_rs_calls,
        pp_p2p=pp_sent * m * c.vpp,  # one send per chunk boundary (Narayanan 2021 s2.2.2)
        dp_reduce_scatter=grads_rs,
        dp_all_gather=params_ag,
        cp_all_gather=cp_ag_layer * per_stage,
        cp_reduce_scatter=cp_rs_layer * per_stage,
        dp_all_reduce=replica_ar,
        ep_all_to_all=ep_sent * per_stage,
        etp_all_gather=etp_sent * per_stage,
        edp_reduce_scatter=expert_rs,
        edp_all_gather=expert_ag,
        tp_all_reduce=replicated.astype(np.int64),
    )
    gpn = gpus_per_node
    # A dense model has no routed experts, so no expert-DP collective: its link is none, as for any
    # collective a plan does not run (not the edp group's span).
    expert_group = np.where(experts > 0, eshard, 1)
    dp_cp_stride = group_stride(c, DP_CP_AXES)
    links = PerCollective(
        ulysses_all_to_all=group_link(u, axis_stride(c, "ulysses"), gpn),
        ring_p2p=group_link(np.where(gather, 1, r), axis_stride(c, "ring"), gpn),
        tp_all_gather=group_link(tp, axis_stride(c, "tp"), gpn),
        tp_reduce_scatter=group_link(tp, axis_stride(c, "tp"), gpn),
        pp_p2p=group_link(pp, axis_stride(c, "pp"), gpn),
        dp_reduce_scatter=group_link(zgroup, dp_cp_stride, gpn),
        dp_all_gather=group_link(zgroup, dp_cp_stride, gpn),
        cp_all_gather=group_link(np.where(gather, r, 1), axis_stride(c, "ring"), gpn),
        cp_reduce_scatter=group_link(np.where(gather, r, 1), axis_stride(c, "ring"), gpn),
        dp_all_reduce=group_link(rep, replicate_stride(c), gpn),
        ep_all_to_all=group_link(c.ep, axis_stride(c, "ep"), gpn),
        etp_all_gather=group_link(c.etp, axis_stride(c, "etp"), gpn),
        edp_reduce_scatter=group_link(expert_group, axis_stride(c, "edp"), gpn),
        edp_all_gather=group_link(expert_group, axis_stride(c, "edp"), gpn),
        tp_all_reduce=group_link(np.where(replicated > 0, tp, 1), axis_stride(c, "tp"), gpn),
    )
    return CommColumns(
        sent_bytes=PerCollective(*(np.asarray(v, dtype=np.int64) for v in sent)),
        links=PerCollective(*(LINK_NAMES[code] for code in links)),
    )

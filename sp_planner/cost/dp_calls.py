"""A pipeline stage's data-parallel collectives priced call by call, each row of the candidates
its own stage (cost.dp_times tabulates them per distinct shape).

The calls are Megatron's buckets or FSDP's units (cost.buckets); each pays its bandwidth share
and NCCL's ring latency (cost.links). Bytes follow cost.comm: gradients reduce-scattered in the
framework's width (cost.states; all-reduced under ZeRO-0, sending twice the share), bf16
parameters gathered (per-tensor FP8 GEMM weights in FP8 under --fp8-param-gather,
cost.fp8_params); routed experts
over the expert-data-parallel group (edp / dp_replicate ranks under HSDP); under HSDP each
reduce-scatter's shard, dense or expert, then all-reduced over the replicas (cost.fsdp), one call
per bucket or unit as well.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from sp_planner.cost.bucket_counts import BucketCounts, bucket_counts
from sp_planner.cost.fp8_params import gather_bytes_per_gemm_param, unit_gather_width
from sp_planner.cost.fsdp import expert_shard_size, replicate_stride, shard_group_size
from sp_planner.cost.collective_sizes import ring_tensor_bytes, sized
from sp_planner.cost.links import INTRA, group_link, ring_alpha_beta_s, ring_latency_s, ring_steps
from sp_planner.cost.nccl_protocols import SIMPLE, fastest_ring
from sp_planner.cost.params import layer_params_per_rank
from sp_planner.cost.stage_params import dp_lightest_middle_stages, dp_middle_stages, stage_moe_counts, stage_params
from sp_planner.cost.moe import mlp_layer_is_moe
from sp_planner.cost.moe_params import expert_params_per_rank
from sp_planner.cost.dp_exposure import DPTimes
from sp_planner.cost.states import TrainingStates
from sp_planner.columns import take_rows
from sp_planner.distinct import per_distinct
from sp_planner.layout import DP_CP_AXES, axis_stride, group_stride
from sp_planner.pipeline import StageLayers, stage_chunk
from sp_planner.pipeline_chunks import later_chunk_layers
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec

Stage = Literal["first", "middle", "last"]
STAGES: tuple[Stage, ...] = ("first", "middle", "last")  # a row's stage code is its index here

# Rows from which a ring's terms are priced once per distinct group (distinct.per_distinct).
TERM_MIN_ROWS = 64


def priced_rows(model: ModelSpec, hardware: HardwareProfile, c, *, stages: StageLayers, stage: np.ndarray,
                gpus_per_node: int, seq_len: int, states: TrainingStates, lightest: bool = False) -> DPTimes:
    """The data-parallel calls on every row of `c` of its stage (`stage`: the index in STAGES)."""
    gpn = gpus_per_node
    grad_bytes, param_bytes = states.grad_bytes, states.compute_param_bytes
    tp, pp, ep, etp = c.tp, c.pp, c.ep, c.etp
    zgroup, zstride = shard_group_size(c), group_stride(c, DP_CP_AXES)
    eshard, edp_stride = expert_shard_size(c), axis_stride(c, "edp")
    rep, rep_stride = c.dp_replicate, replicate_stride(c)
    per_layer = layer_params_per_rank(model, tp, ep, etp)
    expert_layer = expert_params_per_rank(model, 1, ep, etp, layers=1)
    dense_layer = per_layer - expert_layer

    # A ring call's alpha-beta time is linear in the bytes sent plus its latency (cost.links):
    # evaluate the slope, the latency and the ring's steps (for the protocol, cost.nccl_protocols)
    # once per collective and group, then price every call from them, times the slowdown at the
    # call's own size inside a node (cost.collective_sizes).
    terms: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    where = {"dense": (zgroup, zstride), "expert": (eshard, edp_stride), "replica": (rep, rep_stride)}
    inside = {name: group_link(size, stride, gpn) == INTRA for name, (size, stride) in where.items()}

    def ring_terms(kind: str, size, stride) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        latency = ring_latency_s(hardware, kind, size, stride, gpn)
        per_byte = ring_alpha_beta_s(hardware, kind, 1.0, size, stride, gpn) - latency
        _, intra_steps, inter_steps = ring_steps(kind, size, stride, gpn)
        return per_byte, latency, intra_steps, inter_steps

    def term(kind: str, group: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if (kind, group) not in terms:
            # Once per distinct (group size, stride): a few dozen of a chunk's thousands of shapes.
            terms[(kind, group)] = per_distinct(lambda size, stride: ring_terms(kind, size, stride), *where[group],
                                                min_rows=TERM_MIN_ROWS)
        return terms[(kind, group)]

    def calls(kind, bytes_per_param, n_params, count, group: str):
        """`count` calls over `group` moving n_params parameters in all: the bandwidth time of the
        whole bytes and one latency per call, or each call's LL or LL128 time where one is faster
        (cost.nccl_protocols)."""
        size = where[group][0]
        moves = (n_params > 0) & (size > 1)
        if not np.any(moves):  # a dense model's expert calls, replicas without HSDP: 0 on every row
            return np.zeros(np.shape(moves))
        if np.ndim(moves) == 1 and not np.all(moves):
            # Priced on the rows that move only (a virtual stage's chunk calls, a stage with no
            # root parameters, ...): the formulas are per row (columns.take_rows), 0 elsewhere.
            rows, n = np.flatnonzero(moves), len(moves)
            out = np.zeros(n)
            out[rows] = _moving_calls(hardware, kind, *take_rows(
                (bytes_per_param, n_params, count, size, inside[group], term(kind, group)), rows, n))
            return out
        return np.where(moves, _moving_calls(hardware, kind, bytes_per_param, n_params, count, size, inside[group],
                                             term(kind, group)), 0.0)

    def reduce(dense_params, dense_count, expert_params, expert_count):
        """Reduce-scatter of gradients, then HSDP's all-reduce of the shard over the replicas."""
        rs = (calls("reduce_scatter", grad_bytes, dense_params, dense_count, "dense")
              + calls("reduce_scatter", grad_bytes, expert_params, expert_count, "expert"))
        shard = dense_params / zgroup + expert_params / eshard
        return rs + calls("all_reduce", 2 * grad_bytes, shard, dense_count + expert_count, "replica")

    def both(kind, bytes_per_param, dense_params, dense_count, expert_params, expert_count):
        return (calls(kind, bytes_per_param, dense_params, dense_count, "dense")
                + calls(kind, bytes_per_param, expert_params, expert_count, "expert"))

    # The parameter gather's width: per-tensor FP8 GEMM weights 1 B under --fp8-param-gather
    # (ZeRO-1, and Megatron-FSDP's ZeRO-3 units, cost.fp8_params), else the framework's; the
    # experts are all GEMM weights, the dense calls carry the stage's share of them (a layer's
    # all but its norms).
    gemm_width = gather_bytes_per_gemm_param(states, c.precision, c.zero, c.reshard)
    layer_width = unit_gather_width(states, c.precision, c.zero, c.reshard, dense_layer,
                                    dense_layer - model.norm_params_per_layer)

    def gather(dense_params, dense_count, expert_params, expert_count, dense_width):
        return (calls("all_gather", dense_width, dense_params, dense_count, "dense")
                + calls("all_gather", gemm_width, expert_params, expert_count, "expert"))

    # Each row's stage's own parameters, its MoE layers those Megatron places on it (cost.stage_params).
    layers = np.choose(stage, [getattr(stages, name) for name in STAGES])
    # The middle stages' calls are those of the one with the most MoE layers (stage_params.dp_middle_stage).
    first_moe, second_moe, last_moe = stage_moe_counts(model, seq_len, c, stages)
    middle_rank, middle_moe = dp_lightest_middle_stages(model, c)[:2] if lightest else dp_middle_stages(model, c)
    moe_counts = (first_moe, np.where(middle_rank > 1, middle_moe, second_moe), last_moe)
    own = stage_params(model, tp, pp, ep, etp, stages, moe_counts)
    params, experts = np.choose(stage, own.params), np.choose(stage, own.experts)
    dense = params - experts
    # The stage's non-layer parameters: the embedding on the first stage, the output layer and
    # final norm on the last (all three on a single stage), none on a middle one; MTP's depths on
    # the last (cost.mtp), their routed experts over edp (root_experts).
    root = np.choose(stage, own.root)
    layer_experts = expert_params_per_rank(model, pp, ep, etp, moe_layers=np.choose(stage, moe_counts))
    root_experts = experts - layer_experts if model.mtp_layers else 0.0
    # The output layer's (DPTimes.head_gather_s): a single stage's root less its embedding table.
    holds_output = (pp == 1) | (stage == STAGES.index("last"))
    head = np.where(pp == 1, np.maximum(0.0, root - model.vocab_size * model.hidden_size / tp),
                    np.where(holds_output, root, 0.0))
    if len(set(mlp_layer_is_moe(model))) > 1:
        # A layer of the stage where the model's MLP kinds differ: its own layers' average (DeepSeek-V3's
        # first stage of 3 dense layers gathers and reduces no expert; ZeRO-3's per-layer calls and
        # the later chunks' buckets, as the simulator runs each layer's own, sim.dp_work).
        some = np.where(layers > 0, layers, 1.0)
        dense_layer = np.where(layers > 0, (dense - root) / some, dense_layer)
        expert_layer = np.where(layers > 0, layer_experts / some, expert_layer)
    # A full model chunk's layers where an end stage does not divide by vpp (the layout).
    full_chunk = stage_chunk(stages.first, stages.middle, stages.last, c.pp, c.vpp)
    dense_calls, expert_calls = _layouts(model, c, layers, stage, full_chunk, lightest)
    dense_width = unit_gather_width(states, c.precision, c.zero, c.reshard, dense, np.choose(stage, own.dense_gemm))
    unhideable_experts = expert_calls.unhideable_params
    n_dense, n_expert = dense_calls.num_calls, expert_calls.num_calls
    # ZeRO-0/1 with virtual stages: a later model chunk's layers, one bucket of each buffer
    # (cost.buckets._chunked); none otherwise. Under the counted split the chunk holding the
    # embedding (first stage) or the loss (last) has a layer fewer, under the layout the rest of a
    # stage beyond vpp - 1 full chunks (pipeline_chunks.chunk_layer_counts):
    # on the last stage dp_once.chunked_exposed_s's head (the whole less vpp such chunks) is
    # then the output layer less that layer.
    chunked = (c.vpp > 1) & (c.zero <= 1)
    chunk_layers = later_chunk_layers(layers, c.vpp, full_chunk)
    chunk_dense = np.where(chunked, dense_layer * chunk_layers, 0.0)
    chunk_experts = np.where(chunked, expert_layer * chunk_layers, 0.0)
    return DPTimes(
        grad_all_reduce_s=both("all_reduce", 2 * grad_bytes, dense, n_dense, experts, n_expert),
        grad_reduce_scatter_s=reduce(dense, n_dense, experts, n_expert),
        param_all_gather_s=gather(dense, n_dense, experts, n_expert, dense_width),
        last_all_reduce_s=both("all_reduce", 2 * grad_bytes, dense_calls.unhideable_params,
                               dense_calls.num_unhideable, unhideable_experts, expert_calls.num_unhideable),
        last_reduce_scatter_s=reduce(dense_calls.unhideable_params, dense_calls.num_unhideable,
                                     unhideable_experts, expert_calls.num_unhideable),
        first_all_gather_s=gather(dense_calls.unhideable_params, dense_calls.num_unhideable, unhideable_experts,
                                  expert_calls.num_unhideable, dense_width),
        tail_all_reduce_s=both("all_reduce", 2 * grad_bytes, dense_calls.tail_params, dense_calls.num_tail,
                               expert_calls.tail_params, expert_calls.num_tail),
        tail_reduce_scatter_s=reduce(dense_calls.tail_params, dense_calls.num_tail, expert_calls.tail_params,
                                     expert_calls.num_tail),
        layer_gather_s=(calls("all_gather", layer_width, dense_layer, 1, "dense")
                        + calls("all_gather", gemm_width, expert_layer, 1, "expert")),
        layer_reduce_s=reduce(dense_layer, 1, expert_layer, 1),
        root_gather_s=both("all_gather", param_bytes, root, 1, root_experts, 1),
        root_reduce_s=reduce(root, 1, root_experts, 1),
        head_gather_s=both("all_gather", param_bytes, head, 1, np.where(holds_output, root_experts, 0.0), 1),
        tail_gather_s=gather(dense_calls.tail_params, dense_calls.num_tail, expert_calls.tail_params,
                             expert_calls.num_tail, dense_width),
        chunk_all_reduce_s=both("all_reduce", 2 * grad_bytes, chunk_dense, 1, chunk_experts, 1),
        chunk_reduce_scatter_s=reduce(chunk_dense, 1, chunk_experts, 1),
        chunk_all_gather_s=gather(chunk_dense, 1, chunk_experts, 1, dense_width),
        # ZeRO-2's chunks of their own layers' buckets where the model's layers differ (0 elsewhere);
        # the later chunks' first layers' on every model (0 at one chunk).
        chunk0_reduce_scatter_s=reduce(dense_calls.chunk0_params, dense_calls.num_chunk0, expert_calls.chunk0_params,
                                       expert_calls.num_chunk0),
        end_reduce_scatter_s=reduce(dense_calls.end_params, dense_calls.num_end, expert_calls.end_params,
                                    expert_calls.num_end),
        end_first_reduce_scatter_s=reduce(dense_calls.end_first_params, dense_calls.num_end_first,
                                          expert_calls.end_first_params, expert_calls.num_end_first),
        later_first_reduce_scatter_s=reduce(dense_calls.later_first_params, dense_calls.num_later_first,
                                            expert_calls.later_first_params, expert_calls.num_later_first),
        later_first_gather_s=gather(dense_calls.later_first_params, dense_calls.num_later_first,
                                    expert_calls.later_first_params, expert_calls.num_later_first, dense_width),
    )


def _moving_calls(hardware: HardwareProfile, kind: str, bytes_per_param, n_params, count, size, inside, term):
    """priced_rows' `calls` on rows that move bytes: `count` calls over a group of `size` (inside
    a node where `inside`) moving n_params parameters in all, with the group's ring `term` (per
    byte, latency, intra-node and network steps)."""
    per_byte, latency, intra_steps, inter_steps = term
    sent = bytes_per_param * n_params * (size - 1) / size
    calls_ = np.maximum(count, 1)
    call = sized(hardware, kind, ring_tensor_bytes(kind, sent / calls_, size), size, where=inside)
    # One call's time under the fastest protocol (cost.nccl_protocols); Simple's as before.
    one = fastest_ring(hardware, kind, call.factor * (sent / calls_ * per_byte + latency), sent / calls_ * per_byte,
                       sent / calls_, intra_steps, inter_steps, where=~call.measured)
    simple = call.factor * (sent * per_byte + count * latency)
    return np.where(one.protocol == SIMPLE, simple, count * one.time_s)


def _layouts(model: ModelSpec, c, layers, stage_code: np.ndarray, chunk=0,
             lightest: bool = False) -> tuple[BucketCounts, BucketCounts]:
    """cost.bucket_counts.bucket_counts of each row's stage (its index in STAGES; `chunk`:
    pipeline.stage_chunk; `lightest`: a middle row's stage the one with the fewest MoE layers)."""
    return bucket_counts(model, tp=c.tp, ep=c.ep, etp=c.etp, layers=layers, pp=c.pp, dp=c.dp, zero=c.zero, vpp=c.vpp,
                         first_stage=stage_code == STAGES.index("first"),
                         last_stage=stage_code == STAGES.index("last"), first_stage_layers=c.first_stage_layers,
                         last_stage_layers=c.last_stage_layers, chunk=chunk, lightest=lightest)

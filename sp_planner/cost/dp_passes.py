"""A step's data-parallel seconds over its forward and backward passes (cost.step): a stage's own
exposure (dp_exposed_s, of cost.dp_exposure's passes) or, in a pipeline, what the critical path
exposes of ZeRO-2/3's (cost.pipeline_dp.pipelined_dp_s) and the latest stage's once-a-step sync under
ZeRO-0/1 (cost.pipeline_tails.stage_tails_dp_s), priced over the passes as the GPU runs them and again,
for host-bound candidates, as their host stalls lengthen them. Vectorized over candidates; every
formula is per candidate, so pricing a subset of the rows gives those rows what the whole
columns give them (columns.take_rows)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.columns import take_rows
from sp_planner.cost.dp_exposure import DPTimes, Edges, micro_batch_dp_s
from sp_planner.cost.dp_once import once_a_step_s
from sp_planner.cost.dp_times import StageTimes
from sp_planner.cost.kind_passes import KindPasses
from sp_planner.cost.fsdp import root_gathers_per_micro_batch
from sp_planner.cost.overlap import Overlap
from sp_planner.cost.pipeline_dp import pipelined_dp_s
from sp_planner.cost.pipeline_tails import stage_tails_dp_s
from sp_planner.pipeline import StageLayers
from sp_planner.candidates import Candidates


class DPPasses(NamedTuple):
    """What the data-parallel exposure is priced from, per candidate (cost.step's names)."""

    c: Candidates
    stages: StageLayers  # decoder layers per stage
    times: tuple[StageTimes, ...]  # the first, a middle and the last stage's calls (cost.dp_times)
    layers: np.ndarray  # the pacing stage's layers
    per_layer_s: np.ndarray  # a layer's micro-batch, forward and backward
    logits_s: np.ndarray  # the last stage's work beyond its layers
    ahead_s: np.ndarray  # its part before the first layer's backward (the loss and output layer)
    first_s: np.ndarray  # the first stage's beyond its layers (the embedding's TP collectives, gradient passes)
    fwd_layer_s: np.ndarray  # a layer's forward window of one micro-batch ...
    bwd_layer_s: np.ndarray  # ... and backward window
    micro_batches: np.ndarray
    edges: Edges  # the work beside a layer chunk's data-parallel edges (first_s's backward part: bwd_tail_s)
    kinds: KindPasses | None = None  # the layer kinds of the single stages walked layer by layer (ZeRO-3)
    # Compute lost per second of hidden traffic (cost.overlap.overlap_compute_slowdown): which stage's
    # sync ends a ZeRO-0/1 pipeline's step depends on it (cost.pipeline_tails).
    slowdown: float = 0.0
    # Each (first, middle, last) stage's own layer (per_layer_s, fwd_layer_s, bwd_layer_s) where the
    # model's layers differ (cost.stage_layer_times): the pipeline's blocks and tails are each
    # stage's; None: every stage's layer is the pacing one's.
    stage_layers: tuple[tuple, tuple, tuple] | None = None
    # The two ends' tied-embedding all-reduce after their syncs (cost.tied_embedding; 0: none).
    tied_s: np.ndarray | float = 0.0
    # The rank of the middle stage whose calls times[1] holds (cost.stage_params.dp_middle_stage).
    middle_rank: np.ndarray | float = 1.0
    # How much earlier than stage 1's that stage's last backward ends (cost.stage_layer_times.middle_drain_s).
    middle_drain_s: np.ndarray | float = 0.0
    # ZeRO-2/3: the middle stage with the fewest MoE layers' calls, and how far the middle stages'
    # mean lies towards it (cost.stage_params.dp_lightest_middle_stage; None: the middle stages alike).
    relay_times: DPTimes | None = None
    relay_share: np.ndarray | float = 0.0
    # The rank of the heaviest middle stage the middle path rides there (cost.stage_params.
    # dp_ridden_middle_stage; None: the last middle one).
    relay_rank: np.ndarray | None = None
    # The first stage's chunk 0 and last chunk's layers' backward from their own kinds
    # (cost.stage_layer_times.first_chunks_bwd_s; None: the stage's mean layer's).
    first_chunks_bwd_s: tuple[np.ndarray, np.ndarray] | None = None
    # One pipeline hop where the interleaved sends run beside the compute (0 elsewhere): the fill's
    # and drain's hops ZeRO-2/3's path exposes beyond the compute's (cost.pipeline_sends.path_sends_s).
    pp_hop_s: np.ndarray | float = 0.0


def dp_over_passes(overlap: Overlap, p: DPPasses, fwd_stall_s, bwd_stall_s, *,
                   compute_path_s=None) -> tuple[np.ndarray, np.ndarray]:
    """(exposed, hidden) DP seconds per step with each forward and backward pass lengthened by
    a host stall (seconds per micro-batch, spread over the stage's layers). `compute_path_s`: the
    pipeline's critical path over these passes' compute, where cost.step has it (no stalls; None:
    priced here, cost.pipeline_dp.pipelined_dp_s)."""
    c, layers = p.c, p.layers
    stall_f, stall_b = fwd_stall_s / layers, bwd_stall_s / layers
    # The pipeline's stages each with their own layer (a tuple) or the pacing one's.
    per_layer, fwd_layer, bwd_layer = ((p.per_layer_s, p.fwd_layer_s, p.bwd_layer_s) if p.stage_layers is None
                                       else p.stage_layers)
    passes = dict(stages=p.stages, times=p.times, per_layer_s=_plus(per_layer, stall_f + stall_b),
                  logits_s=p.logits_s, ahead_s=p.ahead_s, first_s=p.first_s, fwd_layer_s=_plus(fwd_layer, stall_f),
                  bwd_layer_s=_plus(bwd_layer, stall_b), edges=p.edges)
    pipelined = pipelined_dp_s(overlap, c, micro_batches=p.micro_batches, reshard=c.reshard,
                               compute_path_s=compute_path_s, kinds=p.kinds, relay_times=p.relay_times,
                               relay_share=p.relay_share, relay_rank=p.relay_rank, hop_s=p.pp_hop_s, **passes)
    exposed, hidden = dp_exposed_s(
        overlap, zero=c.zero, micro_batches=p.micro_batches, layers=layers, times=p.times[0].at(),
        fwd_window_s=layers * p.fwd_layer_s + fwd_stall_s, bwd_window_s=layers * p.bwd_layer_s + bwd_stall_s,
        reshard=c.reshard, ahead_s=np.where(c.pp == 1, p.ahead_s, 0.0), chunks=c.vpp, pp=c.pp, edges=p.edges,
        micro_batch_traffic_s=pipelined, kinds=p.kinds, vpp_group=c.vpp_group,
    )
    # ZeRO-0/1 in a pipeline: every stage's own sync after its last backward (cost.pipeline_tails).
    tails, tails_hidden = stage_tails_dp_s(overlap, c, micro_batches=p.micro_batches, slowdown=p.slowdown,
                                           tied_s=p.tied_s, middle_rank=p.middle_rank,
                                           middle_drain_s=p.middle_drain_s,
                                           first_chunks_bwd_s=p.first_chunks_bwd_s, **passes)
    return np.where(np.isnan(tails), exposed, tails), np.where(np.isnan(tails_hidden), hidden, tails_hidden)


def _plus(values, stall_s):
    """`values` (one array or each stage's, pipeline.per_stage) each lengthened by `stall_s`."""
    return tuple(v + stall_s for v in values) if isinstance(values, tuple) else values + stall_s


def dp_with_host_beside_s(overlap: Overlap, p: DPPasses, host_fwd_stall_s, host_bwd_stall_s, host_exposed_s, *,
                          compute_path_s=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | float]:
    """(exposed, hidden) DP seconds per step over the GPU's passes (dp_over_passes with no stalls;
    `compute_path_s` as there), and the seconds of the host's exposed time (host_exposed_s a
    micro-batch, split into its forward and backward stalls) that the traffic runs beside: the
    exposure over the GPU's passes less the same traffic's over the passes as they last. Only
    the host-bound candidates' passes last longer (elsewhere the stalls are 0 and so is the
    difference), so only those rows are priced again, appended to every row in the same
    dp_over_passes call: at a search chunk's size its numpy calls, not its rows, set its time, and
    the formulas are per row (columns.take_rows), each row getting what a call of its own gives it."""
    n = len(p.c)
    if not np.any(host_exposed_s > 0):
        exposed, hidden = dp_over_passes(overlap, p, 0.0, 0.0, compute_path_s=compute_path_s)
        return exposed, hidden, 0.0
    stalled = np.flatnonzero(np.broadcast_to(host_exposed_s, (n,)) != 0)  # NaN too
    rows = np.concatenate([np.arange(n), stalled])  # every row, then the host-bound ones again

    def stalls(values):
        return np.concatenate([np.zeros(n), take_rows(np.broadcast_to(values, (n,)), stalled, n)])

    # The appended rows' compute path, lengthened by their stalls, is priced in the call
    # (NaN: cost.pipeline_dp prices it); the others' is the one given.
    path = None if compute_path_s is None else np.concatenate(
        [np.broadcast_to(compute_path_s, (n,)), np.full(len(stalled), np.nan)])
    exposed, hidden = dp_over_passes(overlap, take_rows(p, rows, n), stalls(host_fwd_stall_s),
                                     stalls(host_bwd_stall_s), compute_path_s=path)
    dp_exposed, dp_wall = exposed[:n], exposed[:n].copy()
    dp_wall[stalled] = exposed[n:]
    return dp_exposed, hidden[:n], np.clip(dp_exposed - dp_wall, 0.0, p.micro_batches * host_exposed_s)


def dp_exposed_s(overlap: Overlap, *, zero, micro_batches, layers, times: DPTimes, fwd_window_s, bwd_window_s,
                 reshard, ahead_s=0.0, chunks=1, pp=1, edges: Edges | None = None, micro_batch_traffic_s=None,
                 kinds: KindPasses | None = None, vpp_group=None):
    """(exposed, hidden) seconds per step of the data-parallel traffic on one rank (the ZeRO
    shard group's, plus HSDP's replica all-reduce inside the reduce-scatter times; cost.fsdp).

    fwd/bwd_window_s are one micro-batch's forward / backward compute and TP traffic of the
    stage's `layers` layers; reshard (bool per candidate) says ZeRO-3 gathers again in backward
    (reshard_after_forward, cost.fsdp); ahead_s, chunks and edges as micro_batch_dp_s; ZeRO-0/1's
    once-a-step passes over `chunks` model chunks of a pp-stage pipeline as chunked_exposed_s.
    ZeRO-2/3's per-micro-batch traffic exposes micro_batches x micro_batch_dp_s on a single
    stage; a pipeline passes what it exposes on the critical path instead, with what the first
    stage hides (`micro_batch_traffic_s`,
    cost.pipeline_dp.pipelined_dp_s; NaN where there is no pipeline), ZeRO-2's overlapped parameter
    gather with it (every stage's on the path, the first's too). Hidden is otherwise this
    stage's own traffic less its own exposure. `kinds`: ZeRO-3's single stages whose layers
    differ, walked layer by layer (cost.kind_passes). `vpp_group`: the plans' own micro-batch groups
    (cost.dp_once.once_a_step_s').
    """
    t = times
    reduce0, reduce1, gather12 = once_a_step_s(overlap, zero=zero, layers=layers, times=t, fwd_window_s=fwd_window_s,
                                               bwd_window_s=bwd_window_s, chunks=chunks, pp=pp, edges=edges,
                                               micro_batches=micro_batches, vpp_group=vpp_group)
    per_micro_batch, per_micro_batch_busy = _own_micro_batch_dp_s(
        overlap, zero=zero, layers=layers, times=t, fwd_window_s=fwd_window_s, bwd_window_s=bwd_window_s,
        reshard=reshard, ahead_s=ahead_s, chunks=chunks, edges=edges, head_s=np.where(pp == 1, t.root_reduce_s, 0.0),
        root_gathers=root_gathers_per_micro_batch(overlap.root_gathered_once, zero, reshard, micro_batches),
        pipelined=micro_batch_traffic_s, kinds=kinds)
    # Once a step: ZeRO-0's all-reduce, ZeRO-1's reduce-scatter, ZeRO-1/2's parameter gather.
    once = np.select([zero == 0, zero == 1, zero == 2], [reduce0, reduce1 + gather12, gather12], 0.0)
    once_busy = np.select([zero == 0, zero == 1, zero == 2],
                          [t.grad_all_reduce_s, t.grad_reduce_scatter_s + t.param_all_gather_s, t.param_all_gather_s],
                          0.0)
    exposed = once + micro_batches * per_micro_batch
    hidden = micro_batches * (per_micro_batch_busy - per_micro_batch)
    if micro_batch_traffic_s is not None:
        traffic, traffic_hidden = micro_batch_traffic_s
        # ZeRO-2's overlapped gather in a pipeline: the path's, the first stage's from its own layers
        # and window (cost.pipeline_dp.pipelined_dp_s, hidden part included), none once a step here.
        piped = ~np.isnan(traffic) & (zero == 2) & overlap.param_gather
        once, once_busy = np.where(piped, 0.0, once), np.where(piped, 0.0, once_busy)
        exposed = np.where(np.isnan(traffic), exposed, once + traffic)
        hidden = np.where(np.isnan(traffic_hidden), hidden, traffic_hidden)
    return exposed, np.maximum(0.0, once_busy - once + hidden)


def _own_micro_batch_dp_s(overlap: Overlap, *, zero, pipelined, **stage):
    """micro_batch_dp_s of the candidates (`zero` an array of them) whose stage's own exposure
    dp_exposed_s uses: ZeRO-2/3 where the pipeline passes none (NaN in `pipelined`); 0 elsewhere,
    as micro_batch_dp_s gives ZeRO-0/1 (the formulas are per candidate, columns.take_rows)."""
    zero = np.asarray(zero)
    if zero.ndim != 1:
        return micro_batch_dp_s(overlap, zero=zero, **stage)
    own = zero >= 2
    if pipelined is not None:
        own &= np.isnan(pipelined[0]) | np.isnan(pipelined[1])
    rows = np.flatnonzero(own)
    exposed, busy = np.zeros(len(zero)), np.zeros(len(zero))
    if len(rows):
        exposed[rows], busy[rows] = micro_batch_dp_s(overlap, zero=zero[rows], **take_rows(stage, rows, len(zero)))
    return exposed, busy

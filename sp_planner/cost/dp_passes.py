"""A step's data-parallel seconds over its forward and backward passes (cost.step): a stage's own
exposure (cost.dp_exposure.dp_exposed_s) or, in a pipeline, what the critical path exposes of
ZeRO-2/3's (cost.pipeline_dp.pipelined_dp_s) and the latest stage's once-a-step sync under
ZeRO-0/1 (cost.pipeline_tails.stage_tails_dp_s), priced over the passes as the GPU runs them and again,
for host-bound candidates, as their host stalls lengthen them. Vectorized over candidates; every
formula is per candidate, so pricing a subset of the rows gives those rows what the whole
columns give them (columns.take_rows)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.columns import take_rows
from sp_planner.cost.dp_exposure import Edges, dp_exposed_s
from sp_planner.cost.dp_times import StageTimes
from sp_planner.cost.overlap import Overlap
from sp_planner.cost.pipeline_dp import pipelined_dp_s
from sp_planner.cost.pipeline_tails import stage_tails_dp_s
from sp_planner.pipeline import StageLayers
from sp_planner.space import Candidates


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


def dp_over_passes(overlap: Overlap, p: DPPasses, fwd_stall_s, bwd_stall_s, *,
                   compute_path_s=None) -> tuple[np.ndarray, np.ndarray]:
    """(exposed, hidden) DP seconds per step with each forward and backward pass lengthened by
    a host stall (seconds per micro-batch, spread over the stage's layers). `compute_path_s`: the
    pipeline's critical path over these passes' compute, where cost.step has it (no stalls; None:
    priced here, cost.pipeline_dp.pipelined_dp_s)."""
    c, layers = p.c, p.layers
    stall_f, stall_b = fwd_stall_s / layers, bwd_stall_s / layers
    passes = dict(stages=p.stages, times=p.times, per_layer_s=p.per_layer_s + stall_f + stall_b,
                  logits_s=p.logits_s, ahead_s=p.ahead_s, first_s=p.first_s, fwd_layer_s=p.fwd_layer_s + stall_f,
                  bwd_layer_s=p.bwd_layer_s + stall_b, edges=p.edges)
    pipelined = pipelined_dp_s(overlap, c, micro_batches=p.micro_batches, reshard=c.reshard,
                               compute_path_s=compute_path_s, **passes)
    exposed, hidden = dp_exposed_s(
        overlap, zero=c.zero, micro_batches=p.micro_batches, layers=layers, times=p.times[0].at(),
        fwd_window_s=layers * p.fwd_layer_s + fwd_stall_s, bwd_window_s=layers * p.bwd_layer_s + bwd_stall_s,
        reshard=c.reshard, ahead_s=np.where(c.pp == 1, p.ahead_s, 0.0), chunks=c.vpp, pp=c.pp, edges=p.edges,
        micro_batch_traffic_s=pipelined,
    )
    # ZeRO-0/1 in a pipeline: every stage's own sync after its last backward (cost.pipeline_tails).
    tails, tails_hidden = stage_tails_dp_s(overlap, c, micro_batches=p.micro_batches, **passes)
    return np.where(np.isnan(tails), exposed, tails), np.where(np.isnan(tails_hidden), hidden, tails_hidden)


def host_beside_dp_s(overlap: Overlap, p: DPPasses, dp_exposed, host_fwd_stall_s, host_bwd_stall_s, host_exposed_s):
    """Seconds per step of the host's exposed time (host_exposed_s a micro-batch, split into its
    forward and backward stalls) that the data-parallel traffic runs beside: dp_exposed (priced
    over the GPU's passes) less the same traffic priced over the passes as they last. Only the
    host-bound candidates' passes last longer: elsewhere the stalls are 0 and the passes, and so
    the traffic's exposure, are the ones dp_exposed priced, so only those rows are priced again."""
    if not np.any(host_exposed_s > 0):
        return 0.0
    stalled = np.flatnonzero(np.broadcast_to(host_exposed_s, np.shape(dp_exposed)) != 0)  # NaN too

    def rows(values):
        return take_rows(values, stalled, len(dp_exposed))

    dp_wall = np.array(dp_exposed, dtype=np.float64)
    dp_wall[stalled] = dp_over_passes(overlap, rows(p), rows(host_fwd_stall_s), rows(host_bwd_stall_s))[0]
    return np.clip(dp_exposed - dp_wall, 0.0, p.micro_batches * host_exposed_s)

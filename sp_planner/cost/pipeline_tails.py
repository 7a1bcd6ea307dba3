"""ZeRO-0/1 traffic in a pipeline: every stage syncs its own gradients once a step, after its own
last backward, and the step ends on the stage whose sync ends last.

Megatron wraps each pipeline rank's model chunks in their own DDP instances over that rank's
parameters, and turns bucketing off on every rank but the first: "data-parallel communication on
these stages is not on the critical path" (distributed_data_parallel.py:160-171, bucket_size None
when pp_rank > 0; Megatron-LM d98e8a6). A later stage's chunk is then one call, issued after the
chunk's last backward (cost.buckets._chunked), which nothing hides. It is off the critical path
only as far as that stage finishes its compute ahead of the first stage: by the drain's backward
blocks below it. A stage with more layers than the first (a
pinned uneven split) syncs more, finishes earlier by less than its sync, and sets the step; the
search's own splits never give a later stage more layers (pipeline.default_split), where the
first stage's sync, bucketed behind its last backward, mostly sets it as before.

Every stage then waits for the others before its optimizer: the gradient norm (clip_grad 1.0 by
default) is all-reduced over the model-parallel group, tp x pp (optimizer.py:374-389,
clip_grads.py:132-134 get_grad_norm_fp32; parallel_state.py:1155 _MODEL_PARALLEL_GROUP), so the
step's optimizer is the slowest stage's, after the last stage's sync (cost.step).

ZeRO-1 with --overlap-param-gather: a stage after the first holds its parameters in one bucket
(one a chunk), whose all-gather Megatron starts with the step (zero_grad; the interleaved schedule
gathers chunks 0 and 1 at its start, cost.overlap.chunk_gathers_ahead), so its first forward
waits for it; the pipeline's fill hides what arrives before micro-batch 0 does (the forwards of
the stages below), the rest delays every block after it (sim.pipeline does the same). The first
stage's gather is exposed as cost.dp_exposure prices it; without overlap it follows the optimizer
on every stage (as the simulator takes it, the first stage's). Vectorized over candidates.
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.dp_exposure import Edges, once_a_step_s
from sp_planner.cost.dp_times import StageTimes
from sp_planner.cost.overlap import Overlap, chunk_gathers_ahead
from sp_planner.cost.pipeline_blocks import StageDP, bare_blocks, stage_edges
from sp_planner.pipeline import StageLayers


def stage_tails_dp_s(overlap: Overlap, c, *, stages: StageLayers, times: tuple[StageTimes, ...], per_layer_s,
                     logits_s, ahead_s, first_s, fwd_layer_s, bwd_layer_s,
                     edges: Edges) -> tuple[np.ndarray, np.ndarray]:
    """(exposed, hidden) seconds per step of ZeRO-0/1's once-a-step traffic in a pipeline (module
    docstring): the start's gather delay and the latest stage's sync beyond the first stage's
    compute end; hidden is that stage's (the other stages' hidden traffic slows compute that ends
    earlier: not counted in overlap_compute_slowdown). NaN where there is no pipeline or ZeRO-2/3
    runs. The arguments are cost.pipeline_dp.pipelined_dp_s's (the micro-batches do not matter:
    the syncs go once a step)."""
    pp, zero, vpp = np.asarray(c.pp), np.asarray(c.zero), np.asarray(c.vpp)
    n = len(pp)
    out, hidden = np.full(n, np.nan), np.full(n, np.nan)
    rows = np.flatnonzero((pp > 1) & (zero <= 1))
    if not len(rows):
        return out, hidden

    def sub(values):
        return np.broadcast_to(np.asarray(values, dtype=np.float64), (n,))[rows]

    split = StageLayers(*(sub(v) for v in stages))
    z, chunks = zero[rows], sub(vpp)
    layer_s, fwd_s, bwd_s = sub(per_layer_s), sub(fwd_layer_s), sub(bwd_layer_s)
    middles = np.maximum(pp[rows] - 2, 0)
    by_stage = (
        StageDP(times[0].at(rows), split.first, split.first * layer_s + sub(first_s), 0.0, 1.0),
        StageDP(times[1].at(rows), split.middle, split.middle * layer_s, 0.0, middles),
        StageDP(times[2].at(rows), split.last, split.last * layer_s + sub(logits_s), sub(ahead_s), 1.0),
    )
    row_edges = Edges(*(sub(v) for v in edges))
    bare = bare_blocks(by_stage, edges=row_edges, fwd_layer_s=fwd_s, bwd_layer_s=bwd_s, vpp=chunks)
    # Each stage's last backward ends before the first stage's by the drain's chunk-0 backward
    # blocks below it (cost.pipeline_path.compute_blocks: the first middle stage's, the first
    # stage's alone), at most: where the first stage paces, the stages above it end earlier still
    # (their slack is not taken off).
    drain = bare[0].first_bwd_s
    lags = (0.0, drain, drain + middles * bare[1].first_bwd_s)
    # Micro-batch 0's first forward reaches the first middle stage and the last after the chunk-0
    # forwards below them (cost.pipeline_path.compute_blocks).
    arrival = (0.0, bare[0].forward_s / chunks, (bare[0].forward_s + middles * bare[1].forward_s) / chunks)
    ahead = chunk_gathers_ahead(overlap, z, chunks)
    start, tails, busy = [], [], []
    for i, s in enumerate(by_stage):
        t = s.times
        reduce0, reduce1, gather = once_a_step_s(overlap, zero=z, layers=s.layers, times=t,
                                                 fwd_window_s=s.layers * fwd_s, bwd_window_s=s.layers * bwd_s,
                                                 chunks=chunks, pp=pp[rows], edges=stage_edges(row_edges, i))
        tails.append(np.where(z == 0, reduce0, reduce1))
        grads_busy = np.where(z == 0, t.grad_all_reduce_s, t.grad_reduce_scatter_s)
        if i == 0:  # cost.dp_exposure's: before its first forward, or after the optimizer
            gather = np.where(z == 1, gather, 0.0)
            start.append(gather)
            busy.append(np.maximum(0.0, grads_busy + np.where(z == 1, t.param_all_gather_s, 0.0) - tails[-1]
                                   - gather))
            continue
        # The stage's bucket(s) from the step's start, beside the fill (module docstring); without
        # overlap after the optimizer, the first stage's standing for it.
        early = np.where(ahead, gather, t.param_all_gather_s) if overlap.param_gather else np.zeros_like(gather)
        start.append(np.where(z == 1, np.maximum(0.0, early - arrival[i]), 0.0))
        busy.append(np.maximum(0.0, grads_busy - tails[-1]))
    # Past the first stage's compute end (the path's), each stage's sync ends its tail less its lag;
    # a pipeline of two has no middle stage (masked, whatever its zero layers priced: 0/0 gathers).
    start[1] = np.where(middles > 0, start[1], 0.0)
    ends = np.stack([tail - lag for tail, lag in zip(tails, lags)])
    ends[1] = np.where(middles > 0, ends[1], -np.inf)
    last = np.argmax(ends, axis=0)
    out[rows] = np.maximum.reduce(start) + np.max(ends, axis=0)
    hidden[rows] = np.choose(last, busy)
    return out, hidden

"""ZeRO-0/1 traffic in a pipeline: every stage syncs its own gradients once a step, after its own
last backward, and the step ends on the stage whose sync ends last.

Megatron wraps each pipeline rank's model chunks in their own DDP instances over that rank's
parameters, and turns bucketing off on every rank but the first: "data-parallel communication on
these stages is not on the critical path" (distributed_data_parallel.py:160-171, bucket_size None
when pp_rank > 0; Megatron-LM d98e8a6). A later stage's chunk is then one call, issued after the
chunk's last backward (cost.buckets._chunked), which nothing hides. It is off the critical path
only as far as that stage finishes its compute ahead of the first stage: by the drain's backward
blocks below it, more where the first stage's last backwards pile up behind the stages above
(finish_lags_s). A stage with more layers than the first (a pinned uneven split) syncs more,
finishes earlier by less than its sync, and sets the step; the search's own splits never give a
later stage more layers (pipeline_split.default_split), where the first stage's sync, bucketed behind
its last backward, mostly sets it as before.

Every stage then waits for the others before its optimizer: the gradient norm (clip_grad 1.0 by
default) is all-reduced over the model-parallel group, tp x pp (optimizer.py:374-389,
clip_grads.py:132-134 get_grad_norm_fp32; parallel_state.py:1155 _MODEL_PARALLEL_GROUP), so the
step's optimizer is the slowest stage's, after the last stage's sync (cost.step).

ZeRO-1 with --overlap-param-gather: a stage after the first holds its parameters in one bucket
(one a chunk), whose all-gather Megatron starts with the step (zero_grad; the interleaved schedule
gathers chunks 0 and 1 at its start, cost.overlap.chunk_gathers_ahead), so its first forward
waits for it; the pipeline's fill hides what arrives before micro-batch 0 does (the forwards of
the stages below), the rest delays every block after it (sim.pipeline does the same); the
interleaved schedule's later chunks' gathers, dispatched in the fill, delay it further
(cost.pipeline_fill, the last stage's last chunk with the output layer). The first
stage's gather is exposed as cost.dp_exposure prices it; without overlap it follows the optimizer
on every stage (as the simulator takes it, the first stage's). Vectorized over candidates.
"""

from __future__ import annotations

from functools import reduce

import numpy as np

from sp_planner.columns import take_rows
from sp_planner.cost.dp_exposure import Edges, hidden_behind
from sp_planner.cost.dp_once import once_a_step_s
from sp_planner.cost.dp_times import StageTimes
from sp_planner.cost.overlap import Overlap, chunk_gathers_ahead
from sp_planner.cost.pipeline_blocks import StageDP, bare_blocks, stage_edges
from sp_planner.cost.pipeline_fill import FillStage, fill_s
from sp_planner.cost.pipeline_path import StageBlocks
from sp_planner.pipeline import StageLayers, per_stage, pile_up_s, stage_chunk
from sp_planner.pipeline_chunks import chunk_shape


def stage_tails_dp_s(overlap: Overlap, c, *, stages: StageLayers, times: tuple[StageTimes, ...], per_layer_s,
                     logits_s, ahead_s, first_s, fwd_layer_s, bwd_layer_s,
                     edges: Edges, micro_batches, slowdown: float = 0.0, tied_s=0.0,
                     middle_rank=1.0, middle_drain_s=0.0) -> tuple[np.ndarray, np.ndarray]:
    """(exposed, hidden) seconds per step of ZeRO-0/1's once-a-step traffic in a pipeline (module
    docstring): the start's gather delay and the latest stage's sync beyond the first stage's
    compute end; hidden is that stage's (the other stages' hidden traffic slows compute that ends
    earlier: not counted in overlap_compute_slowdown). NaN where there is no pipeline or ZeRO-2/3
    runs. The arguments are cost.pipeline_dp.pipelined_dp_s's (a layer's times one for every
    stage or each stage's own, pipeline.per_stage); the `micro_batches` only set how
    the schedule ends (finish_lags_s: the syncs go once a step); `slowdown`: the compute lost per
    second of hidden traffic (cost.overlap), which cost.step charges on the hidden seconds returned.
    The step ends on the stage whose sync, after its compute slowed by its own hidden traffic, ends
    last (sim.pipeline runs each stage's slowdown after its own sync): a first stage whose bucketed
    sync ends just before a later stage's single call still sets the step by its slowdown
    (Qwen3-235B-A22B, pp 4 at its default 23 / 24 / 24 / 23 split, ZeRO-1, 128 H100s). `tied_s`:
    the two ends' tied-embedding all-reduce after their syncs (cost.tied_embedding), which
    cost.step charges whole: a middle stage whose sync ends later runs beside it, so what it sets
    the step by comes off here (sim.pipeline's _step_tail joins the stages after it). `middle_rank`:
    the rank of the middle stage whose calls `times` holds (cost.stage_params.dp_middle_stage),
    `middle_drain_s` how much earlier than stage 1's its last backward ends (cost.stage_layer_times.
    middle_drain_s: the drain's chunk-0 backwards of the ranks between)."""
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
    # Each stage's blocks from its own layers' times where they differ (cost.stage_layer_times).
    layer_s, fwd_s, bwd_s = (tuple(sub(v) for v in per_stage(x)) for x in (per_layer_s, fwd_layer_s, bwd_layer_s))
    middles = np.maximum(pp[rows] - 2, 0)
    by_stage = (
        StageDP(times[0].at(rows), split.first, split.first * layer_s[0] + sub(first_s), 0.0, 1.0),
        StageDP(times[1].at(rows), split.middle, split.middle * layer_s[1], 0.0, middles),
        StageDP(times[2].at(rows), split.last, split.last * layer_s[2] + sub(logits_s), sub(ahead_s), 1.0),
    )
    row_edges = Edges(*(sub(v) for v in edges))
    bare = bare_blocks(by_stage, edges=row_edges, fwd_layer_s=fwd_s, bwd_layer_s=bwd_s, vpp=chunks)
    # Each stage's last backward ends this long before the first stage's. The middle stage whose
    # calls these are (`middle_rank`, cost.stage_params.dp_middle_stage) launches its chunks' syncs
    # as its rank does (once_a_step_s) and ends its last backward the drain's chunk-0 backwards of
    # the ranks between before stage 1's (`middle_drain_s`).
    rank = sub(middle_rank)
    lags = finish_lags_s(bare, middles, sub(micro_batches), chunks)
    lags = (lags[0], lags[1] + sub(middle_drain_s), lags[2])
    # Micro-batch 0's first forward reaches the first middle stage and the last after the chunk-0
    # forwards below them (cost.pipeline_path.compute_blocks).
    arrival = (0.0, bare[0].forward_s / chunks, (bare[0].forward_s + middles * bare[1].forward_s) / chunks)
    # A middle stage's short end chunk under a layout split (its last: pipeline_chunks.chunk_shape).
    full, end = chunk_shape(split.middle, chunks, stage_chunk(split.first, split.middle, split.last, pp[rows], chunks))
    end_share = (1.0, np.where(full > 0, end / np.maximum(full, 1), 1.0), 1.0)
    ahead = chunk_gathers_ahead(overlap, z, chunks)
    # Read only where the chunks' gathers go ahead (ZeRO-1, interleaved, overlapped param gather).
    fill: tuple = (0.0, 0.0, 0.0)
    before: tuple = fill
    if np.any(ahead):
        # Priced on those rows alone (row by row: columns.take_rows), 0 on the rest, which read neither.
        at, num = np.flatnonzero(ahead), len(rows)
        fill_stages = take_rows(tuple(_fill_stages(by_stage, bare, fwd_s, chunks, end_share[1])), at, num)
        fill, before = (tuple(_spread(v, at, num) for v in part)
                        for part in fill_s(*fill_stages, middles=middles[at], pp=pp[rows][at], vpp=chunks[at]))
    start, tails, busy = [], [], []
    for i, s in enumerate(by_stage):
        t = s.times
        reduce0, reduce1, gather = once_a_step_s(overlap, zero=z, layers=s.layers, times=t,
                                                 fwd_window_s=s.layers * fwd_s[i], bwd_window_s=s.layers * bwd_s[i],
                                                 chunks=chunks, pp=pp[rows], edges=stage_edges(row_edges, i),
                                                 rank=(0, rank, pp[rows] - 1)[i], end_share=end_share[i])
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
        early = np.where(ahead, fill[i], t.param_all_gather_s - arrival[i]) if overlap.param_gather else 0.0 * gather
        start.append(np.where(z == 1, np.maximum(0.0, early), 0.0))
        # Its gathers beside its compute (not its fill's idle time nor the waits for them) slow it.
        beside = np.where(ahead & (z == 1), np.maximum(0.0, t.param_all_gather_s - before[i] - fill[i]), 0.0)
        busy.append(np.maximum(0.0, grads_busy - tails[-1]) + beside)
    # Past the first stage's compute end (the path's), each stage's sync ends its tail less its lag;
    # a pipeline of two has no middle stage (masked, whatever its zero layers priced: 0/0 gathers).
    start[1] = np.where(middles > 0, start[1], 0.0)
    ends = np.stack([tail - lag for tail, lag in zip(tails, lags)])
    ends[1] = np.where(middles > 0, ends[1], -np.inf)
    # The ends' tied all-reduce follows the later of their syncs; a middle stage's beside it.
    beside = np.zeros_like(ends)
    beside[1] = sub(tied_s)
    last = np.argmax(ends + slowdown * np.stack(busy) - beside, axis=0)
    out[rows] = np.maximum.reduce(start) + np.choose(last, ends - beside)
    hidden[rows] = np.choose(last, busy)
    return out, hidden


def synced_syncs_s(times, lags, *, pp, vpp) -> np.ndarray:
    """Exposed seconds per step of the gradient sync of a pipeline's ZeRO-3 stages synced once a
    step (cost.fsdp.stage_synced): each stage reduce-scatters all its gradients after its last
    backward, one call a unit, the compute waiting for them (torch.distributed.pipelining's
    perform_reduce_grad), so nothing of a stage's own hides; the step ends on the stage whose sync
    ends last past the first stage's compute end, each ending `lags` (finish_lags_s over the
    blocks the step runs, cost.pipeline_dp) before it, as ZeRO-0/1's. `times`: the first, a
    middle and the last stage's DPTimes (their reduce-scatters)."""
    pp, vpp = np.asarray(pp), np.asarray(vpp)
    every = np.ones(np.shape(pp), dtype=bool)
    present = (every, pp > 2, every)  # a pipeline of two has no middle stage
    # A chunk's sync: its layers' share of the stage's calls, the first stage's embedding with its
    # chunk 0, the last stage's output layer and final norm with its last chunk (the one at vpp 1).
    layers = [(t.grad_reduce_scatter_s - t.root_reduce_s) / vpp for t in times]
    root_first, root_last = times[0].root_reduce_s, times[2].root_reduce_s
    chunk0 = (layers[0] + root_first, layers[1], layers[2] + np.where(vpp == 1, root_last, 0.0))
    ends = np.stack([np.where(here, sync - lag, -np.inf) for here, sync, lag in zip(present, chunk0, lags)])

    # Interleaved: a chunk's sync after its last backward (the last micro-batch's) holds its stage
    # before the next chunk's backwards of the last group, which the last stage runs at once (the
    # last group's first micro-batch left the first stage's chunk c + 1 pp micro-batches before),
    # and whose chain down the stages the others' syncs hold as long: the slowest stage's sync of
    # each chunk boundary c >= 1 is on the path (sim.pipeline schedules the same).
    def slowest(syncs):
        return np.max(np.stack([np.where(here, sync, 0.0) for here, sync in zip(present, syncs)]), axis=0)
    later = slowest((layers[0], layers[1], layers[2] + root_last)) + np.maximum(vpp - 2, 0) * slowest(layers)
    return np.max(ends, axis=0) + np.where(vpp > 1, later, 0.0)


def _spread(values, at: np.ndarray, n: int) -> np.ndarray:
    """`values` at the rows `at` of n, 0 elsewhere."""
    out = np.zeros(n)
    out[at] = values
    return out


def _fill_stages(by_stage, bare, fwd_layer_s, vpp, middle_end_share=1.0):
    """cost.pipeline_fill's stages: the first stage's chunk 0 (its buckets and the embedding's,
    exposed behind its chunk forward, of its own layers' `fwd_layer_s`, as cost.dp_exposure.
    hidden_behind), the later stages' whole before their first forward; the last stage's output
    layer with its last chunk, a middle stage's short end chunk (`middle_end_share` of a full
    one's layers, dp_once.chunked_exposed_s) its last: the rest of its gathers, its other chunks
    full ones (chunk 0's gather a full chunk's, a chunk's forward a full chunk's)."""
    short = np.asarray(middle_end_share) < 1
    stages = []
    for i, s in enumerate(by_stage):
        t = s.times
        total, chunk = t.param_all_gather_s, t.chunk_all_gather_s
        head = (0.0, np.where(short, total - vpp * chunk, 0.0), np.maximum(0.0, total - vpp * chunk))[i]
        own = np.maximum(0.0, total - (vpp - 1) * chunk - head)
        shown = hidden_behind(own, s.layers * fwd_layer_s[0] / vpp, t.first_all_gather_s, True) if i == 0 else own
        # A chunk's forward before the last (the last stage's last holds the output layer's).
        fwd = ((bare[i].forward_s - bare[i].last_fwd_s) / np.maximum(vpp - 1, 1) if i == 2 else
               bare[i].forward_s / (vpp - 1 + np.asarray(middle_end_share)) if i == 1 else bare[i].forward_s / vpp)
        stages.append(FillStage(shown, own, chunk, head, fwd))
    return stages


def finish_lags_s(bare: tuple[StageBlocks, StageBlocks, StageBlocks], middles, micro_batches, vpp):
    """(0, the first middle stage's lag, the last stage's): how long before the first stage's last
    backward ends each one's does, from what each stage waits for at the end of Megatron's
    schedule (pipeline_parallel/schedules.py, d98e8a6), over the stages' `bare` blocks
    (pipeline_blocks.bare_blocks; b_0 is the first stage's chunk-0 backward, with the
    embedding's). Each stage's last backward follows the one above's (the drain), and the first
    stage's also its own last J = min(pp, m) backwards, which pile up behind the stages above
    where it is the slower (pipeline.pile_up_s); a later stage running behind its own backlog ends
    later. Vectorized over candidates."""
    one = np.asarray(vpp) == 1
    ends = [np.where(one, plain, chunked) for plain, chunked in
            zip(_plain_ends_s(bare, middles, micro_batches), _chunked_ends_s(bare, middles, micro_batches))]
    return (0.0, ends[0] - ends[1], ends[0] - ends[2])


def _chunked_ends_s(bare, middles, micro_batches):
    """The interleaved schedule's (first, first middle, last) stage's last backward ends, from the
    end of the first stage's last chunk-1 backward: every rank ends on the last group's J chunk-0
    backwards, after its chunk-1 ones (get_schedule_table lines 989-1016; backwards in reverse
    chunk order, get_model_chunk_id lines 1244-1249), and the last stage's chunk-0 backward of
    micro-batch i waits for the first stage's chunk-1 backward of it (the next virtual stage).
    The last micro-batch then runs down the stages (b, b_L: a middle and the last stage's chunk
    blocks), unless a stage is still running its own J chunk-0 backwards, which it started no
    earlier than its chunk-1 backward of the last micro-batch, the chunk-1 blocks below it (d,
    the first stage's) before the origin. The first stage ends J b_0 after the origin, or b_0
    after the stage above, whose last J backwards reach it b_top apart (the slowest block above)
    where they ran back to back there."""
    n, jobs, c, b, b_last = _stage_terms(bare, middles, micro_batches)
    d = bare[0].last_bwd_s
    end_last = np.maximum(b_last, jobs * b_last - d - n * b)
    end_mid = np.maximum(end_last + n * b, jobs * b - d)
    above = np.where(n > 0, end_mid, end_last)
    top = np.maximum(b, b_last)
    return np.maximum(above + c + pile_up_s(c, jobs, charged_s=top), jobs * c), end_mid, end_last


def _plain_ends_s(bare, middles, micro_batches):
    """1F1B's (first, first middle, last) stage's last backward ends, from the step's start: rank
    r runs min(pp - r - 1, m) forwards, then a forward and a backward in turn, then the rest of
    its backwards (lines 2276-2279, 2378-2452). Each stage's end is the longest of the paths that
    ride one stage from its first block: the first stage's m forwards and backwards (f_0, b_0),
    or its forwards up to its last one, m - J backwards among them, then micro-batch m - 1 up and
    down the stages; the last stage's m laps after micro-batch 0's forwards below it; the last
    middle stage's m laps, or up to its last forward (m - 2 backwards among them) then the last
    stage's lap, or the first stage's last forward up to it then its last min(2, m) backwards
    (pp - r of them follow a rank's last forward). The first stage's last J backwards reach it
    from the stage above no closer together than the slowest stage above runs a lap, or its own
    forwards (Delta), and pile up where b_0 is longer: Narayanan et al. 2021 (arXiv 2104.04473,
    section 2.2.1), the slowest stage paces."""
    first, middle, last = bare
    n, jobs, c, b, b_last = _stage_terms(bare, middles, micro_batches)
    m = np.asarray(micro_batches, dtype=np.float64)
    has_mid = n > 0
    f0, f, f_last = first.forward_s, np.where(has_mid, middle.forward_s, 0.0), last.forward_s
    fill_mid = f0 + np.maximum(n - 1, 0) * f  # micro-batch 0 reaches the last middle stage
    last_fwd_first = m * f0 + (m - jobs) * c
    last_fwd_mid = fill_mid + m * f + np.maximum(m - 2, 0) * b
    end_last = reduce(np.maximum, [f0 + n * f + m * (f_last + b_last), last_fwd_first + n * f + f_last + b_last,
                                  np.where(has_mid, last_fwd_mid + f_last + b_last, -np.inf)])
    # The last middle stage's own laps, or its last min(2, m) backwards after the first stage's last
    # forward reaches it; then down the middle stages.
    own_mid = np.maximum(fill_mid + m * (f + b), last_fwd_first + n * f + np.minimum(2, m) * b)
    end_mid = np.maximum(end_last + n * b, np.where(has_mid, own_mid + np.maximum(n - 1, 0) * b, -np.inf))
    delta = reduce(np.maximum, [f0, f_last + b_last, np.where(has_mid, f + b, 0.0)])
    above = np.where(has_mid, end_mid, end_last)
    return np.maximum(above + c + pile_up_s(c, jobs, charged_s=delta), m * (f0 + c)), end_mid, end_last


def _stage_terms(bare, middles, micro_batches):
    """(middle stages, J = min(pp, m), b_0, a middle stage's chunk-0 backward (0 without one),
    the last stage's)."""
    first, middle, last = bare
    n = np.asarray(middles, dtype=np.float64)
    b = np.where(n > 0, middle.first_bwd_s, 0.0)
    return n, np.minimum(n + 2, micro_batches), first.first_bwd_s, b, last.first_bwd_s

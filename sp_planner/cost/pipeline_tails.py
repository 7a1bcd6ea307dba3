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


import numpy as np

from sp_planner.columns import take_rows
from sp_planner.cost.dp_exposure import Edges, hidden_behind
from sp_planner.cost.dp_once import once_a_step_s
from sp_planner.cost.dp_times import StageTimes
from sp_planner.cost.overlap import Overlap, chunk_gathers_ahead
from sp_planner.cost.pipeline_blocks import bare_blocks
from sp_planner.cost.pipeline_stages import StageDP, stage_edges
from sp_planner.cost.pipeline_fill import FillStage, fill_s
from sp_planner.cost.pipeline_lags import finish_lags_s, first_stage_phases_s
from sp_planner.pipeline import StageLayers, per_stage, stage_chunk
from sp_planner.pipeline_order import micro_batch_group
from sp_planner.pipeline_chunks import chunk_shape


def stage_tails_dp_s(overlap: Overlap, c, *, stages: StageLayers, times: tuple[StageTimes, ...], per_layer_s,
                     logits_s, ahead_s, first_s, fwd_layer_s, bwd_layer_s,
                     edges: Edges, micro_batches, slowdown: float = 0.0, tied_s=0.0,
                     middle_rank=1.0, middle_drain_s=0.0, first_chunks_bwd_s=None) -> tuple[np.ndarray, np.ndarray]:
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
    middle_drain_s: the drain's chunk-0 backwards of the ranks between). `first_chunks_bwd_s`: the
    first stage's chunk 0 and last chunk's layers' backward from their own kinds (cost.
    stage_layer_times.first_chunks_bwd_s), which its drain's blocks take where given."""
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
    if first_chunks_bwd_s is not None:
        # The first stage's drain blocks from its chunks' own layers (DeepSeek-V3's dense layers
        # in its chunk 0), with the embedding's backward in chunk 0 as compute_blocks adds it.
        own0, own_last = (sub(v) for v in first_chunks_bwd_s)
        first = bare[0]
        bare = (first._replace(first_bwd_s=np.where(np.isnan(own0), first.first_bwd_s, own0 + row_edges.bwd_tail_s),
                               last_bwd_s=np.where(np.isnan(own_last), first.last_bwd_s, own_last)), *bare[1:])
    # Each stage's last backward ends this long before the first stage's. The middle stage whose
    # calls these are (`middle_rank`, cost.stage_params.dp_middle_stage) launches its chunks' syncs
    # as its rank does (once_a_step_s) and ends its last backward the drain's chunk-0 backwards of
    # the ranks between before stage 1's (`middle_drain_s`).
    rank = sub(middle_rank)
    group = np.take(np.asarray(c.vpp_group), rows)  # the plans' own micro-batch groups (0: the one priced)
    lags = finish_lags_s(bare, middles, sub(micro_batches), chunks, group)
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
                        for part in fill_s(*fill_stages, middles=middles[at], pp=pp[rows][at], vpp=chunks[at],
                                           group=micro_batch_group(pp[rows][at], sub(micro_batches)[at], group[at])))
    # The first stage's chunk phases in the drain, which its syncs' queue hides behind.
    phases = first_stage_phases_s(bare, middles, sub(micro_batches), group)
    # Without virtual stages the first stage's first bucket holds its last layer's gradients
    # (buckets in backprop order, cost.buckets), issued once that layer's backward ends
    # (register_grad_ready, Megatron-LM d98e8a6): its queue starts that late, and the embedding's
    # backward after its first layer's (Edges.bwd_tail_s) hides it longer. One layer: a lower
    # bound where the first bucket spans more. Later stages hold one bucket: unhideable whole.
    # Negative where the embedding's backward outlasts a layer's (a large vocabulary on a thin
    # layer): the queue runs beside it to the stage's compute end, a window longer than the
    # layers' by the difference, as the simulator runs it (sim.layer_program.stage_backward);
    # not clipped (tests/cost/test_pipeline_tails.py).
    lead0 = np.where(chunks == 1, bwd_s[0] - row_edges.bwd_tail_s, 0.0)
    start, tails, busy = [], [], []
    for i, s in enumerate(by_stage):
        t = s.times
        reduce0, reduce1, gather = once_a_step_s(overlap, zero=z, layers=s.layers, times=t,
                                                 fwd_window_s=s.layers * fwd_s[i], bwd_window_s=s.layers * bwd_s[i],
                                                 chunks=chunks, pp=pp[rows], edges=stage_edges(row_edges, i),
                                                 rank=(0, rank, pp[rows] - 1)[i], end_share=end_share[i],
                                                 phases_s=phases if i == 0 else None,
                                                 micro_batches=sub(micro_batches), vpp_group=group,
                                                 grad_lead_s=lead0 if i == 0 else 0.0)
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

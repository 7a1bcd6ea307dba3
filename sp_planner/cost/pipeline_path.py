"""The critical path of a pipelined step over its stages' blocks: the longest of a few paths of the
schedule's block graph, each riding one stage through its m cycles. Over the compute's blocks
it is every pipeline's bubble (cost.step); ZeRO-2/3's per-micro-batch traffic lengthens them
(cost.pipeline_blocks, cost.pipeline_dp).

Megatron's schedule (megatron/core/pipeline_parallel/schedules.py d98e8a6): rank r runs W_r
warm-up forwards, W_r = pp - r - 1 (vpp 1) or 2 (pp - r - 1) + (vpp - 1) pp (lines 955-965), all
m vpp of them where that is more (lines 976-978), then a forward and a backward in turn, then the
remaining backwards; the interleaved schedule runs groups of pp micro-batches chunk by chunk,
forward in order and backward in reverse (get_schedule_table, lines 989-1016; get_model_chunk_id,
lines 1244-1249; pipeline_order.stage_order). A cycle is a stage's micro-batch forward and
backward with the data-parallel exposure that ends each backward (cost.pipeline_blocks); f, b are
a chunk's forward and backward blocks. Riding stage p (the first, the last middle one, the last;
where the middle stages differ, the heaviest middle one at its own rank, the lighter ones above
it at their own blocks: pipeline_groups.Ridden):

- held: p runs from its first block on: micro-batch 0's chunk-0 forward through the stages below
  p on the way in, the last one's chunk-0 backward through them on the way out (with equal
  stages, Narayanan et al. 2021's interleaved bubble: arXiv 2104.04473, section 2.2.2), the
  first group's chunk-0 forwards piled up on the slowest stage at or below p (pipeline.pile_up_s);
- waiting: p's first backward (micro-batch 0's last chunk) waits for a turn through a later stage
  q, whose first backward follows its own W_q + 1 forwards, the last relayed from p (a middle q:
  either side of the kink pipeline.rank_running finds, or the last middle one; or the last
  stage), p's forwards meanwhile off the path:
      sum_{p<k<=q} (f_k + b_k) - (p's forwards min(W_q + 1, m vpp) to min(W_p + 1, m vpp), each
      its chunk's: pipeline.chunk_forwards_s),
  or for micro-batch 0's forward through every virtual stage and its backward back down; the
  last micro-batch turns through the last stage the same way, p's backwards meanwhile off the
  path (both turns where p's last forward follows its first backward, else the longer); with two
  groups or more, p may wait instead for the second group's first chunk-1 forward, which the last
  stage sends after its first group's last-chunk backwards (wrap_s);
- interleaved groups pile up (pipeline.pile_up_s, a flow shop of J = min(pp, m) jobs): the
  waiting path may ride a slower stage above p through the first group's last-chunk backwards
  (each with the forward beside it), and any path a slower stage below p through the last
  group's chunk-0 backwards; with two groups or more, p's way out may ride the last stage again
  through the last group's last-chunk laps (again_s), whose forward holds the output layer's;
  with three groups or more, each group's first chunk-1 forward but the second's waits for the
  last stage's laps of the group before's last chunk (between_s); at each boundary between
  groups the last middle stage's first backward of the next group's chunk vpp - 2 waits for a
  chain relayed down the lower stages and round through the last stage (descent_s).

ZeRO-2's overlapped gathers ride each chunk's first forward: a path holds the ridden stage's and
those of the first forwards it relays. The step is the longest path: it moves continuously where
the pacing stage changes, as the simulator's (sim.pipeline, which times every block of the same
graph) does. At vpp 1 chunks are whole stages and no group piles up. Vectorized over candidates.
"""

from __future__ import annotations

from functools import reduce
from itertools import accumulate
from typing import NamedTuple

import numpy as np

from sp_planner.columns import take_rows
from sp_planner.pipeline import (
    StageLayers,
    chunk_forwards_s,
    forwards_before_backward,
    per_stage,
    pile_up_s,
    rank_running,
    remembered_chunk_counts,
    stage_chunk,
)
from sp_planner.cost.pipeline_groups import Ridden, again_s, below_s, between_s, descent_s, last_middle, wrap_s
from sp_planner.pipeline_chunks import end_chunk_layers
from sp_planner.pipeline_order import last_group, micro_batch_group

# reduce(np.maximum, [...]): np.maximum.reduce's left-to-right fold without stacking the list (2x faster).


class StageBlocks(NamedTuple):
    """One kind of pipeline stage's blocks of one micro-batch (arrays over candidates)."""

    num_stages: np.ndarray | float  # stages of this kind (0: none)
    cycle_s: np.ndarray  # forward and backward with the data-parallel exposure
    chunk0_s: np.ndarray  # its chunk 0's forward and backward with exposure (the held path's fill and drain)
    forward_s: np.ndarray  # its forwards of every chunk, with ZeRO-3's gathers
    first_bwd_s: np.ndarray  # chunk 0's backward block (the drain's)
    last_bwd_s: np.ndarray  # the last chunk's backward block (the first group's)
    gather_s: np.ndarray | float  # ZeRO-2's overlapped gathers its chunks' first forwards expose, all chunks
    last_fwd_s: np.ndarray  # the last chunk's forward block (the last stage's with its output layer's and loss's)


def compute_blocks(layers, compute_s, num_stages, bwd_extra_s, *, fwd_layer_s, bwd_layer_s, vpp):
    """The first, middle and last stages' blocks of one micro-batch without data-parallel traffic,
    from each one's decoder `layers`, micro-batch `compute_s` (forward and backward), count and
    backward beyond its layers (`bwd_extra_s`: the first stage's embedding's, which runs with its
    chunk 0, the one chunk block on the fill and drain that holds it whole; the last stage's loss
    and output layer's, with its last chunk); chunks split a stage's layers evenly (Megatron's
    interleaved placement; the counted split's layer fewer and the layout's rest in the end chunks,
    pipeline_chunks.end_chunk_layers), one chunk at
    vpp 1 (`fwd_layer_s`, `bwd_layer_s`: a layer's forward and backward, one for every stage or
    each stage's own, pipeline.per_stage). A stage's forward beyond its layers' goes with the same
    chunk: the last stage's output layer and loss are its last virtual stage's (Megatron's get_model
    builds the chunks with post_process only there and pre_process only on the first's chunk 0:
    megatron/training/training.py lines 2390-2399, d98e8a6; sim.layer_program times them so), the
    first's embedding its chunk 0's."""
    vpp = np.asarray(vpp)
    whole = vpp == 1  # one chunk: both extras in its backward
    # An end stage not divisible by vpp fills full chunks of a middle stage's (pipeline.stage_chunk).
    chunk = stage_chunk(layers[0], layers[1], layers[2], np.asarray(num_stages[1]) + 2, vpp)
    out = []
    by_stage = zip(num_stages, compute_s, bwd_extra_s, per_stage(fwd_layer_s), per_stage(bwd_layer_s))
    for i, (n, c, extra, fwd_layer, bwd_layer) in enumerate(by_stage):
        c = np.asarray(c, dtype=np.float64)
        first_n, last_n = end_chunk_layers(layers[i], vpp, first_stage=i == 0, chunk=chunk)
        first_bwd = first_n * bwd_layer + (extra if i == 0 else extra * whole)
        last_bwd = last_n * bwd_layer + (extra if i == 2 else extra * whole)
        chunk0 = (c / vpp + (first_n - layers[i] / vpp) * (fwd_layer + bwd_layer)
                  + (extra - extra / vpp if i == 0 else 0.0))
        forward = c - layers[i] * bwd_layer - extra
        beyond = forward - layers[i] * fwd_layer  # the embedding's or the output layer's and loss's
        last_fwd = last_n * fwd_layer + (beyond if i == 2 else beyond * whole)
        out.append(StageBlocks(n, c, chunk0, forward, first_bwd, last_bwd, 0.0, last_fwd))
    return tuple(out)


def compute_path_s(stages: StageLayers, pp, vpp, micro_batches, *, compute_s, bwd_extra_s, fwd_layer_s, bwd_layer_s,
                   vpp_group=None):
    """The critical path over the stages' compute blocks (compute_blocks of `stages`' layers): what
    cost.step's bubble and cost.pipeline_dp's traffic are each reckoned beyond; NaN without a
    pipeline. Priced on the pipelined rows alone (the formulas are per row, columns.take_rows).
    `vpp_group`: critical_path_s's."""
    n = np.size(pp)
    piped = np.flatnonzero(np.asarray(pp) > 1)
    out = np.full(n, np.nan)
    if not len(piped):
        return out
    rows = take_rows(dict(layers=tuple(stages), compute_s=compute_s, bwd_extra_s=bwd_extra_s, fwd_layer_s=fwd_layer_s,
                          bwd_layer_s=bwd_layer_s, pp=np.asarray(pp), vpp=np.broadcast_to(vpp, (n,)),
                          m=np.broadcast_to(micro_batches, (n,)),
                          group=np.broadcast_to(0 if vpp_group is None else vpp_group, (n,))), piped, n)
    blocks = compute_blocks(rows["layers"], rows["compute_s"], (1.0, np.maximum(rows["pp"] - 2, 0), 1.0),
                            rows["bwd_extra_s"], fwd_layer_s=rows["fwd_layer_s"], bwd_layer_s=rows["bwd_layer_s"],
                            vpp=rows["vpp"])
    out[piped] = critical_path_s(blocks, rows["m"], rows["pp"], rows["vpp"], vpp_group=rows["group"])
    return out


def pipeline_bubble_s(path_s, pp, micro_batches, *, pace_s):
    """The pipeline's bubble: the compute's critical path `path_s` (compute_path_s) beyond m x
    `pace_s`, the pacing stage's micro-batch; 0 without a pipeline."""
    return np.where(np.asarray(pp) > 1, path_s - micro_batches * pace_s, 0.0)


def critical_path_s(stages: tuple[StageBlocks, StageBlocks, StageBlocks], micro_batches, pp, vpp,
                    relay: StageBlocks | None = None, ridden: Ridden | None = None, vpp_group=None,
                    first_gather0_s=None):
    """Seconds of the longest path (module docstring) over the first, middle and last stages.
    `relay`: the middle stages' mean blocks where they differ (cost.pipeline_dp: Maverick's in
    turn of two MoE layers a chunk and one), which the sums over the middle stages a path passes
    take (the fill's forwards and chunk-0 blocks, the drain's backwards, the turns through them);
    the ridden stage's cycles and the pile-ups the middle one's (the heaviest). None: the middle's.
    `ridden`: where the middle path rides the heaviest middle stage at its own rank, below the
    last middle one (cost.pipeline_groups.Ridden: the middle stages above it passed at their own
    blocks, those below at `relay`'s); None: it rides the last middle one. `first_gather0_s`: of
    the first stage's ZeRO-2 gathers (gather_s), its chunk 0's (the embedding's bucket with its
    first layer's, cost.dp_once.first_chunk_gather_s), which micro-batch 0's chunk-0 forward
    carries to the stages above; None: gather_s's chunk share."""
    m, pp, vpp = np.asarray(micro_batches, dtype=np.float64), np.asarray(pp), np.asarray(vpp)
    # Megatron's micro-batch group N (pipeline_order.micro_batch_group): pp where m % pp == 0, so that
    # every formula below reads as with groups of pp; else (odd rows) N, and a last group of r.
    group = micro_batch_group(pp, m, vpp_group)
    odd = None if group is pp else (vpp > 1) & (group != pp)
    last_size = pp if odd is None else last_group(pp, m, vpp_group)  # the last group's micro-batches
    first, middle, last = stages
    present = [np.asarray(s.num_stages) > 0 for s in stages]
    middles = np.asarray(middle.num_stages, dtype=np.float64)
    f = [s.forward_s / vpp for s in stages]  # a chunk's forward ...
    b = [(s.cycle_s - s.forward_s) / vpp for s in stages]  # ... and backward block
    lap = [s.last_fwd_s + s.last_bwd_s for s in stages]  # the last chunk's forward and backward
    # The last stage's other chunks' forwards (its output layer's in the last one's).
    f_last0 = np.where(vpp > 1, (last.forward_s - last.last_fwd_s) / np.maximum(vpp - 1, 1), last.forward_s)
    share = [s.gather_s / vpp for s in stages]  # the gathers of a chunk's first forward
    # The first stage's chunk 0's, which the fill's chunk-0 forwards below a stage carry.
    share0 = share[0] if first_gather0_s is None else first_gather0_s
    # Forwards before the first backward: the first stage, the last middle one, the last, and the
    # middle ranks either side of the first stage's kink (module docstring).
    ran0 = forwards_before_backward(pp, vpp, m, 0, group)
    kink = rank_running(pp, vpp, ran0, group)
    low, high = np.clip(np.floor(kink), 1, pp - 2), np.clip(np.ceil(kink), 1, pp - 2)
    ran_top, ran2, ran_low, ran_high = forwards_before_backward(pp, vpp, m, np.stack(np.broadcast_arrays(
        pp - 2, pp - 1, low, high)), group)
    mid = middle if relay is None else relay
    # The middle path's stage: the last middle one, or the heaviest at its own rank (`ridden`).
    last_one = ridden is None
    ridden = last_middle(middles, mid) if ridden is None else ridden
    ran1 = ran_top if last_one else forwards_before_backward(pp, vpp, m, ridden.rank, group)
    ran = (ran0, ran1, ran2)
    # The middle stages above the ridden one (none above the last): their last chunk's turn, its
    # first forward's gathers and its backward.
    above_mid = ridden.above
    over_lap, over_share, over_bwd = ((0.0, 0.0, 0.0) if last_one else
                                      tuple(ridden.over * x for x in (above_mid.last_fwd_s + above_mid.last_bwd_s,
                                                                      above_mid.gather_s / vpp, above_mid.last_bwd_s)))
    # Micro-batch 0's turn on the way in (with the gathers of the first forwards it relays), the
    # last one's on the way out, through the last stage or (micro-batch 0's) a middle rank q.
    lap_mid, f_mid, share_mid = mid.last_fwd_s + mid.last_bwd_s, mid.forward_s / vpp, mid.gather_s / vpp
    to_last = middles * lap_mid + lap[2]
    shares = middles * share_mid + share[2]
    # Each stage's chunk-0, middle and last chunk's forward (ZeRO-3's root units at either end).
    by_chunk = [(first.forward_s - (vpp - 1) * first.last_fwd_s, first.last_fwd_s, first.last_fwd_s),
                (*middle_chunk_forwards_s(middle, vpp), middle.last_fwd_s), (f_last0, f_last0, last.last_fwd_s)]
    # Six distinct forward counts, sixteen asked.
    counts = remembered_chunk_counts(None if odd is None else (m, group, last_size))

    def forwards_s(p, first_n, stop_n):  # p's forwards number first_n to stop_n - 1
        return chunk_forwards_s(by_chunk[p], f[p], pp, vpp, first_n, stop_n, counts)

    through = [np.where(present[1] & (q >= 1), q * lap_mid - forwards_s(0, n, ran0), 0.0)
               for q, n in ((low, ran_low), (high, ran_high), (pp - 2, ran_top))]
    turn_in = (reduce(np.maximum, [np.where(present[2], to_last + shares - forwards_s(0, ran2, ran0), 0.0), *through]),
               over_lap + over_share + lap[2] + share[2] - forwards_s(1, ran2, ran1), 0.0)
    turn_out = (np.where(present[2], to_last - (ran0 - ran2) * b[0], 0.0),
                over_lap + lap[2] - (ran1 - ran2) * b[1], 0.0)
    # Summed over the stages below p: chunk-0 blocks both ways (the held path's), the forward alone
    # (the way in, with the gathers' chunk share) and the backward alone (the way out); micro-batch
    # 0's last-chunk backward down to p, its forward through every stage.
    under = ridden.under
    below = below_s(middles, first.chunk0_s + share0, mid.chunk0_s + share_mid, under=under)
    up_to = below_s(middles, f[0] + share0, f_mid + share_mid, under=under)
    drain = below_s(middles, first.first_bwd_s, mid.first_bwd_s, under=under)
    above = (middles * mid.last_bwd_s + np.where(present[2], last.last_bwd_s, 0.0),
             over_bwd + last.last_bwd_s, 0.0)
    every = sum(np.asarray(s.num_stages, dtype=np.float64) * (s.forward_s + s.gather_s) for s in (first, mid, last))
    # The groups' pile-ups (pipeline.pile_up_s): the first group's last-chunk jobs, each stage's
    # backward and the forward it runs beside it where it has forwards left, on the slowest stage
    # at or above p; the last group's chunk-0 backwards on the slowest at or below it.
    jobs = np.where(vpp > 1, np.minimum(group, m), 1)  # the first group's
    last_jobs = jobs if odd is None else np.where(vpp > 1, last_size, 1)  # the last group's
    beside = (f[0], f[1], last.last_fwd_s)  # the last stage's first-group forwards are its last chunk's
    first_laps = [s.last_bwd_s + fk * np.clip((m * vpp - r) / np.maximum(jobs - 1, 1), 0.0, 1.0)
                  for s, fk, r in zip(stages, beside, ran)]
    above_max = list(accumulate([np.where(k, x, 0.0) for k, x in zip(present, first_laps)][::-1], np.maximum))[::-1]
    below_max = list(accumulate([np.where(k, s.first_bwd_s, 0.0) for k, s in zip(present, stages)], np.maximum))
    # The first group's chunk-0 forwards, back to back on the held path, on the slowest at or below p.
    fwd_below_max = list(accumulate([np.where(k, x[0], 0.0) for k, x in zip(present, by_chunk)], np.maximum))
    # The second group's first forward through chunk 1, sent by the last stage after its first
    # group's last-chunk laps (wrap_s); the last group's last-chunk laps on the last stage, which
    # p's backwards wait for (again_s), and every group's before it but the first, which p's next
    # group's chunk-1 forward waits for (between_s): 0 on every row without virtual stages.
    wrap = again = between = descent = (0.0, 0.0, 0.0)
    if np.any(vpp > 1):
        wrap, again, between, descent = group_waits(stages, f, b, lap, share, ran, middles, pp, vpp, m,
                                                    f_last0=f_last0, by_chunk=by_chunk, ridden=ridden, mid=mid)
        if odd is not None:  # the odd rows' groups of N (pipeline_groups' `group`, `last`)
            waits = group_waits(stages, f, b, lap, share, ran, middles, pp, vpp, m, f_last0=f_last0, by_chunk=by_chunk,
                                ridden=ridden, mid=mid, group=group, last=last_jobs)
            wrap, again, between, descent = (tuple(np.where(odd, x, y) for x, y in zip(new, old))
                                             for new, old in zip(waits, (wrap, again, between, descent)))
    paths = []
    for p, s in enumerate(stages):
        fill_pile = pile_up_s(above_max[p], jobs, charged_s=first_laps[p])
        drain_pile = pile_up_s(below_max[p], last_jobs, charged_s=s.first_bwd_s)
        start = np.maximum(up_to[p] + s.gather_s + np.maximum(turn_in[p], 0.0),
                           every + above[p] - forwards_s(p, 0, ran[p]))
        end = np.maximum(np.maximum(turn_out[p], again[p]), 0.0)
        # Both turns where p's last forward follows its first backward, else the longer; the last
        # micro-batch's after the first group's pile-up where it is another group's.
        both = np.where(ran[p] < m * vpp, end, 0.0)
        waiting = reduce(np.maximum, [start + fill_pile + np.where(m > group, both, 0.0), start + both,
                                     up_to[p] + s.gather_s + wrap[p] + both, up_to[p] + s.gather_s + end]) + between[p]
        held = below[p] + s.gather_s + pile_up_s(fwd_below_max[p], jobs, charged_s=by_chunk[p][0])
        path = np.maximum(held, waiting + drain[p]) + m * s.cycle_s + drain_pile + descent[p]
        paths.append(np.where(present[p], path, -np.inf))
    return reduce(np.maximum, paths)


def group_waits(stages, f, b, lap, share, ran, middles, pp, vpp, m, *, f_last0, by_chunk, ridden: Ridden, mid,
                group=None, last=None):
    """(wrap, again, between, descent): cost.pipeline_groups' waits for the first and the middle
    path (0 for the last), in micro-batch groups of pp, or of `group` with a last one of `last`."""
    wrap = tuple(wrap_s(p, stages, f, b, lap, share, ran, middles, pp, vpp, m, f_last0=f_last0,
                        chunk0_fwd=by_chunk[p][0], ridden=ridden, group=group) for p in (0, 1)) + (0.0,)
    again = tuple(again_s(p, stages, lap, f, middles, pp, vpp, m, ridden=ridden, group=group, last=last)
                  for p in (0, 1)) + (0.0,)
    between = tuple(between_s(p, stages, lap, middles, pp, vpp, m, f_last0=f_last0, chunk0_fwd=by_chunk[p][0],
                              ridden=ridden, group=group, last=last) for p in (0, 1)) + (0.0,)
    descent = (0.0, descent_s(stages, middles, pp, vpp, m, mid=mid, over=ridden.over, group=group, last=last), 0.0)
    return wrap, again, between, descent


def middle_chunk_forwards_s(middle: StageBlocks, vpp) -> tuple[np.ndarray, np.ndarray]:
    """A middle stage's (chunk 0's, a chunk between's) forward block. Its end chunk is its last
    (pipeline_chunks.end_chunk_layers: a stage of 13 layers over vpp 4 runs 4 / 4 / 4 / 1), so
    the chunks before it are full, each its share of the rest; an even stage's chunk 0 is the
    rest of its last chunks' (the same seconds, to the last bit as before)."""
    vpp = np.asarray(vpp)
    rest = middle.forward_s - (vpp - 1) * middle.last_fwd_s
    full = np.where(vpp > 1, (middle.forward_s - middle.last_fwd_s) / np.maximum(vpp - 1, 1), middle.forward_s)
    even = np.isclose(full, middle.last_fwd_s, rtol=1e-12, atol=0.0)
    return np.where(even, rest, full), np.where(even, middle.last_fwd_s, full)

"""ZeRO-2/3 traffic in a pipeline: what each stage's per-micro-batch exposure costs the step.

ZeRO-2/3 reduce-scatter every micro-batch's gradients (ZeRO-3 also gathers its parameters), and
a stage's backward ends only when that traffic has left (cost.dp_exposure.micro_batch_dp_s). Under
1F1B every stage runs one forward and one backward per micro-batch in lock step (Narayanan et al.
2021, section 2.2.1), so the step lasts (m - 1) cycles of the slowest stage, the cycle being a
micro-batch's compute plus the data-parallel exposure of that stage, plus one cycle of every
stage on the way in and out (the bubble). A stage's exposure therefore repeats m - 1 times only
on the pacing stage; a stage with slack (the first one, which lacks the loss and output layer)
absorbs its own and pays it once, on the fill and the drain:

    exposed = (m - 1) (max_k (C_k + e_k) - max_k C_k) + sum_k e_k

(C_k, e_k: stage k's compute and exposure of one micro-batch, each stage counted once; with pp 1
it is m e). Each stage holds its own non-layer parameters (cost.buckets.stage_extras): the first
stage's embedding gradients leave after its last layer (never hidden), the last stage's output
layer's before its layers' backward (hidden behind them) while ZeRO-3's first gather of the last
stage hides behind the loss and output layer's backward (cost.layerwise.layerwise_exposed_s). The
interleaved schedule (vpp model chunks a stage) runs each chunk as its own forward and backward,
each exposing its own first gather and last reduce-scatter (cost.dp_exposure.micro_batch_dp_s). Its
bubble is (pp - 1) chunk blocks (Narayanan et al. 2021, section 2.2.2): the pacing stage runs all
its m x vpp blocks, and every other stage adds one chunk's forward on the fill and one chunk's
backward on the drain, both chunk 0 (a stage's first forward and its last backward: Megatron's
schedule table, schedules.py get_schedule_table, runs micro-batch 0 through chunk 0 first and the
chunks' backward in reverse), which holds the first stage's embedding:

    exposed = (m - e0_p/e_p) (max_k (C_k + e_k) - max_k C_k) + sum_k e0_k

(e0_k: stage k's chunk 0 exposure of one micro-batch, its layers' share of the stage's traffic
with the first stage's embedding; e0 = e at vpp 1, the formula above; e0_p/e_p the pacing stage's
chunk-0 share, whose chunk 0 the sum holds). With equal stages it is (m + (pp - 1)/vpp) e: the
bubble's share of the exposure is the bubble's share of the compute. The drain's last micro-batch
group adds a slower stage's chunk-0 backward pp - 1 times (_critical_path_s). Vectorized over
candidates.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.columns import take_rows
from sp_planner.cost.dp_exposure import DPTimes, Edges, chunks_gather_s, micro_batch_dp_s, zero3_forward_s
from sp_planner.cost.dp_times import StageTimes
from sp_planner.cost.overlap import Overlap
from sp_planner.pipeline import StageLayers, drain_pile_up_s

# The loss and output layer's backward, of their forward and backward: backward = 2 x forward
# (Narayanan et al. 2021), as cost.step times the logits GEMMs (3 x forward).
LOSS_BACKWARD_SHARE = 2 / 3


class StageDP(NamedTuple):
    """One kind of pipeline stage (first, middle, last) of the pipelined candidates."""

    times: DPTimes  # its data-parallel calls (cost.dp_times)
    layers: np.ndarray
    compute_s: np.ndarray  # one micro-batch's forward and backward, without data-parallel traffic
    ahead_s: np.ndarray | float  # compute before its first layer's backward (the loss and output layer)
    num_stages: np.ndarray | float  # stages of this kind


def pipelined_dp_s(overlap: Overlap, c, *, stages: StageLayers, times: tuple[StageTimes, ...], per_layer_s,
                   logits_s, ahead_s, first_s, fwd_layer_s, bwd_layer_s, micro_batches, reshard,
                   edges: Edges) -> tuple[np.ndarray, np.ndarray]:
    """(exposed, hidden) seconds per step of ZeRO-2/3's per-micro-batch traffic: exposed on the
    pipeline's critical path (module docstring), hidden on the first stage, whose drain ends the
    step; NaN where it is the stage's own m x e (a single stage, ZeRO-0/1).
    `times` are the first, a middle and the last stage's calls (cost.dp_times.dp_stage_times);
    per_layer_s a layer's micro-batch, logits_s the last stage's work beyond its layers (the loss
    and output layer's, forward and backward), ahead_s its part before the first layer's backward,
    first_s the first stage's beyond its layers (the embedding's TP collectives and gradient passes;
    its backward part is edges.bwd_tail_s), fwd/bwd_layer_s a layer's windows and `edges` the work
    beside a chunk's data-parallel edges (cost.step, cost.dp_exposure.Edges)."""
    pp, zero, vpp = np.asarray(c.pp), np.asarray(c.zero), np.asarray(c.vpp)
    n = len(pp)
    out, hidden = np.full(n, np.nan), np.full(n, np.nan)
    groups = _groups(zero, vpp, pp > 1)
    rows = np.concatenate([index for *_, index in groups])
    if not len(rows):
        return out, hidden

    def sub(values):
        values = np.asarray(values)
        if values.shape == (n,):
            return np.take(values, rows).astype(np.float64, copy=False)
        return np.broadcast_to(np.asarray(values, dtype=np.float64), (n,))[rows]

    split = StageLayers(*(sub(v) for v in stages))
    first, middle, last = (stage.at(rows) for stage in times)
    layer_s, loss_s = sub(per_layer_s), sub(logits_s)
    by_stage = (
        StageDP(first, split.first, split.first * layer_s + sub(first_s), 0.0, 1.0),
        StageDP(middle, split.middle, split.middle * layer_s, 0.0, np.maximum(pp[rows] - 2, 0)),
        StageDP(last, split.last, split.last * layer_s + loss_s, sub(ahead_s), 1.0),
    )
    kw = dict(stages=by_stage, reshard=sub(reshard).astype(bool), edges=Edges(*(sub(v) for v in edges)),
              fwd_layer_s=sub(fwd_layer_s), bwd_layer_s=sub(bwd_layer_s), vpp=sub(c.vpp),
              micro_batches=sub(micro_batches))
    start = 0
    for z, interleaved, index in groups:
        part = slice(start, start + len(index))
        start = part.stop
        if not len(index):
            continue
        g = take_rows(kw, part, len(rows))
        exposed, (own, busy) = _group_exposed_s(overlap, zero=z, interleaved=interleaved, **g)
        # ZeRO-2's parameters gathered behind the step's first forward where overlapped
        # (cost.overlap): every stage's first forward is on the fill; dp_exposed_s counts the first's.
        later = 0.0
        if z == 2 and overlap.param_gather:
            later = sum(s.num_stages * chunks_gather_s(s.times, s.layers * g["fwd_layer_s"], s.layers, g["vpp"], True)
                        for s in g["stages"][1:])
        out[index] = exposed + later
        # The step ends on the first stage's drain, slowed by the traffic it hid (cost.overlap).
        hidden[index] = g["micro_batches"] * (busy - own)
    return out, hidden


def _groups(zero, vpp, rows) -> list[tuple[int, bool, np.ndarray]]:
    """(ZeRO stage, interleaved, indices) of the `rows` (a mask) under ZeRO-2/3, by ZeRO stage and
    by schedule (vpp > 1: interleaved 1F1B): the formulas are per candidate, and each group takes
    only its own branches of them (the other ZeRO stage's, the interleaved fill and drain's)."""
    zero, interleaved = np.asarray(zero), np.asarray(vpp) > 1
    return [(z, i, np.flatnonzero(rows & (zero == z) & (interleaved == i))) for z in (2, 3) for i in (False, True)]


def pipelined_exposed_s(overlap: Overlap, *, zero, micro_batches, vpp, stages: tuple[StageDP, ...], fwd_layer_s,
                        bwd_layer_s, reshard, edges: Edges | None = None):
    """Exposed seconds per step of ZeRO-2/3's per-micro-batch traffic on the critical path of a
    pipeline of `stages` (module docstring); fwd/bwd_layer_s are one layer's forward / backward
    window of one micro-batch. ZeRO-2/3 rows (zero, vpp: arrays of the candidates); NaN elsewhere."""
    zero, vpp = np.broadcast_arrays(np.asarray(zero), np.asarray(vpp))
    out = np.full(zero.shape, np.nan)
    kw = dict(micro_batches=micro_batches, vpp=vpp, stages=stages, fwd_layer_s=fwd_layer_s, bwd_layer_s=bwd_layer_s,
              reshard=reshard, edges=edges or Edges(0.0, 0.0, 0.0))
    for z, interleaved, index in _groups(zero, vpp, True):
        if len(index):
            rows = take_rows(kw, index, len(zero))
            out[index] = _group_exposed_s(overlap, zero=z, interleaved=interleaved, **rows)[0]
    return out


def _group_exposed_s(overlap: Overlap, *, zero: int, interleaved: bool, micro_batches, vpp,
                     stages: tuple[StageDP, ...], fwd_layer_s, bwd_layer_s, reshard, edges: Edges):
    """The critical path's exposed seconds per step (module docstring) and the first stage's
    (exposed, busy) seconds of one micro-batch's traffic, of candidates of one ZeRO stage `zero`
    (2 or 3) and one schedule (`interleaved`: every vpp > 1; else every vpp 1)."""
    kw = dict(zero=zero, vpp=vpp, stages=stages, fwd_layer_s=fwd_layer_s, bwd_layer_s=bwd_layer_s, reshard=reshard,
              edges=edges)
    traffic = _stage_traffic(overlap, **kw)
    exposure = [exposed for exposed, _ in traffic]
    if not interleaved:
        # At vpp 1 chunk 0 is the whole stage (its exposure) and the drain keeps the pace (0 more).
        return _critical_path_s(stages, exposure, micro_batches, vpp) + 0.0, traffic[0]
    edge = _chunk0_traffic(overlap, **kw)
    drain = _chunk0_backward_s(overlap, stages=stages, edge=edge, zero=zero, vpp=vpp, fwd_layer_s=fwd_layer_s,
                               bwd_layer_s=bwd_layer_s, edges=edges)
    return _critical_path_s(stages, exposure, micro_batches, vpp, edge, drain), traffic[0]


def _stage_traffic(overlap: Overlap, *, zero, vpp, stages: tuple[StageDP, ...], fwd_layer_s, bwd_layer_s, reshard,
                   edges: Edges | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each stage's (exposed, busy) seconds of one micro-batch's traffic (cost.dp_exposure.micro_batch_dp_s)."""
    # The last stage's root (output layer, final norm) is the head of its last chunk's calls.
    return [micro_batch_dp_s(overlap, zero=zero, layers=s.layers, times=s.times, fwd_window_s=s.layers * fwd_layer_s,
                             bwd_window_s=s.layers * bwd_layer_s, reshard=reshard, ahead_s=s.ahead_s, chunks=vpp,
                             edges=_stage_edges(edges, i), head_s=_head_s(stages, i)) for i, s in enumerate(stages)]


def _stage_edges(edges: Edges | None, i: int) -> Edges | None:
    """Stage i's edges: the embedding's backward (Edges.bwd_tail_s) runs on the first only, with its
    chunk 0 (beside that chunk's last calls, and in its backward block on the drain)."""
    return edges if edges is None or i == 0 else edges._replace(bwd_tail_s=0.0)


def _head_s(stages: tuple[StageDP, ...], i: int):
    """The output layer's gradient calls that open stage i's last chunk: the last stage's root."""
    return stages[i].times.root_reduce_s if i == len(stages) - 1 else 0.0


def _chunk0_traffic(overlap: Overlap, *, zero, vpp, stages: tuple[StageDP, ...], fwd_layer_s, bwd_layer_s, reshard,
                    edges: Edges | None) -> list[np.ndarray]:
    """Each stage's exposed seconds of one micro-batch through its chunk 0 alone, the chunk on the
    interleaved pipeline's fill and drain (module docstring): its layers' share (1/vpp) of the
    stage's gradient calls, the first stage's embedding's and ZeRO-3's root unit (which goes with
    chunk 0, cost.dp_exposure.micro_batch_dp_s); ZeRO-2's output layer buckets and the loss go
    with the last stage's last chunk. (At vpp 1 it is the whole stage's, _stage_traffic's.)"""
    vpp = np.asarray(vpp)
    out = []
    for i, s in enumerate(stages):
        t = s.times
        own = (i == 0) | ((i == len(stages) - 1) & (np.asarray(zero) == 3))
        root = (np.where(own, t.root_gather_s, 0.0), np.where(own, t.root_reduce_s, 0.0))
        chunk = t._replace(grad_reduce_scatter_s=root[1] + (t.grad_reduce_scatter_s - t.root_reduce_s) / vpp,
                           root_gather_s=root[0], root_reduce_s=root[1])
        layers = s.layers / vpp
        exposed, _ = micro_batch_dp_s(overlap, zero=zero, layers=layers, times=chunk,
                                      fwd_window_s=layers * fwd_layer_s, bwd_window_s=layers * bwd_layer_s,
                                      reshard=reshard, chunks=1, edges=_stage_edges(edges, i))
        out.append(exposed)
    return out


def _chunk0_backward_s(overlap: Overlap, *, stages: tuple[StageDP, ...], edge: list[np.ndarray], zero, vpp,
                       fwd_layer_s, bwd_layer_s, edges: Edges) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each stage's chunk-0 backward block of one micro-batch, (without, with) its data-parallel
    exposure: its layers' backward, and its chunk-0 exposure (_chunk0_traffic) less ZeRO-3's
    forward gathers (cost.dp_exposure.zero3_forward_s, the root unit's with chunk 0 where
    _chunk0_traffic puts it), the block's other backward work (the first stage's embedding's,
    its Edges.bwd_tail_s, _stage_edges) in the latter only: the pile-up is priced here for both
    (sp_planner.pipeline.drain_pile_up_s; cost.step's interleaved_drain_s leaves it out)."""
    zero3 = np.asarray(zero) == 3
    out = []
    for i, (s, e0) in enumerate(zip(stages, edge)):
        own = (i == 0) | ((i == len(stages) - 1) & zero3)
        layers = s.layers / np.asarray(vpp)
        forward = 0.0
        if np.any(zero3):
            forward = zero3_forward_s(overlap, s.times, fwd_layer_s, layers,
                                      before_s=np.where(own, s.times.root_gather_s, 0.0), edges=edges)
        bare = layers * bwd_layer_s
        extra = _stage_edges(edges, i).bwd_tail_s
        out.append((bare, bare + extra + e0 - np.where(zero3, forward, 0.0)))
    return out


def _critical_path_s(stages: tuple[StageDP, ...], exposure: list[np.ndarray], micro_batches, vpp=1,
                     edge: list[np.ndarray] | None = None, drain: list[tuple[np.ndarray, np.ndarray]] | None = None):
    """(m - e0_p/e_p) x the pacing stage's stretch plus every stage's chunk-0 exposure once (module
    docstring); `edge` defaults to the whole exposure (vpp 1).
    `drain` (_chunk0_backward_s): the interleaved schedule ends every stage with the last
    micro-batch group's chunk-0 backwards, which pile up behind the slowest stage's block
    (sp_planner.pipeline.drain_pile_up_s, the one flow shop for every ZeRO stage). The stretch
    charged them the pacing stage's block, so a slower one (the first stage's, whose embedding
    gradients never hide) adds its excess J - 1 times. At vpp 1 the last stage alternates forward
    and backward to its end and the drain keeps its pace."""
    present = [np.asarray(s.num_stages) > 0 for s in stages]
    paced_by = [np.where(p, s.compute_s + e, -np.inf) for s, e, p in zip(stages, exposure, present)]
    paced = np.max(paced_by, axis=0)
    compute = np.max([np.where(p, s.compute_s, 0.0) for s, p in zip(stages, present)], axis=0)
    stretch = paced - compute
    edge = edge or exposure
    every_stage = np.sum([s.num_stages * e for s, e in zip(stages, edge)], axis=0)
    # The pacing stage's own chunk 0 is in every_stage: its share of the stage's exposure (1/vpp
    # with equal chunks, more where chunk 0 holds ZeRO-3's root unit; 1 at vpp 1) leaves the stretch.
    pacer = np.argmax(paced_by, axis=0)

    def of_pacer(values):
        return np.choose(pacer, [np.broadcast_to(v, np.shape(pacer)) for v in values])

    own, whole = of_pacer(edge), of_pacer(exposure)
    share = np.where(whole > 0, own / np.where(whole > 0, whole, 1.0), 1 / np.asarray(vpp))
    exposed = (micro_batches - share) * stretch + every_stage
    if drain is None:
        return exposed
    pp = sum(np.asarray(s.num_stages, dtype=np.float64) for s in stages)
    pileup = drain_pile_up_s([plain for plain, _ in drain], [block for _, block in drain], present, pp,
                             micro_batches, charged_s=of_pacer([block for _, block in drain]))
    return exposed + np.where(np.asarray(vpp) > 1, pileup, 0.0)

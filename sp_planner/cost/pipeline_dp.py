"""ZeRO-2/3 traffic in a pipeline: what each stage's per-micro-batch exposure costs the step.

ZeRO-2/3 reduce-scatter every micro-batch's gradients (ZeRO-3 also gathers its parameters), and
a stage's backward ends only when that traffic has left (cost.dp_exposure.micro_batch_dp_s): a
stage's cycle is its compute and its exposure, and every block of the pipeline's schedule lasts
so long (cost.pipeline_blocks). The step is the pipeline's critical path over those blocks
(cost.pipeline_path: the longest of the paths that ride one stage through its m cycles, with the
fill and drain, the first and last micro-batches' turns and the interleaved groups' pile-ups
that path meets); this column holds what the path holds beyond the same path without the
traffic, which cost.step charges as the compute and the bubble. With equal stages it is
(m + (pp - 1)/vpp) e: the bubble's share of the exposure is the bubble's share of the compute; a
stage with slack (the first one, which lacks the loss and output layer) absorbs its own exposure
but on the fill and the drain, and a stage that paces by its exposure alone (ZeRO-2's first
stage, whose embedding gradients never hide) moves the step as the simulator does
(sim.pipeline), with no jump where the pacing stage changes. ZeRO-2's overlapped parameter
gathers ride each chunk's first forward, on the path where it runs them. Vectorized over
candidates.
"""

from __future__ import annotations

import numpy as np

from sp_planner.columns import take_rows
from sp_planner.cost.dp_exposure import DPTimes, Edges
from sp_planner.cost.dp_once import after_last_gather_s, chunks_gather_s, first_chunk_gather_s
from sp_planner.cost.dp_times import StageTimes
from sp_planner.cost.fsdp import root_gathers_per_micro_batch, stage_synced
from sp_planner.cost.kind_passes import KindPasses
from sp_planner.cost.overlap import Overlap
from sp_planner.cost.pipeline_blocks import bare_blocks, stage_blocks, stage_chunk_walks
from sp_planner.cost.pipeline_stages import StageDP
from sp_planner.cost.zero3_forwards import first_forward_fill_s, stage_zero3_gathers_s
from sp_planner.cost.pipeline_groups import ridden_at
from sp_planner.cost.pipeline_path import StageBlocks, critical_path_s
from sp_planner.cost.pipeline_sends import path_sends_s
from sp_planner.cost.pipeline_lags import finish_lags_s
from sp_planner.cost.pipeline_tails import synced_syncs_s
from sp_planner.pipeline import StageLayers, per_stage

# The loss and output layer's backward, of their forward and backward: backward = 2 x forward
# (Narayanan et al. 2021), as cost.step times the logits GEMMs (3 x forward).
LOSS_BACKWARD_SHARE = 2 / 3


def pipelined_dp_s(overlap: Overlap, c, *, stages: StageLayers, times: tuple[StageTimes, ...], per_layer_s,
                   logits_s, ahead_s, first_s, fwd_layer_s, bwd_layer_s, micro_batches, reshard,
                   edges: Edges, compute_path_s=None, kinds: KindPasses | None = None,
                   relay_times: DPTimes | None = None, relay_share=0.0,
                   relay_rank=None, hop_s=0.0) -> tuple[np.ndarray, np.ndarray]:
    """(exposed, hidden) seconds per step of ZeRO-2/3's per-micro-batch traffic: exposed on the
    pipeline's critical path (module docstring), hidden on the first stage, whose drain ends the
    step; NaN where it is the stage's own m x e (a single stage, ZeRO-0/1).
    `times` are the first, a middle and the last stage's calls (cost.dp_times.dp_stage_times);
    per_layer_s a layer's micro-batch, logits_s the last stage's work beyond its layers (the loss
    and output layer's, forward and backward), ahead_s its part before the first layer's backward,
    first_s the first stage's beyond its layers (the embedding's TP collectives and gradient passes;
    its backward part is edges.bwd_tail_s), fwd/bwd_layer_s a layer's windows (per_layer_s and these
    one for every stage or each stage's own, pipeline.per_stage) and `edges` the work
    beside a chunk's data-parallel edges (cost.step, cost.dp_exposure.Edges); compute_path_s the
    critical path over the same stages' compute blocks, per candidate, where the caller has it
    (cost.pipeline_path.compute_path_s, cost.step's bubble; None, or NaN on a row: priced here). `kinds`: the
    stages whose ZeRO-3 passes walk their own layers where these differ (cost.kind_passes; None: none).
    `relay_times`: the calls of the middle stage with the fewest MoE layers, `relay_share` how far
    the middle stages' mean lies towards it (cost.stage_params.dp_lightest_middle_stage): the
    middle stages a path passes are priced at that share between its blocks and `times`' middle
    one's (cost.pipeline_path.critical_path_s `relay`; Llama-4-Maverick's middle stages hold two MoE
    layers a chunk and one in turn, sim.pipeline runs each its own). `relay_rank`: the rank of the
    heaviest middle stage the middle path rides (cost.stage_params.dp_ridden_middle_stage; None:
    the last middle one), the middle stages above it at the lightest's blocks. `hop_s`: one
    pipeline hop where the interleaved sends run beside the compute (0 elsewhere): the path's
    exposed fill hops beyond the compute's (cost.pipeline_sends.path_sends_s)."""
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
    row_reshard, m = sub(reshard).astype(bool), sub(micro_batches)
    # A stage synced once a step (cost.fsdp.stage_synced) reduces nothing in its backwards and
    # gathers in its first forward only (and, resharding after forward, in every backward).
    synced = stage_synced(overlap.pp_stage_grad_sync, pp[rows], zero[rows])
    calls = tuple(stage.at(rows) for stage in times)
    first, middle, last = (without_reduces(t, synced) for t in calls)
    # Each stage's blocks from its own layers' times where they differ (cost.stage_layer_times).
    layer_s, fwd_s, bwd_s = (tuple(sub(v) for v in per_stage(x)) for x in (per_layer_s, fwd_layer_s, bwd_layer_s))
    loss_s = sub(logits_s)
    by_stage = (
        StageDP(first, split.first, split.first * layer_s[0] + sub(first_s), 0.0, 1.0),
        StageDP(middle, split.middle, split.middle * layer_s[1], 0.0, np.maximum(pp[rows] - 2, 0)),
        StageDP(last, split.last, split.last * layer_s[2] + loss_s, sub(ahead_s), 1.0),
    )
    once = 1.0 / np.maximum(m, 1.0)
    kw = dict(stages=by_stage, reshard=row_reshard, edges=Edges(*(sub(v) for v in edges)),
              fwd_layer_s=fwd_s, bwd_layer_s=bwd_s, vpp=sub(c.vpp),
              micro_batches=m, bare_path_s=None if compute_path_s is None else sub(compute_path_s),
              root_gathers=np.where(synced, once, root_gathers_per_micro_batch(overlap.root_gathered_once, zero[rows],
                                                                               row_reshard, m)),
              fwd_gathers=np.where(synced, once, 1.0), synced=synced, sync_times=calls,
              vpp_group=np.take(np.asarray(c.vpp_group), rows),
              kinds=None if kinds is None else take_rows(kinds, rows, n), hop_s=sub(hop_s))
    share = sub(relay_share)
    if relay_times is not None and np.any(share > 0):
        # The lightest middle stage's calls and layers (its compute the heaviest's: only its traffic differs).
        light = without_reduces(DPTimes(*(np.take(v, rows) for v in relay_times)), synced)
        kw.update(relay_stage=StageDP(light, split.middle, split.middle * layer_s[1], 0.0, np.maximum(pp[rows] - 2, 0)),
                  relay_share=share, relay_rank=None if relay_rank is None else sub(relay_rank))
    start = 0
    for z, interleaved, index in groups:
        part = slice(start, start + len(index))
        start = part.stop
        if not len(index):
            continue
        g = take_rows(kw, part, len(rows))
        # ZeRO-2's parameters gathered behind each chunk's first forward where overlapped
        # (cost.overlap): on the critical path where it runs those forwards (cost.pipeline_path),
        # each stage's from its own layers, the first stage's too (dp_exposed_s counts none once a step).
        gathers = [0.0, 0.0, 0.0]
        if z == 2 and overlap.param_gather:
            lead = g["edges"].fwd_lead_s
            gathers = [chunks_gather_s(s.times, s.layers * fwd, s.layers, g["vpp"], True, lead_s=lead,
                                       after_s=after_last_gather_s(s.times, fwd, lead, layers=s.layers,
                                                                   chunks=g["vpp"]),
                                       before_s=g["edges"].fwd_head_s if i == 0 else 0.0)
                       for i, (s, fwd) in enumerate(zip(g["stages"], g["fwd_layer_s"]))]
            # Of the first stage's, its chunk 0's (with the embedding's bucket), which the fill's
            # chunk-0 forwards carry to the stages above (cost.pipeline_path).
            s = g["stages"][0]
            g["gather0"] = first_chunk_gather_s(gathers[0], s.times, s.layers, g["vpp"],
                                                before_s=g["edges"].fwd_head_s, lead_s=lead)
            if "relay_stage" in g:
                s, fwd = g["relay_stage"], per_stage(g["fwd_layer_s"])[1]
                g["relay_gather"] = chunks_gather_s(s.times, s.layers * fwd, s.layers, g["vpp"], True, lead_s=lead,
                                                    after_s=after_last_gather_s(s.times, fwd, lead, layers=s.layers,
                                                                                chunks=g["vpp"]))
        exposed, (own, busy) = _group_exposed_s(overlap, zero=z, interleaved=interleaved, gathers=gathers, **g)
        out[index] = exposed
        # The step ends on the first stage's drain, slowed by the traffic it hid (cost.overlap),
        # its gather's hidden part with it.
        first_gather = g["stages"][0].times.param_all_gather_s if z == 2 and overlap.param_gather else 0.0
        hidden[index] = g["micro_batches"] * (busy - own) + first_gather - gathers[0]
    return out, hidden


def without_reduces(times: DPTimes, synced) -> DPTimes:
    """A stage's calls with no gradient reduce-scatter where `synced` (cost.fsdp.stage_synced: its
    backwards reduce nothing; the sync after its last one is cost.pipeline_tails')."""
    if not np.any(synced):
        return times
    names = ("grad_reduce_scatter_s", "last_reduce_scatter_s", "tail_reduce_scatter_s", "layer_reduce_s",
             "root_reduce_s")
    return times._replace(**{name: np.where(synced, 0.0, getattr(times, name)) for name in names})


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
              reshard=reshard, edges=edges or Edges(0.0, 0.0, 0.0),
              root_gathers=root_gathers_per_micro_batch(overlap.root_gathered_once, zero, reshard, micro_batches))
    for z, interleaved, index in _groups(zero, vpp, True):
        if len(index):
            rows = take_rows(kw, index, len(zero))
            out[index] = _group_exposed_s(overlap, zero=z, interleaved=interleaved, **rows)[0]
    return out


def _group_exposed_s(overlap: Overlap, *, zero: int, interleaved: bool, micro_batches, vpp,
                     stages: tuple[StageDP, ...], fwd_layer_s, bwd_layer_s, reshard, edges: Edges,
                     gathers=(0.0, 0.0, 0.0), bare_path_s=None, root_gathers=1.0, fwd_gathers=1.0, synced=False,
                     sync_times=None, kinds: KindPasses | None = None, relay_stage: StageDP | None = None,
                     relay_share=0.0, relay_gather=0.0, relay_rank=None, hop_s=0.0, vpp_group=None,
                     gather0=None):
    """The critical path's exposed seconds per step (module docstring) and the first stage's
    (exposed, busy) seconds of one micro-batch's traffic, of candidates of one ZeRO stage `zero`
    (2 or 3) and one schedule (`interleaved`: every vpp > 1; else every vpp 1). `bare_path_s`: the
    same path without the traffic (the stages' compute blocks) where the caller has priced it.
    `root_gathers`, `fwd_gathers`: the share of ZeRO-3's forwards that gather the root unit
    (cost.fsdp.root_gathers_per_micro_batch) and the layers (cost.fsdp.stage_synced). Where one is
    below 1 only the step's first forward gathers: micro-batch 0's, on every stage in turn on the
    pipeline's fill, which every path that waits for micro-batch 0's first backward rides. The
    blocks then hold none of it, the path what it exposes there (pipeline_blocks.
    first_forward_fill_s) and the first stage's busy the rest, spread over its m micro-batches.
    `synced` rows (cost.fsdp.stage_synced) then add each stage's whole sync after its last backward
    past its finish lag behind the first stage's over these blocks (cost.pipeline_tails.
    synced_syncs_s; `sync_times` the stages' calls with their reduce-scatters). `kinds`: the
    stages' own layers walked (pipelined_dp_s). `relay_stage`, `relay_share`, `relay_gather`: the
    lightest middle stage, the middle stages' mean's share towards it and its ZeRO-2 gathers
    (pipelined_dp_s; None: the middle stages all alike); `relay_rank` the heaviest middle stage's
    rank the middle path rides (pipelined_dp_s); `hop_s` pipelined_dp_s'. `vpp_group`: the plans' own
    micro-batch groups (cost.pipeline_path.critical_path_s'). `gather0`: of `gathers`' first, its
    chunk 0's (pipelined_dp_s; None: its chunk share)."""
    pp = sum(np.asarray(s.num_stages, dtype=np.float64) for s in stages)
    root_once, fwd_once = np.asarray(root_gathers) < 1, np.asarray(fwd_gathers) < 1
    held_root, held_fwd = np.where(root_once, 0.0, 1.0), np.where(fwd_once, 0.0, 1.0)
    bare = bare_blocks(stages, edges=edges, fwd_layer_s=fwd_layer_s, bwd_layer_s=bwd_layer_s, vpp=vpp)
    # Each stage's chunks walked once where its layers differ (cost.chunk_walk), and ZeRO-3's
    # forward gathers, which the blocks and micro-batch 0's fill both share out.
    walks = stage_chunk_walks(overlap, zero=zero, vpp=vpp, stages=stages, fwd_layer_s=fwd_layer_s,
                              bwd_layer_s=bwd_layer_s, reshard=reshard, edges=edges, root_gathers=held_root,
                              fwd_gathers=held_fwd, kinds=kinds)
    zero3_gathers = stage_zero3_gathers_s(overlap, stages, zero=zero, vpp=vpp, fwd_layer_s=fwd_layer_s, edges=edges,
                                          kinds=kinds, walks=walks)
    blocks, first_traffic = stage_blocks(overlap, zero=zero, interleaved=interleaved, vpp=vpp, stages=stages,
                                         fwd_layer_s=fwd_layer_s, bwd_layer_s=bwd_layer_s, reshard=reshard, edges=edges,
                                         gathers=gathers, root_gathers=held_root, fwd_gathers=held_fwd, bare=bare,
                                         zero3_gathers=zero3_gathers, kinds=kinds, walks=walks)
    # cost.step charges the same path without the traffic: the compute's pace and bubble.
    if bare_path_s is None:
        bare_path_s = critical_path_s(bare, micro_batches, pp, vpp, vpp_group=vpp_group)
    elif np.any(unpriced := np.isnan(bare_path_s)):
        # The rows the caller has no path for (cost.dp_passes' host-bound rows): priced on those alone.
        rows, n = np.flatnonzero(unpriced), len(unpriced)
        bare_path_s = np.array(bare_path_s, dtype=np.float64)
        bare_path_s[rows] = critical_path_s(*take_rows((bare, micro_batches, pp, vpp), rows, n),
                                            vpp_group=None if vpp_group is None else take_rows(vpp_group, rows, n))
    relay = ridden = None
    if relay_stage is not None:
        relay, light = _relay_blocks(overlap, blocks[1], relay_share, stages=(stages[0], relay_stage, stages[2]),
                                     zero=zero, interleaved=interleaved, vpp=vpp, fwd_layer_s=fwd_layer_s,
                                     bwd_layer_s=bwd_layer_s, reshard=reshard, edges=edges,
                                     gathers=(gathers[0], relay_gather, gathers[2]), root_gathers=held_root,
                                     fwd_gathers=held_fwd, bare=bare, kinds=None if kinds is None else kinds.lightest())
        if relay_rank is not None:
            # The heaviest middle stage at its own rank, those above it the lightest (exact where
            # the middle stages are of two kinds, the heaviest's highest rank below the rest).
            rank = np.asarray(relay_rank, dtype=np.float64)
            middles = np.asarray(stages[1].num_stages, dtype=np.float64)
            ridden = ridden_at(rank, middles, light)
    exposed = critical_path_s(blocks, micro_batches, pp, vpp, relay, ridden, vpp_group,
                              first_gather0_s=gather0) - bare_path_s
    if np.any(np.asarray(hop_s) > 0):
        # The hops the traffic's path exposes beyond those cost.step's sends count (over the compute).
        exposed = exposed + path_sends_s(blocks, bare, pp, vpp, hop_s, micro_batches, vpp_group)
    if zero == 3 and np.any(root_once | fwd_once):
        fill = first_forward_fill_s(overlap, stages, zero=zero, vpp=vpp, interleaved=interleaved,
                                    fwd_layer_s=fwd_layer_s, edges=edges, root_gathers=held_root, fwd_gathers=held_fwd,
                                    zero3_gathers=zero3_gathers)
        t = stages[0].times
        own, busy = first_traffic
        # The gathers the first stage's micro-batch 0 runs beyond its blocks', less what they expose.
        ran = (1 - held_root) * t.root_gather_s + (1 - held_fwd) * stages[0].layers * t.layer_gather_s
        exposed = exposed + sum(np.asarray(s.num_stages, dtype=np.float64) * f for s, f in zip(stages, fill))
        first_traffic = (own, busy + (ran - fill[0]) / np.asarray(micro_batches, dtype=np.float64))
    if np.any(synced):
        assert sync_times is not None  # pipelined_dp_s passes the calls with every synced row
        lags = finish_lags_s(blocks, stages[1].num_stages, micro_batches, vpp, vpp_group)
        exposed = exposed + np.where(synced, synced_syncs_s(sync_times, lags, pp=pp, vpp=vpp), 0.0)
    return exposed, first_traffic


def _relay_blocks(overlap: Overlap, heaviest: StageBlocks, share, *, stages: tuple[StageDP, ...], zero: int,
                  interleaved: bool, vpp, fwd_layer_s, bwd_layer_s, reshard, edges: Edges, gathers, root_gathers,
                  fwd_gathers, bare, kinds: KindPasses | None) -> tuple[StageBlocks, StageBlocks]:
    """The middle stages' mean blocks a path passes (cost.pipeline_path.critical_path_s `relay`),
    and the lightest one's:
    `share` of the way from the heaviest middle stage's blocks to those of `stages`' middle one (the
    lightest, its own calls and chunk walks, pipelined_dp_s), field by field; exact where the
    middle stages are of two kinds, as Maverick's (MoE layers 4 and 2 a stage at pp 8 x vpp 2).
    Its middle stage's blocks alone are priced (stage_blocks `only`: its chunk walks, ZeRO-3
    gathers and traffic; the end stages' are the heaviest's)."""
    light = stage_blocks(overlap, zero=zero, interleaved=interleaved, vpp=vpp, stages=stages, fwd_layer_s=fwd_layer_s,
                         bwd_layer_s=bwd_layer_s, reshard=reshard, edges=edges, gathers=gathers,
                         root_gathers=root_gathers, fwd_gathers=fwd_gathers, bare=bare, kinds=kinds, only=1)[0][1]
    mean = {name: h + share * (np.asarray(x) - h)
            for name, h, x in zip(StageBlocks._fields, heaviest, light) if name != "num_stages"}
    return heaviest._replace(**mean), light

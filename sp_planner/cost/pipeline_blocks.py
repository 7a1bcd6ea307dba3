"""Each kind of pipeline stage's blocks of one micro-batch under ZeRO-2/3, the pieces of
cost.pipeline_path's critical path: its cycle (compute and the data-parallel exposure that ends
each backward, cost.dp_exposure.micro_batch_dp_s), its forwards (with ZeRO-3's gathers,
cost.zero3_forwards), and the backward blocks of its chunk 0 (the interleaved drain's) and of its
last chunk (the first micro-batch group's), each chunk wrapped and synced on its own as Megatron's
get_model builds one DDP/FSDP module a chunk. Each stage holds its own non-layer parameters
(cost.rank_tensors.stage_extras): the first stage's embedding with its chunk 0 (its gradients leave
after the embedding's backward, never hidden), the last stage's output layer with its last chunk
(ZeRO-2's gradient calls open it; ZeRO-3's root unit, the output layer and final norm, is gathered
before it and reduced after it). Vectorized over candidates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sp_planner.cost.dp_exposure import Edges, micro_batch_dp_s, middle_end_layers, root_chunk_layers
from sp_planner.cost.chunk_walk import ChunkWalks, chunk_walk_s, chunk_walks
from sp_planner.cost.overlap import Overlap
from sp_planner.cost.pipeline_path import StageBlocks, compute_blocks
from sp_planner.cost.pipeline_stages import StageDP, layout_chunk, picked_stages, stage_edges
from sp_planner.cost.zero3_forwards import chunk_zero3_forwards_s, over_chunks, stage_zero3_gathers_s
from sp_planner.pipeline import per_stage

if TYPE_CHECKING:
    from sp_planner.cost.kind_passes import KindPasses


def stage_blocks(overlap: Overlap, *, zero, interleaved: bool, vpp, stages: tuple[StageDP, ...], fwd_layer_s,
                 bwd_layer_s, reshard, edges: Edges, gathers=(0.0, 0.0, 0.0), root_gathers=1.0, fwd_gathers=1.0,
                 bare: tuple[StageBlocks, ...] | None = None, zero3_gathers=None, kinds: KindPasses | None = None,
                 walks: list[ChunkWalks | None] | None = None, only: int | None = None):
    """(each stage's StageBlocks, the first stage's (exposed, busy) seconds of one micro-batch's
    traffic) of candidates of one ZeRO stage and one schedule (`interleaved`: vpp > 1): the
    compute's blocks (cost.pipeline_path.compute_blocks) and the traffic each one exposes.
    `fwd_layer_s`, `bwd_layer_s`: a layer's windows, one for every stage or each stage's own
    (pipeline.per_stage; cost.stage_layer_times' blends where the model's layers differ).
    `gathers`: each stage's ZeRO-2 gathers exposed on its chunks' first forwards (0 elsewhere);
    `root_gathers`, `fwd_gathers`: the share of ZeRO-3's forwards that gather the root unit and
    the layers (cost.dp_exposure.micro_batch_dp_s), each forward block holding that share. `bare`:
    bare_blocks of the same arguments where the caller has them; `zero3_gathers` their
    stage_zero3_gathers_s likewise. `kinds`: each stage's ZeRO-3 cycle walked over its own layers
    (cost.kind_passes, KindPasses.stage); `walks`: their stage_chunk_walks where the caller has them.
    `only`: stage `only`'s blocks and traffic alone, None in the others' places
    (pipeline_stages.picked_stages); `walks` and `zero3_gathers` need hold only its."""
    picked = picked_stages(stages, only)
    kw = dict(zero=zero, vpp=vpp, stages=stages, fwd_layer_s=fwd_layer_s, bwd_layer_s=bwd_layer_s, reshard=reshard,
              edges=edges, root_gathers=root_gathers, fwd_gathers=fwd_gathers)
    shares = dict(root_gathers=root_gathers, fwd_gathers=fwd_gathers)
    if bare is None:
        bare = bare_blocks(stages, edges=edges, fwd_layer_s=fwd_layer_s, bwd_layer_s=bwd_layer_s, vpp=vpp)
    # Each stage's chunks walked once where its layers differ (cost.chunk_walk): its cycle's, its
    # chunk blocks' and its forwards'.
    if walks is None:
        walks = stage_chunk_walks(overlap, kinds=kinds, only=only, **kw)
    traffic = _stage_traffic(overlap, kinds=kinds, walks=walks, picked=picked, **kw)
    exposure = [None if t is None else t[0] for t in traffic]
    # At vpp 1 chunk 0 and the last chunk are the whole stage.
    first, last = (_chunk_traffic(overlap, last=end, walks=walks, picked=picked, **kw) if interleaved else exposure
                   for end in (False, True))
    if zero3_gathers is None:
        zero3_gathers = stage_zero3_gathers_s(overlap, stages, zero=zero, vpp=vpp, fwd_layer_s=fwd_layer_s, edges=edges,
                                              kinds=kinds, walks=walks, only=only)
    blocks: list[StageBlocks | None] = []
    for i, (b, e, e0, e_last, gather) in enumerate(zip(bare, exposure, first, last, gathers)):
        if i not in picked:
            blocks.append(None)
            continue
        # ZeRO-3's gathers run in the forwards: off the backward blocks, on the forward ones.
        chunk0_fwd, later_fwd, last_fwd = chunk_zero3_forwards_s(zero3_gathers[i], i, vpp=vpp, **shares)
        forward = over_chunks(chunk0_fwd, later_fwd, last_fwd, vpp, interleaved)
        blocks.append(b._replace(cycle_s=b.cycle_s + e, chunk0_s=b.chunk0_s + e0, forward_s=b.forward_s + forward,
                                 last_fwd_s=b.last_fwd_s + last_fwd,
                                 first_bwd_s=b.first_bwd_s + e0 - chunk0_fwd,
                                 last_bwd_s=b.last_bwd_s + e_last - last_fwd,
                                 gather_s=b.gather_s + gather))
    return tuple(blocks), traffic[0]


def bare_blocks(stages: tuple[StageDP, ...], *, edges: Edges, fwd_layer_s, bwd_layer_s, vpp):
    """The stages' blocks without their data-parallel traffic (cost.pipeline_path.compute_blocks)."""
    return compute_blocks([s.layers for s in stages], [s.compute_s for s in stages], [s.num_stages for s in stages],
                          [_backward_extra_s(stages, edges, i) for i in range(len(stages))], fwd_layer_s=fwd_layer_s,
                          bwd_layer_s=bwd_layer_s, vpp=vpp)


def stage_chunk_walks(overlap: Overlap, *, zero, vpp, stages: tuple[StageDP, ...], fwd_layer_s, bwd_layer_s, reshard,
                      edges: Edges | None, root_gathers=1.0, fwd_gathers=1.0,
                      kinds: KindPasses | None = None, only: int | None = None) -> list[ChunkWalks | None]:
    """Each stage's chunk_walks (cost.chunk_walk) of one micro-batch, with _stage_traffic's arguments;
    `only`: stage `only`'s alone (pipeline_stages.picked_stages)."""
    if kinds is None:
        return [None] * len(stages)
    picked = picked_stages(stages, only)
    return [chunk_walks(overlap, s.times, stage_edges(edges, i) or Edges(0.0, 0.0, 0.0), kinds.stage(i), zero=zero,
                        fwd_window_s=s.layers * fwd, bwd_window_s=s.layers * bwd, reshard=reshard, ahead_s=s.ahead_s,
                        root_gathers=root_gathers, fwd_gathers=fwd_gathers) if i in picked else None
            for i, (s, fwd, bwd) in enumerate(zip(stages, per_stage(fwd_layer_s), per_stage(bwd_layer_s)))]


def _stage_traffic(overlap: Overlap, *, zero, vpp, stages: tuple[StageDP, ...], fwd_layer_s, bwd_layer_s, reshard,
                   edges: Edges | None, root_gathers=1.0, fwd_gathers=1.0, kinds: KindPasses | None = None,
                   walks: list[ChunkWalks | None] | None = None, picked=range(3)
                   ) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Each stage's (exposed, busy) seconds of one micro-batch's traffic (cost.dp_exposure.micro_batch_dp_s);
    `walks`: their stage_chunk_walks where the caller has them; None but on the `picked` stages."""
    # The last stage's root (output layer, final norm) is the head of its last chunk's calls.
    return [micro_batch_dp_s(overlap, zero=zero, layers=s.layers, times=s.times, fwd_window_s=s.layers * fwd,
                             bwd_window_s=s.layers * bwd, reshard=reshard, ahead_s=s.ahead_s, chunks=vpp,
                             edges=stage_edges(edges, i), head_s=_head_s(stages, i), root_gathers=root_gathers,
                             fwd_gathers=fwd_gathers, chunk=layout_chunk(stages, vpp),
                             kinds=None if kinds is None else kinds.stage(i), walks=None if walks is None else walks[i])
            if i in picked else None
            for i, (s, fwd, bwd) in enumerate(zip(stages, per_stage(fwd_layer_s), per_stage(bwd_layer_s)))]


def _head_s(stages: tuple[StageDP, ...], i: int):
    """The output layer's gradient calls that open stage i's last chunk: the last stage's root."""
    return stages[i].times.root_reduce_s if i == len(stages) - 1 else 0.0


def _backward_extra_s(stages: tuple[StageDP, ...], edges: Edges, i: int):
    """Stage i's backward beyond its layers: the first stage's embedding's (Edges.bwd_tail_s), the
    last's loss and output layer's (StageDP.ahead_s)."""
    own = stage_edges(edges, i)
    assert own is not None  # edges is not None
    return own.bwd_tail_s + (stages[i].ahead_s if i == len(stages) - 1 else 0.0)


def _chunk_traffic(overlap: Overlap, *, last: bool, zero, vpp, stages: tuple[StageDP, ...], fwd_layer_s,
                   bwd_layer_s, reshard, edges: Edges | None, root_gathers=1.0, fwd_gathers=1.0,
                   walks: list[ChunkWalks | None], picked=range(3)) -> list[np.ndarray | None]:
    """Each stage's exposed seconds of one micro-batch through one chunk alone: chunk 0 (`last`
    False), whose backwards end the interleaved drain, or the last one, whose backwards open each
    group's. Its layers' share of the stage's gradient calls (root_chunk_layers), ZeRO-2's its own
    layers' buckets where the model's layers differ (DPTimes.chunk0_reduce_scatter_s,
    end_reduce_scatter_s: Megatron wraps and buckets each chunk on its own, training.py
    wrap_model_chunks_with_ddp lines 2300-2328 at d98e8a6); chunk 0 also the first
    stage's embedding's (its buckets, ZeRO-3's root unit), the last chunk the last stage's output
    layer's (ZeRO-2's buckets, which open it, or ZeRO-3's root unit: cost.zero3_forwards) and the
    loss's backward ahead of it, its first layer's calls unhideable as micro_batch_dp_s's later
    chunks' (a layer's share of the stage's). `walks`: each stage's chunks walked over their own
    layers where the stage's differ (stage_chunk_walks; the cycle's walks, read chunk by chunk).
    None but on the `picked` stages."""
    vpp = np.asarray(vpp)
    out: list[np.ndarray | None] = []
    for i, (s, fwd_layer, bwd_layer) in enumerate(zip(stages, per_stage(fwd_layer_s), per_stage(bwd_layer_s))):
        if i not in picked:
            out.append(None)
            continue
        t = s.times
        final = i == len(stages) - 1
        # This chunk's layers: the stage's end chunk holds the rest (a layer fewer where it holds
        # the root under the counted split; a stage the layout does not divide by vpp, its short
        # chunk): chunk 0 of the first stage, the last chunk of every other, a middle one's too
        # (pipeline_chunks.chunk_layer_counts), but an empty one (dp_exposure.middle_end_layers).
        root_n, other_n = root_chunk_layers(s.layers, vpp, layout_chunk(stages, vpp))
        layers = root_n if (final if last else i == 0) else other_n
        if last and i == 1:
            layers = middle_end_layers(root_n, other_n)
        fwd_w, bwd_w = layers * fwd_layer, layers * bwd_layer
        # ZeRO-2's chunk of a model whose layers differ: its own layers' buckets (cost.buckets.
        # _chunk_summary), as sim.dp_work issues each layer's of its kind; else its layers' share.
        own_s = np.asarray(t.end_reduce_scatter_s if last else t.chunk0_reduce_scatter_s)
        layer_calls = _chunk_calls_s(t.grad_reduce_scatter_s - t.root_reduce_s, s.layers, layers, vpp)
        layer_calls = np.where(own_s > 0, own_s, layer_calls)
        if last:
            # Its first layer's buckets, which cannot hide: ZeRO-2's its own (each chunk bucketed
            # on its own, cost.bucket_counts._chunk_summary; chunk 0's but the embedding's where not
            # priced), ZeRO-3's a layer's share.
            first_s = np.asarray(t.end_first_reduce_scatter_s)
            per_layer_s = np.where(np.asarray(zero) == 2,
                                   np.where(first_s > 0, first_s, t.last_reduce_scatter_s - t.tail_reduce_scatter_s),
                                   (t.grad_reduce_scatter_s - t.root_reduce_s) / np.maximum(s.layers, 1))
            # The last stage's root is its last chunk's (cost.zero3_forwards): ZeRO-2's output layer
            # buckets open its backward (head_s), ZeRO-3's root unit is gathered and reduced with it.
            none = np.zeros_like(t.root_gather_s)
            root = (t.root_gather_s + none, t.root_reduce_s + none) if final else (none, none)
            head: np.ndarray | float = np.where(np.asarray(zero) == 2, root[1], 0.0)
            chunk = t._replace(grad_reduce_scatter_s=root[1] + layer_calls, root_gather_s=root[0],
                               root_reduce_s=root[1], last_reduce_scatter_s=per_layer_s,
                               tail_reduce_scatter_s=none)
            chunk_edges = None if edges is None else edges._replace(bwd_tail_s=0.0)
            ahead = s.ahead_s if final else 0.0
        else:
            own = i == 0
            root = (np.where(own, t.root_gather_s, 0.0), np.where(own, t.root_reduce_s, 0.0))
            chunk = t._replace(grad_reduce_scatter_s=root[1] + layer_calls, root_gather_s=root[0],
                               root_reduce_s=root[1])
            chunk_edges, ahead, head = stage_edges(edges, i), 0.0, 0.0
        exposed, _ = micro_batch_dp_s(overlap, zero=zero, layers=layers, times=chunk,
                                      fwd_window_s=fwd_w, bwd_window_s=bwd_w, reshard=reshard, ahead_s=ahead,
                                      chunks=1, edges=chunk_edges, head_s=head, root_gathers=root_gathers,
                                      fwd_gathers=fwd_gathers)
        out.append(chunk_walk_s(walks[i], exposed, last=last))
    return out


def _chunk_calls_s(stage_calls_s, stage_layers, chunk_layers, vpp):
    """A chunk's share of its stage's per-layer gradient calls: `chunk_layers` of `stage_layers`,
    1/vpp where the chunks divide the stage evenly."""
    even = np.mod(stage_layers, vpp) == 0
    if np.all(even):
        return stage_calls_s / vpp
    return np.where(even, stage_calls_s / vpp, stage_calls_s * chunk_layers / np.maximum(stage_layers, 1))

"""ZeRO-3's parameter gathers in each kind of pipeline stage's forwards of one micro-batch: what
each chunk's forward exposes (a layer chunk's, the root unit's chunk's on the end stages), priced
once for cost.pipeline_blocks' forward blocks and for the first micro-batch's fill
(first_forward_fill_s). Vectorized over candidates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sp_planner.cost.chunk_walk import ChunkWalks, chunk_forwards_s
from sp_planner.cost.dp_exposure import Edges, middle_end_layers, root_chunk_layers, rooted_forward_s, zero3_forward_s
from sp_planner.cost.layer_walk import walked_forward_s
from sp_planner.cost.overlap import Overlap
from sp_planner.cost.pipeline_stages import StageDP, layout_chunk, picked_stages
from sp_planner.pipeline import per_stage

if TYPE_CHECKING:
    from sp_planner.cost.kind_passes import KindPasses


def over_chunks(chunk0_s, later_s, last_s, vpp, interleaved: bool):
    """A stage's forwards of one micro-batch over its chunks: chunk 0, vpp - 2 middle ones and the
    last (the one chunk at vpp 1)."""
    return chunk0_s + (vpp - 2) * later_s + last_s if interleaved else chunk0_s


def first_forward_fill_s(overlap: Overlap, stages: tuple[StageDP, ...], *, zero, vpp, interleaved: bool, fwd_layer_s,
                         edges: Edges, root_gathers, fwd_gathers, zero3_gathers):
    """ZeRO-3: what the gathers of micro-batch 0's forwards expose beyond the share of them
    (`root_gathers` of the root unit's, `fwd_gathers` of the layers', each 0 or 1) every forward
    block holds, on each stage: a framework that gathers them in the step's first forward alone
    (cost.fsdp.root_gathers_per_micro_batch, cost.fsdp.stage_synced). Micro-batch 0 runs them on
    the pipeline's fill, every stage's in turn. `zero3_gathers`: stage_zero3_gathers_s of the same
    arguments (the ones cost.pipeline_blocks.stage_blocks shares out)."""
    out = []
    for i, gathers in enumerate(zero3_gathers):
        # Both from the same gathers, priced once (_zero3_gathers_s).
        whole = chunk_zero3_forwards_s(gathers, i, vpp=vpp)
        held = chunk_zero3_forwards_s(gathers, i, vpp=vpp, root_gathers=root_gathers, fwd_gathers=fwd_gathers)
        out.append(over_chunks(whole[0], whole[1], whole[2], vpp, interleaved)
                   - over_chunks(held[0], held[1], held[2], vpp, interleaved))
    return out


def stage_zero3_gathers_s(overlap: Overlap, stages: tuple[StageDP, ...], *, zero, vpp, fwd_layer_s, edges: Edges,
                          kinds: KindPasses | None = None, walks: list[ChunkWalks | None] | None = None,
                          only: int | None = None):
    """Each stage's _zero3_gathers_s: what cost.pipeline_blocks.stage_blocks and first_forward_fill_s
    both share out (chunk_zero3_forwards_s), priced once for both; `kinds`: each stage's own layers
    walked, an interleaved stage's chunks read from its cycle's `walks`
    (cost.pipeline_blocks.stage_chunk_walks); `only`: stage `only`'s alone (picked_stages)."""
    assert kinds is None or walks is not None, "the interleaved stages' chunk walks (stage_chunk_walks)"
    picked = picked_stages(stages, only)
    return [_zero3_gathers_s(overlap, stages, i, zero=zero, vpp=vpp, fwd_layer_s=fwd, edges=edges,
                             kinds=None if kinds is None else kinds.stage(i), walks=None if walks is None else walks[i])
            if i in picked else None
            for i, fwd in enumerate(per_stage(fwd_layer_s))]


def _zero3_gathers_s(overlap: Overlap, stages: tuple[StageDP, ...], i: int, *, zero, vpp, fwd_layer_s, edges: Edges,
                     kinds: KindPasses | None = None, walks: ChunkWalks | None = None):
    """chunk_zero3_forwards_s's ZeRO-3 rows (a mask) and forward exposures before the shares: a layer
    chunk's, and on the first and last stage the root's chunk's with and without the root unit's
    gather (None for the middle stages); None without ZeRO-3. Where the root's chunk holds as
    many layers as the others (the same array: root_chunk_layers) the last is the first, priced once."""
    zero3 = np.asarray(zero) == 3
    if not np.any(zero3):
        return None
    s = stages[i]
    # The root's chunk holds a layer fewer under the counted split (pipeline_chunks.chunk_layer_counts).
    root_n, layers = root_chunk_layers(s.layers, np.asarray(vpp), layout_chunk(stages, vpp))

    def forward(n, before_s=0.0):
        exposed = zero3_forward_s(overlap, s.times, fwd_layer_s, n, before_s=before_s, edges=edges)
        if kinds is None or not np.any((kinds.order >= 0) & zero3):
            return exposed
        # A stage at vpp 1 that walks its own layers (cost.kind_passes): its one chunk walked.
        return walked_forward_s(overlap, kinds, zero=zero, exposed=exposed, fwd_window_s=n * fwd_layer_s,
                                before_s=before_s)

    chunk = forward(layers)
    rooted = None if i == 1 else (  # the middle stages hold no root unit
        forward(root_n, s.times.root_gather_s), chunk if root_n is layers else forward(root_n))
    # An interleaved stage's chunks, each its own layers walked (cost.chunk_walk: the cycle's walks).
    plain, rooted = chunk_forwards_s(walks, plain=chunk, rooted=rooted)
    if i == 1 and root_n is not layers:
        # A middle stage's end chunk is its last (pipeline_chunks.chunk_layer_counts): the rest's
        # layers where the layout leaves it short, on the rows that do not walk their chunks.
        end = forward(middle_end_layers(root_n, layers))
        plain = (plain[0], plain[1], end if walks is None else np.where(walks.rows, plain[2], end))
    return zero3, tuple(np.where(zero3, p, 0.0) for p in plain), rooted


def chunk_zero3_forwards_s(gathers, i: int, *, vpp, root_gathers=1.0, fwd_gathers=1.0):
    """Stage i's ZeRO-3 gathers exposed in one micro-batch's forward of (its chunk 0, a middle
    chunk, its last chunk), from its _zero3_gathers_s: each layer's ahead of use, the root unit's
    before the chunk that holds it, the first stage's embedding in its chunk 0 and the last
    stage's output layer and final norm in its last chunk: Megatron's get_model builds
    pre_process into the first stage's chunk 0 only and post_process into the last stage's last
    chunk only (megatron/training/training.py lines 2390-2399 at d98e8a6), each chunk its own
    Megatron-FSDP module gathering the non-unit parameters it holds (cost.dp_exposure;
    sim.layer_program.root_chunk). At vpp 1 the one chunk is both. `fwd_gathers` of the forwards
    gather the layers, `root_gathers` the root too (cost.dp_exposure.rooted_forward_s)."""
    if gathers is None:
        return 0.0, 0.0, 0.0
    zero3, plain, rooted = gathers
    chunk0, later, last = (fwd_gathers * p for p in plain)  # (chunk 0's, a middle chunk's, the last's)
    if rooted is None:
        return chunk0, later, last
    root = np.where(zero3, rooted_forward_s(rooted[0], rooted[1], root_gathers, fwd_gathers), 0.0)
    single = np.asarray(vpp) == 1  # the end the root is not at: itself at vpp 1
    return (root, later, np.where(single, root, last)) if i == 0 else (np.where(single, root, chunk0), later, root)

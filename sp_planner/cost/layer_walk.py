"""ZeRO-3's pass layer by layer where the layers differ: cost.layerwise's orders walked one layer
at a time, each layer with its own gather, reduce-scatter, window and TP collectives (Llama 4
Maverick's MoE layers gather ~19x its dense layers' parameters; Gemma 3's local and global
attention layers compute for different times). On identical layers it is cost.layerwise's closed
forms (tests/cost/test_layer_walk.py), which it replaces for the candidates whose single stage
mixes layer kinds (cost.dp_exposure). Vectorized over candidates, a loop over the layers.

The orders are sim.layer_program's: forward queues the root unit's gather and then every layer's
back to back on the data-parallel stream from the pass's start, and each layer's first GEMM waits
for its own gather after its TP lead; backward's stream runs G_0 G_1 RS_0 G_2 RS_1 ... G_n-1
RS_n-2 RS_n-1 in host launch order (prefetch one layer ahead), each reduce-scatter released by its
layer's gradients (before the layer's trailing TP reduce-scatter, `behind_s`), the root unit's
after the last layer's and the embedding's backward (`tail_s`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sp_planner.cost.layerwise import rooted_forward_s

if TYPE_CHECKING:
    from sp_planner.cost.dp_exposure import DPTimes, Edges
    from sp_planner.cost.kind_passes import KindPasses
    from sp_planner.cost.overlap import Overlap


def walked_exposed_s(gather_s, reduce_s, window_s, lead_s, *, before_s=0.0, after_s=0.0, opening_s=0.0,
                     behind_s=0.0, tail_s=0.0, prefetch: bool = True):
    """Exposed seconds of one ZeRO-3 pass over layers whose calls and windows differ: gather_s,
    reduce_s (0 in forward), window_s (a layer's compute and TP collectives), lead_s (its TP
    collectives before its first GEMM) and behind_s (after its last) are (layers, rows) or
    broadcast to it; before_s, after_s, opening_s (the compute before the first layer: the loss's
    and the output layer's backward) and tail_s per row. cost.layerwise.layerwise_exposed_s's
    ahead_s is opening_s + the first layer's lead. The exposure is the pass's end (the root
    unit's reduce-scatter, or the compute's, whichever is later) less its compute. Without
    prefetch every gather but the first waits in line before its layer and each reduce-scatter
    but the last exposes what it takes beyond the next layer's window, as cost.layerwise
    prices them."""
    g, w = np.asarray(gather_s, dtype=np.float64), np.asarray(window_s, dtype=np.float64)
    shape = np.broadcast_shapes(g.shape, np.shape(reduce_s), w.shape, np.shape(lead_s), np.shape(behind_s))
    g, r, w, lead, behind = (np.broadcast_to(np.asarray(v, dtype=np.float64), shape)
                             for v in (g, reduce_s, w, lead_s, behind_s))
    n = shape[0]
    if n == 0:
        return np.broadcast_to(np.asarray(before_s + after_s, dtype=np.float64), shape[1:]).copy()
    first = np.maximum(0.0, before_s + g[0] - opening_s - lead[0])
    if not prefetch:
        last = np.maximum(0.0, r[-1] - behind[-1] - tail_s)
        return (first + g[1:].sum(axis=0) + np.maximum(0.0, r[:-1] - w[1:]).sum(axis=0) + last + after_s)
    # The stream's and the compute's clocks from the pass's start.
    landed = np.empty(shape)
    stream = before_s + g[0]
    landed[0] = stream
    if n > 1:
        stream = stream + g[1]
        landed[1] = stream
    compute = np.broadcast_to(np.asarray(opening_s, dtype=np.float64), shape[1:])
    for i in range(n):
        # The layer's first GEMM waits for its gather (the first layer's also for the root's); a
        # later layer without one (backward with the parameters kept from forward,
        # reshard_after_forward false) waits for nothing on the stream: not for the reduce-scatters
        # queued there (sim.layer_program adds no gather to depend on).
        waits = (g[i] > 0) | (i == 0)
        gemm = np.where(waits, np.maximum(compute + lead[i], landed[i]), compute + lead[i])
        compute = gemm + w[i] - lead[i]
        # RS_i after the layer's gradients; a layer without one (forward) leaves the stream as it is.
        stream = np.where(r[i] > 0, np.maximum(stream, compute - behind[i]) + r[i], stream)
        if i + 2 < n:
            stream = stream + g[i + 2]
            landed[i + 2] = stream
    end = np.maximum(compute + tail_s, stream) + after_s
    return end - (opening_s + w.sum(axis=0) + tail_s)


def _sequences(kinds: KindPasses, zero):
    """(sequence, rows) of each layer sequence the ZeRO-3 rows of this view walk."""
    n = len(kinds.order)
    walks = np.where(np.broadcast_to(zero, (n,)) == 3, kinds.order, -1)  # the sequence each row walks
    return [(int(k), np.flatnonzero(walks == k)) for k in np.unique(walks[walks >= 0])]


def _spread(kinds: KindPasses, name: str, rows, sequence: int, total_s):
    """Each layer's window `name` with the row's stall beyond its layers' (total_s) spread evenly."""
    each = kinds.layers(name, rows, sequence)
    total = np.broadcast_to(np.asarray(total_s, dtype=np.float64), (len(kinds.order),))[rows]
    return each + (total - each.sum(axis=0)) / max(each.shape[0], 1)  # a chunk of no layers spreads nothing


def walked_forward_s(overlap: Overlap, kinds: KindPasses, *, zero, exposed, fwd_window_s, before_s=0.0):
    """cost.dp_exposure.zero3_forward_s's seconds with the rows that walk a layer sequence walked
    (a stage's forward blocks, cost.pipeline_blocks); `before_s` the root unit's gather."""
    n = len(kinds.order)
    out = np.array(np.broadcast_to(exposed, (n,)), dtype=np.float64)
    for sequence, rows in _sequences(kinds, zero):
        out[rows] = walked_exposed_s(kinds.layers("gather_s", rows, sequence), 0.0,
                                     _spread(kinds, "fwd_s", rows, sequence, fwd_window_s),
                                     kinds.layers("fwd_lead_s", rows, sequence),
                                     before_s=np.broadcast_to(np.asarray(before_s, dtype=np.float64), (n,))[rows],
                                     prefetch=overlap.zero3_prefetch)
    return out


def walked_zero3_s(overlap: Overlap, t: DPTimes, e: Edges, kinds: KindPasses, *, zero, exposed, busy,
                   fwd_window_s, bwd_window_s, reshard, ahead_s, root_gathers, fwd_gathers):
    """cost.dp_exposure._zero3_exposed_s's (exposed, busy) with its ZeRO-3 rows whose view walks a
    layer sequence (a single stage's, or one pipeline stage's own: cost.kind_passes) walked layer
    by layer (walked_exposed_s), each layer its kind's calls, window and TP edges; a row's stall
    beyond its layers' windows (cost.dp_passes) spread evenly over them."""
    return walked_zero3_parts_s(overlap, t, e, kinds, zero=zero, exposed=exposed, busy=busy,
                                fwd_window_s=fwd_window_s, bwd_window_s=bwd_window_s, reshard=reshard,
                                ahead_s=ahead_s, root_gathers=root_gathers, fwd_gathers=fwd_gathers)[:2]


def walked_zero3_parts_s(overlap: Overlap, t: DPTimes, e: Edges, kinds: KindPasses, *, zero, exposed, busy,
                         fwd_window_s, bwd_window_s, reshard, ahead_s, root_gathers, fwd_gathers):
    """walked_zero3_s's (exposed, busy) and its walked forward with the root unit's gather
    (t.root_gather_s) before it, before the shares (root_gathers, fwd_gathers); NaN where not walked."""
    n = len(kinds.order)
    out = np.array(np.broadcast_to(exposed, (n,)), dtype=np.float64)
    held = np.array(np.broadcast_to(busy, (n,)), dtype=np.float64)
    forward = np.full(n, np.nan)
    prefetch = overlap.zero3_prefetch
    for sequence, rows in _sequences(kinds, zero):

        def at(values):
            return np.broadcast_to(np.asarray(values, dtype=np.float64), (n,))[rows]

        def own(name):
            return kinds.layers(name, rows, sequence)  # (layers, rows)

        gather, reduce = own("gather_s"), own("reduce_s")
        bwd_gather = np.where(at(np.asarray(reshard, dtype=np.float64)) > 0, gather, 0.0)
        fwd_w = _spread(kinds, "fwd_s", rows, sequence, fwd_window_s)
        bwd_w = _spread(kinds, "bwd_s", rows, sequence, bwd_window_s)
        rooted = walked_exposed_s(gather, 0.0, fwd_w, own("fwd_lead_s"), before_s=at(t.root_gather_s),
                                  prefetch=prefetch)
        forward[rows] = rooted
        root_n, fwd_n = at(root_gathers), at(fwd_gathers)
        if np.any(root_n != 1) or np.any(fwd_n != 1):
            bare = walked_exposed_s(gather, 0.0, fwd_w, own("fwd_lead_s"), prefetch=prefetch)
            rooted = rooted_forward_s(rooted, bare, root_n, fwd_n)
        # Backward runs the layers last first (sim.layer_program.stage_backward).
        backward = walked_exposed_s(bwd_gather[::-1], reduce[::-1], bwd_w[::-1], own("bwd_lead_s")[::-1],
                                    after_s=at(t.root_reduce_s), opening_s=at(ahead_s),
                                    behind_s=own("bwd_trail_s")[::-1], tail_s=at(e.bwd_tail_s), prefetch=prefetch)
        out[rows] = rooted + backward
        held[rows] = (root_n * at(t.root_gather_s) + fwd_n * gather.sum(axis=0) + bwd_gather.sum(axis=0)
                      + reduce.sum(axis=0) + at(t.root_reduce_s))
    return out, held, forward

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

import numpy as np


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
        gemm = np.maximum(compute + lead[i], landed[i])  # the layer's first GEMM waits for its gather
        compute = gemm + w[i] - lead[i]
        # RS_i after the layer's gradients; a layer without one (forward) leaves the stream as it is.
        stream = np.where(r[i] > 0, np.maximum(stream, compute - behind[i]) + r[i], stream)
        if i + 2 < n:
            stream = stream + g[i + 2]
            landed[i + 2] = stream
    end = np.maximum(compute + tail_s, stream) + after_s
    return end - (opening_s + w.sum(axis=0) + tail_s)

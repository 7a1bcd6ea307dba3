"""ZeRO-3's traffic layer by layer over one forward or backward pass: each layer's parameter
gather (and, in backward, its gradients' reduce-scatter) on one data-parallel stream against the
layers' compute, prefetched one layer ahead as Megatron-FSDP and FSDP2 issue it; the exposed
seconds are the longest path through the compute and the stream (cost.dp_exposure prices the
stage's passes from it; sim.layer_program orders the same calls on the simulator's streams).
Vectorized over candidates."""

from __future__ import annotations

import numpy as np


def layerwise_exposed_s(gather_s, reduce_s, window_s, layers, *, before_s=0.0, after_s=0.0, prefetch: bool = True,
                        ahead_s=0.0, behind_s=0.0, lead_s=0.0, tail_s=0.0):
    """ZeRO-3: exposed seconds of one pass (forward or backward) of `layers` layers, each gathering
    its parameters in gather_s (and, in backward, reduce-scattering its gradients in reduce_s) on
    one stream while computing window_s. The first layer's gather (after `before_s`, the root
    unit's gather in forward) and the last layer's reduce-scatter (then `after_s`, the root's) are
    never hidden, but for the work `ahead_s` that runs before the first layer's first GEMM (its
    TP all-gathers; in backward also the output layer's and the loss's, during which FSDP2's root
    pre-backward hook prefetches the last block, FSDPParamGroup.pre_backward) and `behind_s` after
    the last one's (its TP reduce-scatter, before which the root's cannot start). Without
    prefetch every gather waits in line before its layer, and each layer exposes what its
    reduce-scatter takes beyond its compute.
    With prefetch one layer ahead the stream runs G_0 G_1 RS_0 G_2 RS_1 ... G_n-1 RS_n-2 RS_n-1
    in host launch order (one NCCL communicator keeps it: Megatron-FSDP's
    docs/runtime_schedule.md, "Prefetching", AG_i-1 launched before Bwd_i and RS_i; FSDP2's
    FSDPParamGroup.pre_backward prefetches the next group, post_backward reduce-scatters; forward
    only gathers), layer i's first GEMM waits for G_i and RS_i for its gradients. The pass ends
    on the longest path through both streams (`_prefetched_paths_s`): n layers give n windows to
    the n - 1 gathers and reduce-scatters between the exposed first and last, the first window
    hiding only G_1 and the last only RS_n-2, and the stream is behind the compute only once it
    falls behind by the `lead_s` + `behind_s` around a layer's GEMMs (its TP collectives), beside
    which a reduce-scatter starts."""
    first = np.maximum(0.0, before_s + gather_s - ahead_s)
    # The root's is issued after the TP reduce-scatter and `tail_s` (the embedding's gradient passes).
    last = np.maximum(0.0, reduce_s - behind_s - tail_s)
    n = np.asarray(layers, dtype=np.float64)
    if not prefetch:
        out = first + (n - 1) * gather_s + (n - 1) * np.maximum(0.0, reduce_s - window_s) + last + after_s
    else:
        out = first + _prefetched_paths_s(gather_s, reduce_s, window_s, n, first_s=first, before_s=before_s,
                                          ahead_s=ahead_s, behind_s=behind_s, lead_s=lead_s) + last + after_s
    if np.all(n > 0):
        return out
    # No layer (a counted split's end chunk, pipeline_chunks.chunk_layer_counts): the root unit's calls alone.
    return np.where(n > 0, out, before_s + after_s)


def _prefetched_paths_s(gather_s, reduce_s, window_s, n, *, first_s, before_s, ahead_s, behind_s, lead_s):
    """layerwise_exposed_s's seconds beyond the first gather and the last reduce-scatter: the
    longest of the paths that leave the compute for the stream (a reduce-scatter released by its
    layer's gradients) and come back (a gather that holds a layer's first GEMM), each layer on the
    stream costing g + r instead of w: from the pass's start to a gather ("start"), from a
    reduce-scatter to the pass's end ("end"), both, or between two layers ("mid", which loses the
    TP collectives between a layer's gradients and the next one's GEMM); 0 for a single layer."""
    g, r, w = gather_s, reduce_s, window_s
    s = (n - 2) * (g + r - w)  # the middle layers on the stream, beyond their windows
    ahead = np.maximum(0.0, s)
    start = before_s + 2 * g - ahead_s - first_s - w  # G_0 G_1 hold the second layer
    several = n >= 2
    gathers = (np.asarray(g) > 0) & several
    # The longest path, at least 0: a path a pass does not have counts 0 (np.where's other branch).
    from_start = np.where(gathers, ahead + start, 0.0)
    if np.ndim(r) == 0 and r == 0:  # a forward pass: no reduce-scatter, only the start path
        return np.maximum(from_start, 0.0)
    end = 2 * r - w - np.maximum(behind_s, r)  # RS_n-2 RS_n-1 after the second-to-last layer
    reduces = (np.asarray(r) > 0) & several
    both = gathers & reduces
    mid = both & (n >= 3)
    longest = np.maximum(from_start, np.where(reduces, ahead + end, 0.0))
    longest = np.maximum(longest, np.where(both, s + start + end + lead_s + behind_s, 0.0))
    longest = np.maximum(longest, np.where(mid, np.maximum(s - lead_s - behind_s, start + end), 0.0))
    return np.maximum(longest, 0.0)


def rooted_forward_s(rooted_s, bare_s, root_gathers, fwd_gathers=1.0):
    """A root chunk's forward exposure per micro-batch when `fwd_gathers` of its forwards gather
    its layers (`bare_s`, the others gather nothing), `root_gathers` of them (as many or fewer)
    the root unit too (`rooted_s`): 1, or 1/m where the step's first forward alone gathers it
    (cost.fsdp.root_gathers_per_micro_batch, cost.fsdp.stage_synced)."""
    if np.all(np.asarray(root_gathers) == 1) and np.all(np.asarray(fwd_gathers) == 1):
        return rooted_s
    return (fwd_gathers - root_gathers) * bare_s + root_gathers * rooted_s

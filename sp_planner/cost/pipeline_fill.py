"""ZeRO-1's chunk-by-chunk parameter gathers in an interleaved pipeline's fill: how much later
each kind of stage starts its last model chunk than it would without them.

Megatron's aligned --overlap-param-gather (cost.overlap.chunk_gathers_ahead) puts each rank's
chunk 0 and chunk 1 gathers on its data-parallel stream at the step's start (schedules.py d98e8a6
lines 1218-1221) and chunk c >= 2's at virtual micro-batch k + rank, k the chunk c - 1's first
(lines 1341-1353): on the first stage when chunk c - 1's first forward starts, on stage s >= 1
at its forward of chunk c - 2 and micro-batch pp - s. A chunk's first forward waits for its
gather (the forward pre-hook, distributed_data_parallel.py lines 517-551); a stage after the
first holds each chunk in one bucket (cost.buckets), the last stage's last chunk with the output
layer (training.py lines 2390-2399). The waits compound down the stages: a chunk's first forward
starts after micro-batch 0's forward of it on the stage below, the stage's own pp forwards of
the chunk before, and its gather, the first stage's after the last stage's forward of the
chunk before. Vectorized over candidates (sim.pipeline runs the same order block by block).
"""

from __future__ import annotations

from functools import reduce
from typing import NamedTuple

import numpy as np


class FillStage(NamedTuple):
    """One kind of stage's gathers and chunk forward (arrays over candidates)."""

    first_s: np.ndarray  # chunk 0's gather its first forward waits for (the first stage's: exposed in it)
    stream_s: np.ndarray  # when chunk 0's calls leave its stream
    chunk_s: np.ndarray  # a later chunk's gather
    head_s: np.ndarray | float  # the output layer's, with the last chunk (the last stage's)
    fwd_s: np.ndarray  # a chunk's forward of one micro-batch


def fill_s(first: FillStage, middle: FillStage, last: FillStage, *, middles, pp, vpp, group=None):
    """(delays, before) of the (first, first middle, last) stages, their chunk starts priced once.
    delays: the seconds by which the gathers delay the first forward of each one's last chunk
    (module docstring); a pipeline of two has no middle stage. before: the seconds of their gathers
    that run before each one's first forward starts, beside its idle fill: chunks 0 and 1 go at the
    step's start, the later ones only from its forwards (module docstring); the rest runs beside
    its compute, which it slows (cost.overlap; sim.pipeline charges a gather beside idle time
    nothing). `group`: the micro-batch group N (pipeline_order.micro_batch_group; None: pp), whose
    forwards of a chunk a stage runs before the next chunk's and whose forward N - s (not pp - s)
    dispatches a gather on stage s >= 1 (schedules.py get_schedule_table, lines 989-1016)."""
    group = pp if group is None else group
    starts = _chunk_starts(first, middle, last, middles, pp, vpp, group)
    bare = [s._replace(first_s=s.first_s * 0.0, stream_s=s.stream_s * 0.0, chunk_s=s.chunk_s * 0.0, head_s=0.0)
            for s in (first, middle, last)]
    without = _chunk_starts(bare[0], bare[1], bare[2], middles, pp, vpp, group)[-1]
    delays = tuple(a - b for a, b in zip(starts[-1], without))
    vpp = np.asarray(vpp)
    before = tuple(np.minimum(start, s.stream_s + s.chunk_s + np.where(vpp == 2, s.head_s, 0.0))
                   for start, s in zip(starts[0], (first, middle, last)))
    return delays, before


def _chunk_starts(first, middle, last, middles, pp, vpp, group):
    """Each chunk's (first, first middle, last stage) first forward starts, chunk by chunk."""
    n, vpp = np.asarray(middles, dtype=np.float64), np.asarray(vpp)
    stages = (first, middle, last)
    rank = (0.0, 1.0, pp - 1.0)
    f = [s.fwd_s for s in stages]
    # Chunk 0: the first stage from the start (its gather exposed in its forward), the others
    # once micro-batch 0 arrives and their chunk-0 bucket is in.
    ends = [first.stream_s, middle.first_s, last.first_s]
    start0 = first.first_s * 0.0
    leave0 = start0 + first.first_s + f[0]
    start_mid = np.maximum(leave0, ends[1])
    start_last = np.maximum(np.where(n > 0, start_mid + n * f[1], leave0), ends[2])
    starts = [[start0, start_mid, start_last]]
    for c in range(1, int(np.max(vpp))):
        here = c < vpp
        prev = starts[-1]
        for i, s in enumerate(stages):
            own = s.chunk_s + np.where(c == vpp - 1, s.head_s, 0.0)
            if c == 1:
                ends[i] = ends[i] + own
            else:
                dispatch = prev[0] if i == 0 else starts[-2][i] + (group - rank[i]) * f[i]
                ends[i] = np.where(here, np.maximum(ends[i], dispatch) + own, ends[i])
        # After its pp forwards of the chunk before (the first stage's first with its exposed
        # gather), micro-batch 0's forward of this chunk below it, and its gather.
        extra = first.first_s if c == 1 else 0.0
        s0 = reduce(np.maximum, [prev[2] + f[2], prev[0] + extra + group * f[0], ends[0]])
        s1 = reduce(np.maximum, [s0 + f[0], prev[1] + group * f[1], ends[1]])
        below = np.where(n > 0, s1 + n * f[1], s0 + f[0])
        s2 = reduce(np.maximum, [below, prev[2] + group * f[2], ends[2]])
        starts.append([np.where(here, new, old) for new, old in zip((s0, s1, s2), prev)])
    return starts

"""How many members the groups of one layout shape put on each node they touch.

cost.links prices a collective from its group's shape: `size` ranks `stride` apart on nodes of
`gpus_per_node` (sp_planner.layout). Shapes that tile nodes evenly have closed forms there. Uneven
ones -- 12 ranks on 8-GPU nodes put 8 members on one node and 4 on the next, or 4 and 8 -- are
counted here once per shape (cached): the layout's groups start at x + span*y (x below the
stride, span = size x stride), and the node pattern repeats every lcm(span, gpus_per_node) ranks,
which every world holding such groups is a multiple of.
"""

from __future__ import annotations

from functools import lru_cache, partial
from math import lcm

import numpy as np

from sp_planner.distinct import DISTINCT_MIN_ROWS, per_distinct


def period_groups(size: int, stride: int, gpus_per_node: int) -> np.ndarray:
    """(groups, size) global ranks of the groups of one period of the layout, members ascending."""
    span = size * stride
    starts = (np.arange(stride)[:, None] + span * np.arange(lcm(span, gpus_per_node) // span)[None, :]).ravel()
    return starts[:, None] + stride * np.arange(size)[None, :]


@lru_cache(maxsize=4096)
def node_counts(size: int, stride: int, gpus_per_node: int) -> tuple[int, int, tuple[int, ...]]:
    """(r, k, counts): r, the fewest members any group has on a node it touches; k, the most nodes
    a group spans; counts, every number of members some group has on some node, ascending."""
    seen: set[int] = set()
    most = 1
    for row in period_groups(size, stride, gpus_per_node) // gpus_per_node:
        _, per_node = np.unique(row, return_counts=True)
        seen.update(int(c) for c in per_node)
        most = max(most, per_node.size)
    counts = tuple(sorted(seen))
    return counts[0], most, counts


def node_occupancy(size, stride, gpus_per_node: int):
    """(r, k) for groups of `size` ranks `stride` apart (vectorized): r, the fewest members any group
    of this shape has on one node it touches, and k, the most nodes a group spans.

    Even shapes -- a group inside one node, one member a node (stride >= gpus_per_node), or the
    same count on every node (the span a whole number of nodes, the stride dividing a node) -- are
    looked up. Uneven ones (a span that neither fits nor tiles nodes: 12 ranks on 8-GPU nodes put
    8 on one node and 4 on the next, or 4 and 8) are counted over every group of one period of the
    layout (node_counts): the node with the fewest members drives the fewest NICs, which bounds a
    ring's network rate (busbw = members per node x NIC: 45 against 90 GB/s all_reduce on 4 nodes
    at 4 and at 8 GPUs a node, NVIDIA/nccl#1168).
    """
    size, stride = np.broadcast_arrays(np.asarray(size), np.asarray(stride))
    if size.size >= DISTINCT_MIN_ROWS:
        # A search's columns hold a few shapes: each is worked out once (the modulos cost most on floats).
        whole = size.astype(np.int64), stride.astype(np.int64)
        if np.array_equal(whole[0], size) and np.array_equal(whole[1], stride):
            return per_distinct(partial(_node_occupancy, gpus_per_node=gpus_per_node,
                                        dtypes=(size.dtype, stride.dtype)), *whole)
    return _node_occupancy(size, stride, gpus_per_node)


def _node_occupancy(size, stride, gpus_per_node: int, dtypes=None):
    """node_occupancy of broadcast columns (in `dtypes`, where given: the columns' own)."""
    if dtypes is not None:
        size, stride = size.astype(dtypes[0]), stride.astype(dtypes[1])
    r, k, even, size, stride = _even_occupancy(size, stride, gpus_per_node)
    if np.all(even):
        return r, k
    r, k = np.array(r, dtype=np.float64), np.array(k, dtype=np.float64)
    shapes, where = _uneven_shapes(size, stride, even)
    counted = np.array([node_counts(int(n), int(s), gpus_per_node)[:2] for n, s in shapes], dtype=np.float64)
    r[~even], k[~even] = counted[where, 0], counted[where, 1]
    return r, k


def member_counts(size, stride, gpus_per_node: int):
    """Every number of members a group of this shape has on some node it touches, (..., J) for
    `size`'s shape (vectorized; padded with the fewest): one column, node_occupancy's r, for even
    shapes; uneven ones list each count (node_counts: 4 and 8 for 12 ranks on 8-GPU nodes)."""
    r, _, even, size, stride = _even_occupancy(size, stride, gpus_per_node)
    if np.all(even):
        return np.asarray(r, dtype=np.float64)[..., None]
    shapes, where = _uneven_shapes(size, stride, even)
    lists = [node_counts(int(n), int(s), gpus_per_node)[2] for n, s in shapes]
    table = np.array([c + (c[0],) * (max(map(len, lists)) - len(c)) for c in lists], dtype=np.float64)
    out = np.repeat(np.asarray(r, dtype=np.float64)[..., None], table.shape[1], axis=-1)
    out[~even] = table[where]
    return out


def _even_occupancy(size, stride, gpus_per_node: int):
    """node_occupancy's looked-up (r, k), whether each shape is even, and the broadcast size and
    stride."""
    size, stride = np.broadcast_arrays(np.asarray(size), np.asarray(stride))
    # Members per node by stride, looked up (0..gpus_per_node, one slot for "more": 1 member).
    strides = np.arange(gpus_per_node + 2)
    members = np.maximum(gpus_per_node // np.maximum(strides, 1), 1)
    r = np.minimum(size, members[np.clip(stride, 0, gpus_per_node + 1).astype(np.intp)])
    k = np.maximum(size / np.maximum(r, 1), 1.0)
    span = size * stride
    even = ((size <= 1) | (stride >= gpus_per_node) | (gpus_per_node % np.maximum(span, 1) == 0)
            | ((span % gpus_per_node == 0) & (gpus_per_node % np.maximum(stride, 1) == 0)))
    return r, k, np.asarray(even), size, stride


def _uneven_shapes(size, stride, even):
    """The distinct (size, stride) pairs of the uneven shapes, and each uneven entry's index among them."""
    pairs = np.stack([size[~even], stride[~even]], axis=1).astype(np.int64)
    shapes, where = np.unique(pairs, axis=0, return_inverse=True)
    return shapes, where.ravel()

"""ZeRO-3's passes of an interleaved pipeline stage (vpp > 1) whose layers differ, walked chunk by
chunk: each model chunk its own layers (cost.kind_passes.stage_sequences) walked layer by layer
(cost.layer_walk), as sim.layer_program runs each chunk as its own forward and backward and
Megatron's get_model wraps each chunk as its own FSDP module (megatron/training/training.py lines
2390-2399 at d98e8a6). Llama 4 Maverick over pp 2 x vpp 2 holds layers 0-11 and 24-35 on its first
stage, dense and MoE in turn in each chunk: the closed forms over the stage's average layer hid
the MoE layers' gathers that the simulator's chunks expose (8.825 s analytic against 10.153 s).

The root unit (the first stage's embedding, the last stage's output layer and final norm) goes
with its chunk (KindPasses.root_chunk), with the loss's backward ahead of it (the last stage's)
and the embedding's behind it (the first stage's, Edges.bwd_tail_s); each chunk's windows are its
layers' share of the stage's (cost.layer_walk spreads a window's stall over its layers).
Vectorized over candidates, a loop over the chunks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from sp_planner.cost.layer_walk import walked_forward_s, walked_zero3_parts_s

if TYPE_CHECKING:
    from sp_planner.cost.dp_exposure import DPTimes, Edges
    from sp_planner.cost.kind_passes import KindPasses
    from sp_planner.cost.overlap import Overlap


def interleaved_rows(kinds: KindPasses | None, zero) -> np.ndarray | None:
    """The mask of the rows of a stage's view (KindPasses.stage) that walk their chunks under
    ZeRO-3; None where there are none."""
    if kinds is None or kinds.chunk_orders is None:
        return None
    rows = (kinds.chunk_orders[:, 0] >= 0) & (np.broadcast_to(np.asarray(zero), kinds.order.shape) == 3)
    return rows if np.any(rows) else None


def _chunk_count(kinds: KindPasses) -> np.ndarray:
    assert kinds.chunk_orders is not None
    return (kinds.chunk_orders >= 0).sum(axis=1)


def chunk_windows_s(kinds: KindPasses, rows, name: str, window_s) -> np.ndarray:
    """(chunks, rows) each chunk's window `name` ("fwd_s" or "bwd_s") of a stage view whose stage
    window is `window_s`: its layers' own kinds' (as the simulator runs each layer) and its layers'
    share of the stage's stall beyond its layers' own (cost.layer_walk spreads it likewise)."""
    assert kinds.chunk_orders is not None
    orders = np.where(np.asarray(rows)[:, None], kinds.chunk_orders, -1)
    own = kinds.sums(name, orders)  # (rows, chunks)
    sizes = np.array([len(s) for s in kinds.sequences] + [0])[orders]
    stall = (np.asarray(window_s, dtype=np.float64) - own.sum(axis=1)) / np.maximum(sizes.sum(axis=1), 1)
    return (own + sizes * stall[:, None]).T


class ChunkWalks(NamedTuple):
    """Each chunk's walk of one micro-batch on a stage view's interleaved ZeRO-3 rows (chunk_walks)."""

    rows: np.ndarray  # (rows,) the mask of the rows that walk their chunks (interleaved_rows)
    chunks: np.ndarray  # (rows,) each row's chunks
    root: np.ndarray  # (rows,) the chunk holding the root unit (KindPasses.root_chunk)
    exposed: np.ndarray  # (chunks, rows) each chunk's exposed seconds (NaN where not walked) ...
    total: np.ndarray  # (rows,) the chunks' exposed seconds summed (0 where not walked) ...
    held: np.ndarray  # ... and their calls'
    # (chunks, rows) each chunk's forward exposure before the shares, the root's chunk's with the
    # root unit's gather before it, and (rows,) the root's chunk's without it (NaN where not walked).
    forward: np.ndarray
    bare_root: np.ndarray


def chunk_walks(overlap: Overlap, t: DPTimes, e: Edges, kinds: KindPasses | None, *, zero, fwd_window_s,
                bwd_window_s, reshard, ahead_s, root_gathers, fwd_gathers) -> ChunkWalks | None:
    """Each chunk of a stage view's rows that walk their chunks (interleaved_rows; None where none)
    walked on its own (cost.layer_walk.walked_zero3_s): the root unit's calls, the loss's backward
    ahead (`ahead_s`) and the embedding's behind (e.bwd_tail_s) with the root's chunk only. The
    stage's cycle sums them (walked_chunks_s); the interleaved fill's and drain's chunk blocks
    read chunk 0's and the last one's (chunk_walk_s), the same walks."""
    rows = interleaved_rows(kinds, zero)
    if rows is None or kinds is None:
        return None
    count, n = _chunk_count(kinds), len(kinds.order)
    fwd_w, bwd_w = (chunk_windows_s(kinds, rows, name, w) for name, w in (("fwd_s", fwd_window_s),
                                                                           ("bwd_s", bwd_window_s)))
    # Every chunk a row walks one row of a single walk, so that the chunks that hold alike layers
    # (Maverick's) walk once (cost.layer_walk groups by sequence).
    chunks = fwd_w.shape[0]
    pairs = np.flatnonzero((rows[None, :] & (np.arange(chunks)[:, None] < count[None, :])).ravel())
    j, at = np.divmod(pairs, n)  # chunk j's rows the j-th n
    root = np.broadcast_to(np.asarray(kinds.root_chunk), (n,))[at] == j

    def each(values):
        return np.broadcast_to(np.asarray(values, dtype=np.float64), (n,))[at]

    def rooted(values):
        return np.where(root, each(values), 0.0)

    assert kinds.chunk_orders is not None
    view = kinds.stacked(at, kinds.chunk_orders[at, j])
    out, calls, forward = walked_zero3_parts_s(overlap, t._replace(root_gather_s=rooted(t.root_gather_s),
                                                    root_reduce_s=rooted(t.root_reduce_s)),
                                e._replace(bwd_tail_s=rooted(e.bwd_tail_s)), view,
                                zero=np.broadcast_to(np.asarray(zero), (n,))[at], exposed=0.0, busy=0.0,
                                fwd_window_s=fwd_w.ravel()[pairs], bwd_window_s=bwd_w.ravel()[pairs],
                                reshard=each(reshard), ahead_s=rooted(ahead_s), root_gathers=each(root_gathers),
                                fwd_gathers=each(fwd_gathers))
    exposed, forwards, bare_root = np.full(chunks * n, np.nan), np.full(chunks * n, np.nan), np.full(n, np.nan)
    exposed[pairs], forwards[pairs] = out, forward
    # The root's chunk's forward without the root unit's gather (the fill's and drain's blocks).
    held_root = np.flatnonzero(root)
    bare_root[at[held_root]] = walked_forward_s(overlap, kinds.stacked(at[held_root], view.order[held_root]),
                                                zero=np.broadcast_to(np.asarray(zero), (n,))[at[held_root]],
                                                exposed=np.nan, fwd_window_s=fwd_w.ravel()[pairs][held_root])
    return ChunkWalks(rows, count, np.broadcast_to(np.asarray(kinds.root_chunk), (n,)), exposed.reshape(chunks, n),
                      np.bincount(at, out, minlength=n), np.bincount(at, calls, minlength=n),
                      forwards.reshape(chunks, n), bare_root)


def walked_chunks_s(overlap: Overlap, t: DPTimes, e: Edges, kinds: KindPasses | None, *, zero, exposed, busy,
                    fwd_window_s, bwd_window_s, reshard, ahead_s, root_gathers, fwd_gathers,
                    walks: ChunkWalks | None = None):
    """cost.dp_exposure.micro_batch_dp_s's ZeRO-3 (exposed, busy) of one micro-batch on a stage,
    its rows that walk their chunks (interleaved_rows) the sum of each chunk's walk (chunk_walks;
    `walks`: the same, where the caller has them)."""
    if walks is None:
        walks = chunk_walks(overlap, t, e, kinds, zero=zero, fwd_window_s=fwd_window_s, bwd_window_s=bwd_window_s,
                            reshard=reshard, ahead_s=ahead_s, root_gathers=root_gathers, fwd_gathers=fwd_gathers)
    if walks is None:
        return exposed, busy
    return np.where(walks.rows, walks.total, exposed), np.where(walks.rows, walks.held, busy)


def chunk_walk_s(walks: ChunkWalks | None, exposed, *, last: bool):
    """`exposed` (one micro-batch through one chunk alone: cost.pipeline_blocks' chunk blocks of
    the interleaved fill and drain) with the rows that walk their chunks read from their stage's
    `walks`: chunk 0's, or (`last`) the last chunk's."""
    if walks is None:
        return exposed
    j = walks.chunks - 1 if last else np.zeros(len(walks.chunks), dtype=np.int64)
    return np.where(walks.rows, walks.exposed[np.maximum(j, 0), np.arange(len(j))], exposed)


def chunk_forwards_s(walks: ChunkWalks | None, *, plain, rooted):
    """ZeRO-3's forward exposures of one micro-batch through an interleaved stage's chunks, the
    closed forms' (`plain`: a chunk's without the root unit; `rooted`: the root's chunk's (with,
    without) its gather, or None on a middle stage) with the rows that walk their chunks read from
    the stage cycle's walks (chunk_walks): ((chunk 0's, the middle chunks' mean, the last chunk's)
    without the root, and the root's chunk's (with, without) it or None)."""
    if walks is None:
        return (plain, plain, plain), rooted
    rows, count, n = walks.rows, walks.chunks, len(walks.chunks)
    at = np.arange(n)

    def bare(j):  # chunk j's forward without the root unit's gather
        j = np.clip(j, 0, walks.forward.shape[0] - 1)
        return np.where(j == walks.root, walks.bare_root, walks.forward[j, at])

    closed = np.broadcast_to(np.asarray(plain, dtype=np.float64), (n,))

    def read(walked, fallback):
        return np.where(rows, walked, fallback)

    middles = range(1, int(count.max()) - 1)
    inside = np.array([(j < count - 1) for j in middles]).reshape(-1, n)
    walked = np.array([bare(np.full(n, j)) for j in middles]).reshape(-1, n)
    middle = np.where(inside, walked, 0.0).sum(axis=0)
    middle = np.where(rows & (count > 2), middle / np.maximum(count - 2, 1), closed)
    first, last = bare(np.zeros(n, dtype=np.int64)), bare(count - 1)
    if rooted is None:
        return (read(first, closed), middle, read(last, closed)), None
    # The root's end is read rooted only (cost.zero3_forwards.chunk_zero3_forwards_s): the other end walked.
    first_stage = np.all(walks.root == 0)  # the first stage's chunk 0, else the last's last
    pair = (plain, read(last, closed)) if first_stage else (read(first, closed), plain)
    with_root = walks.forward[np.clip(walks.root, 0, None), at]
    return (pair[0], middle, pair[1]), (read(with_root, rooted[0]), read(walks.bare_root, rooted[1]))

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

from typing import TYPE_CHECKING

import numpy as np

from sp_planner.cost.layer_walk import walked_forward_s, walked_zero3_s

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


def walked_chunks_s(overlap: Overlap, t: DPTimes, e: Edges, kinds: KindPasses | None, *, zero, exposed, busy,
                    fwd_window_s, bwd_window_s, reshard, ahead_s, root_gathers, fwd_gathers):
    """cost.dp_exposure.micro_batch_dp_s's ZeRO-3 (exposed, busy) of one micro-batch on a stage,
    its rows that walk their chunks (interleaved_rows) the sum of each chunk's walk
    (cost.layer_walk.walked_zero3_s): the root unit's calls, the loss's backward ahead (`ahead_s`)
    and the embedding's behind (e.bwd_tail_s) with the root's chunk only."""
    rows = interleaved_rows(kinds, zero)
    if rows is None or kinds is None:
        return exposed, busy
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
    out, calls = walked_zero3_s(overlap, t._replace(root_gather_s=rooted(t.root_gather_s),
                                                    root_reduce_s=rooted(t.root_reduce_s)),
                                e._replace(bwd_tail_s=rooted(e.bwd_tail_s)), view,
                                zero=np.broadcast_to(np.asarray(zero), (n,))[at], exposed=0.0, busy=0.0,
                                fwd_window_s=fwd_w.ravel()[pairs], bwd_window_s=bwd_w.ravel()[pairs],
                                reshard=each(reshard), ahead_s=rooted(ahead_s), root_gathers=each(root_gathers),
                                fwd_gathers=each(fwd_gathers))
    total, held = np.bincount(at, out, minlength=n), np.bincount(at, calls, minlength=n)
    return np.where(rows, total, exposed), np.where(rows, held, busy)


def chunk_view(kinds: KindPasses | None, zero, *, last: bool, fwd_window_s, bwd_window_s):
    """(view, its forward and backward windows) of a stage view's chunk 0 (or, `last`, its last
    chunk) walked alone on its interleaved rows (cost.pipeline_blocks' chunk blocks of the
    interleaved fill and drain), the stage's windows given; None where none."""
    rows = interleaved_rows(kinds, zero)
    if rows is None or kinds is None:
        return None
    j = _chunk_count(kinds) - 1 if last else np.zeros(len(kinds.order), dtype=np.int64)
    at = np.arange(len(j))
    fwd_w, bwd_w = (chunk_windows_s(kinds, rows, name, w)[j, at] for name, w in (("fwd_s", fwd_window_s),
                                                                                  ("bwd_s", bwd_window_s)))
    return kinds.chunk(np.where(rows, j, -1)), fwd_w, bwd_w


def chunk_forwards_s(overlap: Overlap, kinds: KindPasses | None, *, zero, plain, rooted, fwd_window_s,
                     root_gather_s):
    """ZeRO-3's forward exposures of one micro-batch through an interleaved stage's chunks (its
    forward window `fwd_window_s`), the closed forms' (`plain`: a chunk's without the root unit;
    `rooted`: the root's chunk's (with, without) its gather, or None on a middle stage) with the
    rows that walk their chunks walked: ((chunk 0's, the middle chunks' mean, the last chunk's)
    without the root, and the root's chunk's (with, without) it or None)."""
    rows = interleaved_rows(kinds, zero)
    if rows is None or kinds is None:
        return (plain, plain, plain), rooted
    count, n = _chunk_count(kinds), len(kinds.order)
    windows = chunk_windows_s(kinds, rows, "fwd_s", fwd_window_s)
    # Each walk one block of rows of a single walk (alike chunks walk once, cost.layer_walk):
    # (chunk, the root unit's gather before it) per block, every block of n rows.
    ends = [(np.zeros(n, dtype=np.int64), 0.0), (count - 1, 0.0)]
    middles = [(np.full(n, j), 0.0) for j in range(1, int(count.max()) - 1)]
    blocks = ends + middles
    if rooted is not None:
        root = np.broadcast_to(np.asarray(kinds.root_chunk), (n,))
        blocks += [(root, root_gather_s), (root, 0.0)]
    chunk = np.concatenate([np.clip(j, 0, windows.shape[0] - 1) for j, _ in blocks])
    pairs = np.flatnonzero(np.tile(rows, len(blocks)))  # only the rows that walk their chunks
    at, chunk = np.tile(np.arange(n), len(blocks))[pairs], chunk[pairs]
    assert kinds.chunk_orders is not None
    before = np.concatenate([np.broadcast_to(np.asarray(b, dtype=np.float64), (n,)) for _, b in blocks])[pairs]
    flat = np.full(len(blocks) * n, np.nan)
    flat[pairs] = walked_forward_s(overlap, kinds.stacked(at, kinds.chunk_orders[at, chunk]),
                                   zero=np.broadcast_to(np.asarray(zero), (n,))[at], exposed=np.nan,
                                   fwd_window_s=windows[chunk, at], before_s=before)
    walked = flat.reshape(-1, n)  # (blocks, rows)
    closed = np.broadcast_to(np.asarray(plain, dtype=np.float64), (n,))

    def read(i, fallback):
        return np.where(rows, walked[i], fallback)

    inside = np.array([(j < count - 1) for j, _ in middles]).reshape(-1, n)
    middle = np.where(inside, walked[2:2 + len(middles)], 0.0).sum(axis=0)
    middle = np.where(rows & (count > 2), middle / np.maximum(count - 2, 1), closed)
    if rooted is None:
        return (read(0, closed), middle, read(1, closed)), None
    # The root's end is read rooted only (cost.pipeline_blocks._zero3_forward_s): the other end walked.
    first_stage = np.all(np.asarray(kinds.root_chunk) == 0)  # the first stage's chunk 0, else the last's last
    pair = (plain, read(1, closed)) if first_stage else (read(0, closed), plain)
    return (pair[0], middle, pair[1]), (read(-2, rooted[0]), read(-1, rooted[1]))

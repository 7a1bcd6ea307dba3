"""Which blocks a rank computes (torch-free): the ring's per step (executor.ring) and all-gather
CP's kernel calls (executor.allgather), shared with executor.step_memory's replay of a step."""

from __future__ import annotations

from typing import NamedTuple

from sp_planner.plan import RingLayout

ALL = slice(None)


class Block(NamedTuple):
    """Which local rows (queries) and which rows of the visiting K/V block one step attends."""

    q_rows: slice
    kv_rows: slice
    causal: bool


def block_for_step(step: int, rank: int, size: int, seq_local: int, *, causal: bool,
                   layout: RingLayout) -> Block | None:
    """The work of `step`, when this rank holds the K/V of ring rank (rank - step) mod size.

    Contiguous causal: earlier ranks' blocks are full, the own block causal, later ones skipped.
    Zigzag causal (ring-flash-attention zigzag): an earlier rank's block is seen by every query
    through its first chunk only; a later rank's block is seen whole by the second query chunk.
    """
    if not causal:
        return Block(ALL, ALL, False)
    if step == 0:
        return Block(ALL, ALL, True)
    source = (rank - step) % size
    if layout == "contiguous":
        return Block(ALL, ALL, False) if source < rank else None
    half = seq_local // 2
    if source < rank:
        return Block(ALL, slice(0, half), False)
    return Block(slice(half, None), ALL, False)


class Piece(NamedTuple):
    """One kernel call: local query rows against global keys [kv_start, kv_end)."""

    q_rows: slice
    kv_start: int
    kv_end: int
    causal: bool


def pieces_for_rank(rank: int, size: int, seq_len: int, *, causal: bool, layout: RingLayout) -> list[Piece]:
    """The kernel calls of one ring rank, in order; the first of each query chunk covers all its rows."""
    seq_local = seq_len // size
    if not causal:
        return [Piece(slice(None), 0, seq_len, False)]
    zigzag = layout == "zigzag" and size > 1
    chunk = seq_local // 2 if zigzag else seq_local
    owned = [rank, 2 * size - 1 - rank] if zigzag else [rank]
    pieces = []
    for i, c in enumerate(owned):
        rows, start = slice(i * chunk, (i + 1) * chunk), c * chunk
        pieces.append(Piece(rows, start, start + chunk, True))  # the diagonal block
        if start > 0:
            pieces.append(Piece(rows, 0, start, False))  # every earlier key
    return pieces

"""Which query rows and keys each all-gather CP kernel call covers (sp_planner.executor.allgather)."""

import pytest
import torch

from sp_planner.executor.blocks import Piece, pieces_for_rank
from sp_planner.executor.sharding import local_token_index


def _covered(size, seq_len, layout, causal):
    """(query, key) pairs computed over all ranks, counted; the causal diagonal blocks count their
    lower triangle only."""
    counts = torch.zeros(seq_len, seq_len, dtype=torch.int64)
    for rank in range(size):
        tokens = local_token_index(seq_len, ring=size, ulysses=1, ring_rank=rank, ulysses_rank=0, layout=layout)
        for piece in pieces_for_rank(rank, size, seq_len, causal=causal, layout=layout):
            for q in tokens[piece.q_rows].tolist():
                for k in range(piece.kv_start, piece.kv_end):
                    if not piece.causal or k - piece.kv_start <= q - tokens[piece.q_rows][0].item():
                        counts[q, k] += 1
    return counts


@pytest.mark.parametrize("size, layout", [(3, "zigzag"), (4, "zigzag"), (3, "contiguous")])
def test_pieces_cover_the_causal_triangle_exactly_once(size, layout):
    seq_len = 2 * size * 3
    assert torch.equal(_covered(size, seq_len, layout, True), torch.tril(torch.ones(seq_len, seq_len)).long())


def test_full_mask_is_one_call_over_every_key():
    assert pieces_for_rank(1, 3, 12, causal=False, layout="zigzag") == [Piece(slice(None), 0, 12, False)]
    assert torch.equal(_covered(3, 12, "zigzag", False), torch.ones(12, 12, dtype=torch.int64))


def test_zigzag_balances_work_across_ranks():
    def area(piece, chunk):
        rows = chunk
        return rows * (piece.kv_end - piece.kv_start) / (2 if piece.causal else 1)

    size, seq_len = 4, 32
    totals = {sum(area(p, 4) for p in pieces_for_rank(r, size, seq_len, causal=True, layout="zigzag"))
              for r in range(size)}
    assert totals == {2 * 4 * 4 / 2 + 4 * 7 * 4}  # two diagonals + (2R-1) earlier chunks of 4x4

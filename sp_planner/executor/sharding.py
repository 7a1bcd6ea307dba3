"""Which global tokens a rank holds: the one sharding function shared by the executor, its
validation and its tests (as yunchang's `extract_local`).

Ring level first: contiguous gives ring rank r the r-th of R chunks; zigzag splits the sequence
into 2R chunks and gives ring rank r chunks r and 2R-1-r, which balances causal work (zhuzilin
ring-flash-attention #2; USP paper Alg. 2). The Ulysses level then splits that ring shard into U
contiguous pieces, in Ulysses-rank order, so the Ulysses all-to-all reassembles the ring shard.
"""

from __future__ import annotations

import torch

from sp_planner.plan import RingLayout


def local_token_index(seq_len: int, *, ring: int, ulysses: int, ring_rank: int, ulysses_rank: int,
                      layout: RingLayout) -> torch.Tensor:
    """Global token positions held by (ring_rank, ulysses_rank), in local order (int64)."""
    zigzag = layout == "zigzag" and ring > 1
    chunks = 2 * ring if zigzag else ring
    if seq_len % (chunks * ulysses) != 0:
        raise ValueError(f"seq_len {seq_len} is not divisible by {chunks} chunks x ulysses {ulysses}")
    if not (0 <= ring_rank < ring and 0 <= ulysses_rank < ulysses):
        raise ValueError(f"rank ({ring_rank}, {ulysses_rank}) is outside ring {ring} x ulysses {ulysses}")
    chunk = seq_len // chunks
    owned = [ring_rank, 2 * ring - 1 - ring_rank] if zigzag else [ring_rank]
    ring_shard = torch.cat([torch.arange(c * chunk, (c + 1) * chunk) for c in owned])
    piece = ring_shard.numel() // ulysses
    return ring_shard[ulysses_rank * piece:(ulysses_rank + 1) * piece]


def extract_local(x: torch.Tensor, dim: int, *, ring: int, ulysses: int, ring_rank: int,
                  ulysses_rank: int, layout: RingLayout) -> torch.Tensor:
    """This rank's tokens of a global tensor along `dim`: (.., S, ..) -> (.., S/(U*R), ..)."""
    index = local_token_index(x.shape[dim], ring=ring, ulysses=ulysses, ring_rank=ring_rank,
                              ulysses_rank=ulysses_rank, layout=layout)
    return x.index_select(dim, index.to(x.device)).contiguous()

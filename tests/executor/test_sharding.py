"""The sharding layout shared by executor and validation (sp_planner.executor.sharding)."""

import pytest
import torch

from sp_planner.executor.sharding import extract_local, local_token_index


def test_zigzag_rank_holds_chunks_i_and_2r_minus_1_minus_i():
    # 4 ring ranks, 16 tokens: 8 chunks of 2; USP paper's example has GPU0 = {0, 1, 14, 15}.
    expected = {0: [0, 1, 14, 15], 1: [2, 3, 12, 13], 2: [4, 5, 10, 11], 3: [6, 7, 8, 9]}
    for rank, tokens in expected.items():
        got = local_token_index(16, ring=4, ulysses=1, ring_rank=rank, ulysses_rank=0, layout="zigzag")
        assert got.tolist() == tokens


def test_contiguous_rank_holds_its_block():
    got = local_token_index(12, ring=3, ulysses=1, ring_rank=1, ulysses_rank=0, layout="contiguous")
    assert got.tolist() == [4, 5, 6, 7]


def test_ulysses_splits_the_ring_shard_in_rank_order():
    # ring 2 zigzag over 24 tokens: ring rank 0 holds chunks 0 and 3 = [0..5] + [18..23];
    # ulysses 2 splits that shard into halves.
    args = dict(ring=2, ulysses=2, ring_rank=0, layout="zigzag")
    assert local_token_index(24, ulysses_rank=0, **args).tolist() == [0, 1, 2, 3, 4, 5]
    assert local_token_index(24, ulysses_rank=1, **args).tolist() == [18, 19, 20, 21, 22, 23]


@pytest.mark.parametrize("layout", ["contiguous", "zigzag"])
@pytest.mark.parametrize(("ring", "ulysses", "seq_len"), [(1, 4, 20), (3, 1, 42), (2, 3, 36)])
def test_shards_partition_the_sequence(layout, ring, ulysses, seq_len):
    seen = torch.cat([
        local_token_index(seq_len, ring=ring, ulysses=ulysses, ring_rank=r, ulysses_rank=u, layout=layout)
        for r in range(ring) for u in range(ulysses)
    ])
    assert sorted(seen.tolist()) == list(range(seq_len))


def test_extract_local_selects_along_dim():
    x = torch.arange(2 * 8 * 3).reshape(2, 8, 3)
    local = extract_local(x, 1, ring=2, ulysses=1, ring_rank=1, ulysses_rank=0, layout="zigzag")
    assert local.shape == (2, 4, 3)
    assert torch.equal(local, x[:, [2, 3, 4, 5]])


def test_indivisible_sequence_is_rejected():
    with pytest.raises(ValueError, match="not divisible by 4 chunks x ulysses 2"):
        local_token_index(20, ring=2, ulysses=2, ring_rank=0, ulysses_rank=0, layout="zigzag")

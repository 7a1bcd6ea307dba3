"""Which part of each visiting K/V block a ring step computes (sp_planner.executor.ring)."""

from sp_planner.executor.blocks import ALL, Block, block_for_step


def _work(block, seq_local):
    """Query rows x key rows a step computes (a causal block counts as half)."""
    if block is None:
        return 0
    rows = len(range(seq_local)[block.q_rows])
    cols = len(range(seq_local)[block.kv_rows])
    return rows * cols / (2 if block.causal else 1)


def test_zigzag_balances_causal_work_across_ranks():
    size, seq_local = 4, 8
    totals = [sum(_work(block_for_step(step, rank, size, seq_local, causal=True, layout="zigzag"), seq_local)
                  for step in range(size)) for rank in range(size)]
    assert totals == [32 + 3 * 32] * size  # step 0: 8x8/2; each later step: half of 8x8


def test_contiguous_causal_skips_later_ranks_blocks():
    size, seq_local = 4, 8
    blocks = [block_for_step(step, 1, size, seq_local, causal=True, layout="contiguous") for step in range(size)]
    # rank 1 holds its own block at step 0, rank 0's at step 1, ranks 3 and 2's later (skipped)
    assert blocks == [Block(ALL, ALL, True), Block(ALL, ALL, False), None, None]


def test_zigzag_halves():
    early = block_for_step(1, 2, 4, 8, causal=True, layout="zigzag")  # source rank 1 < 2
    late = block_for_step(3, 2, 4, 8, causal=True, layout="zigzag")  # source rank 3 > 2
    assert early == Block(ALL, slice(0, 4), False)
    assert late == Block(slice(4, None), ALL, False)


def test_full_mask_computes_every_block():
    for layout in ("contiguous", "zigzag"):
        assert all(block_for_step(s, 0, 3, 6, causal=False, layout=layout) == Block(ALL, ALL, False)
                   for s in range(3))

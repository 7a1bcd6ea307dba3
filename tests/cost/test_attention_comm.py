"""cost.attention_comm: the Ulysses layout copies, by hand."""

import numpy as np

from sp_planner.cost.attention_comm import ULYSSES_LAYOUT_COPIES, ulysses_layout_copy_bytes


def test_layout_copies_read_and_write_the_ranks_tensor_twice():
    # b 2 x S 8192 over U 4 x R 2: 2048 tokens of 4 heads x 128 bf16 on the rank; two copies, each a
    # read and a write: 2 x 2 x 2048 x 4 x 128 x 2 B.
    shape = dict(batch=2, seq_len=8192, heads=4, head_dim=128, ring=2, elem_bytes=2)
    assert ULYSSES_LAYOUT_COPIES == 2
    assert ulysses_layout_copy_bytes(ulysses=4, **shape) == 2 * 2 * 2048 * 4 * 128 * 2
    # Without Ulysses nothing is exchanged, so nothing is copied; vectorized over candidates.
    assert ulysses_layout_copy_bytes(ulysses=1, **shape) == 0
    both = ulysses_layout_copy_bytes(ulysses=np.array([1, 4]), **shape)
    assert both.tolist() == [0, 2 * 2 * 2048 * 4 * 128 * 2]


def test_kv_heads_per_tp_rank_over_a_column_is_the_integer_division():
    # 8 KV heads: tp 1, 2, 4, 8 hold 8, 4, 2, 1; tp 16 replicates (at least 1). A chunk's column
    # (looked up in a table) gives each row what the row alone gives, dtype included.
    from sp_planner.cost.attention_comm import kv_heads_per_tp_rank

    tp = np.tile(np.array([1, 2, 4, 8, 16, 3], dtype=np.int64), 50)
    column = kv_heads_per_tp_rank(8, tp)
    assert column.dtype == np.int64
    assert column[:6].tolist() == [8, 4, 2, 1, 1, 2]
    assert column.tolist() == [int(kv_heads_per_tp_rank(8, int(t))) for t in tp]

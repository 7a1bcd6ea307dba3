"""sp_planner.pipeline: the split functions give the same answer per candidate whether a chunk is
large enough to be evaluated once per distinct (pp, vpp, ...) row or small enough to run directly."""

import numpy as np

from sp_planner.distinct import DISTINCT_MIN_ROWS
from sp_planner.pipeline import (
    _default_split,
    _split_breaks,
    _stage_layers,
    default_split,
    split_breaks,
    stage_layers,
)


def _columns(n: int = 3 * DISTINCT_MIN_ROWS):
    rng = np.random.default_rng(0)
    pp = rng.choice([1, 2, 3, 4, 8, 16, 32], n).astype(np.int64)
    vpp = rng.choice([1, 2, 4, 8], n).astype(np.int64)
    return pp, vpp


def test_llama3_405b_split_is_the_papers():
    # 126 layers over 16 stages: 7 on the first and last, 8 elsewhere (arXiv 2407.21783 s3.3.2),
    # the same in a chunk big enough to be split per distinct row.
    pp = np.full(2 * DISTINCT_MIN_ROWS, 16)
    first, last = default_split(126, pp, 1)
    assert set(first.tolist()) == {7} and set(last.tolist()) == {7}
    assert not split_breaks(126, pp, 1, first, last).any()


def test_per_distinct_rows_match_the_direct_evaluation():
    pp, vpp = _columns()
    first, last = default_split(126, pp, vpp)
    direct_first, direct_last = _default_split(126, pp, vpp)
    assert np.array_equal(first, direct_first) and np.array_equal(last, direct_last)
    assert first.dtype == np.int64
    assert np.array_equal(split_breaks(126, pp, vpp, first, last), _split_breaks(126, pp, vpp, first, last))
    stages = stage_layers(126, pp, first, last)
    assert type(stages).__name__ == "StageLayers"
    for got, want in zip(stages, _stage_layers(126, pp, first, last)):
        assert np.array_equal(got, want)


def test_broadcast_columns_keep_their_shape():
    pp, _ = _columns()
    vpps = np.array([1, 2, 4, 8])[None, :]
    first, last = default_split(126, pp[:, None], vpps)
    assert first.shape == last.shape == (len(pp), 4)
    want_first, want_last = _default_split(126, pp[:, None], vpps)
    assert np.array_equal(first, want_first) and np.array_equal(last, want_last)

"""sp_planner.pipeline: the split functions give the same answer per candidate whether a chunk is
large enough to be evaluated once per distinct (pp, vpp, ...) row or small enough to run directly."""

import numpy as np
import pytest

from sp_planner.distinct import DISTINCT_MIN_ROWS
from sp_planner.pipeline import (
    _default_split,
    _split_breaks,
    _stage_layers,
    default_split,
    StageLayers,
    split_breaks,
    stage_layers,
    drain_pile_up_s,
    interleaved_drain_s,
    stage_pace,
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


def test_stage_pace_by_hand():
    # 4 stages of 7/8/8/7 layers at 1 s a layer: the last (7 + 1.5 s of loss and output layer)
    # paces over a middle one (8), the others' 7 + 0.4 + 8 + 8 = 23.4 s are the fill and drain.
    stages = StageLayers(np.array([7, 7, 8]), np.array([8, 8, 8]), np.array([7, 7, 8]))
    pace = stage_pace(stages, np.array([4, 4, 1]), per_layer_s=1.0, last_extra_s=np.array([1.5, 0.5, 2.0]),
                      first_extra_s=np.array([0.4, 0.4, 0.0]))
    assert pace.last_paces.tolist() == [True, False, True]
    assert pace.micro_s.tolist() == [8.5, 8.0, 10.0]
    assert pace.other_stages_s.tolist() == pytest.approx([7.4 + 16, 7.4 + 7.5 + 8, 0.0])
    # With only 0.5 s on the last stage a middle stage paces (8 > 7.5 and 7.4); no first stage.
    assert pace.first_paces.tolist() == [False, False, False] and pace.layers.tolist() == [7, 8, 8]
    # A first stage whose embedding tips it over the middle ones paces.
    tipped = stage_pace(StageLayers(np.array([8]), np.array([8]), np.array([7])), np.array([3]),
                        per_layer_s=1.0, last_extra_s=np.array([0.5]), first_extra_s=np.array([0.25]))
    assert tipped.first_paces.tolist() == [True] and tipped.micro_s.tolist() == [8.25]
    assert tipped.other_stages_s.tolist() == pytest.approx([8 + 7.5])


def test_drain_pile_up_by_hand():
    # Chunk-0 blocks of 8.5 s (the first stage's), 8 s (the last's), a middle one of 9 s present or
    # not, 16 micro-batches over 4 stages: J = 4 jobs, 3 of them after the first at the slowest
    # block's pace, its excess over the slowest bare block (8 s) each time: 1.5 s.
    bare, blocks = [np.array([8.0]), np.array([9.0]), np.array([8.0])], [np.array([8.5]), np.array([9.0]),
                                                                          np.array([8.0])]
    assert drain_pile_up_s(bare, blocks, (True, False, True), 4, 16).tolist() == pytest.approx([1.5])
    # A slower middle stage keeps the pace: nothing; 2 micro-batches: 1 job more, 0.5 s.
    assert drain_pile_up_s(bare, blocks, (True, True, True), 4, 16).tolist() == [0.0]
    assert drain_pile_up_s(bare, blocks, (True, False, True), 4, 2).tolist() == pytest.approx([0.5])
    # What the pace charged already (a pacing block of 8.25 s with its exposure) comes off.
    assert drain_pile_up_s(bare, blocks, (True, False, True), 4, 16,
                           charged_s=np.array([8.25])).tolist() == pytest.approx([0.75])


def test_interleaved_drain_by_hand():
    # 4 stages of 8 layers, 2 s a layer's backward, 0.5 s of the first stage's backward beyond its
    # layers (the embedding's), 16 micro-batches. vpp 2: chunk-0 blocks of 8 s, the first's 8.5 s;
    # the drain's 4 last chunk-0 backwards (a flow shop: sum_k b_k + 3 max_k b_k) hold 0.5 s once
    # and 3 times more, of which bubble_micro_batches charged 1/2: 0.25 + 1.5 = 1.75 s.
    even = StageLayers(np.array([8.0]), np.array([8.0]), np.array([8.0]))
    kw = dict(bwd_layer_s=2.0, first_bwd_extra_s=0.5, first_paces=np.array([False]))
    assert interleaved_drain_s(even, 4, 2, 16, **kw).tolist() == pytest.approx([1.75])
    # 2 micro-batches: 2 jobs, 1 more time; vpp 4 (4 s blocks): 3/4 x 0.5 + 3 x 0.5.
    assert interleaved_drain_s(even, 4, 2, 2, **kw).tolist() == pytest.approx([0.25 + 0.5])
    assert interleaved_drain_s(even, 4, 4, 16, **kw).tolist() == pytest.approx([0.375 + 1.5])
    # A first stage of 6 layers (6 s blocks at vpp 2, 6.5 with the extra) stays under the middle
    # stages' 9 s: no pile-up, the extra whole once.
    light = StageLayers(np.array([6.0]), np.array([9.0]), np.array([8.0]))
    assert interleaved_drain_s(light, 4, 2, 16, **kw).tolist() == pytest.approx([0.25])
    # 1F1B (the bubble's whole stages), a pacing first stage, or pile-up priced elsewhere: none of it.
    assert interleaved_drain_s(even, 4, 1, 16, **kw).tolist() == [0.0]
    assert interleaved_drain_s(even, 4, 2, 16, bwd_layer_s=2.0, first_bwd_extra_s=0.5,
                               first_paces=np.array([True])).tolist() == [0.0]
    assert interleaved_drain_s(even, 4, 2, 16, **kw, pile_up=False).tolist() == pytest.approx([0.25])

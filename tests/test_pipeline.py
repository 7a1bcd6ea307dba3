"""sp_planner.pipeline: the split functions give the same answer per candidate whether a chunk is
large enough to be evaluated once per distinct (pp, vpp, ...) row or small enough to run directly."""

import itertools

import numpy as np
import pytest

from sp_planner.distinct import DISTINCT_MIN_ROWS
from sp_planner.pipeline import (
    chunk_forwards_s,
    _split_breaks,
    _stage_layers,
    StageLayers,
    SPLIT_EXPLICIT,
    SPLIT_LAYOUT,
    split_breaks,
    split_kind,
    stage_layers,
    chunk_counts,
    forwards_before_backward,
    interleave_breaks,
    pacing_stage,
    pile_up_s,
    rank_running,
    stage_pace,
)
from sp_planner.pipeline_order import last_group, megatron_group_sizes, micro_batch_group
from sp_planner.pipeline_split import _default_split, default_split
from sp_planner.pipeline_chunks import chunk_layer_counts, end_chunk_layers, later_chunk_layers


def _columns(n: int = 3 * DISTINCT_MIN_ROWS):
    rng = np.random.default_rng(0)
    pp = rng.choice([1, 2, 3, 4, 8, 16, 32], n).astype(np.int64)
    vpp = rng.choice([1, 2, 4, 8], n).astype(np.int64)
    return pp, vpp


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
    # paces over a middle one (8).
    stages = StageLayers(np.array([7, 7, 8]), np.array([8, 8, 8]), np.array([7, 7, 8]))
    pace = stage_pace(stages, per_layer_s=1.0, last_extra_s=np.array([1.5, 0.5, 2.0]),
                      first_extra_s=np.array([0.4, 0.4, 0.0]))
    assert pace.last_paces.tolist() == [True, False, True]
    assert pace.micro_s.tolist() == [8.5, 8.0, 10.0]
    # With only 0.5 s on the last stage a middle stage paces (8 > 7.5 and 7.4); no first stage.
    assert pace.first_paces.tolist() == [False, False, False] and pace.layers.tolist() == [7, 8, 8]
    # A first stage whose embedding tips it over the middle ones paces.
    tipped = stage_pace(StageLayers(np.array([8]), np.array([8]), np.array([7])),
                        per_layer_s=1.0, last_extra_s=np.array([0.5]), first_extra_s=np.array([0.25]))
    assert tipped.first_paces.tolist() == [True] and tipped.micro_s.tolist() == [8.25]


def test_pile_up_by_hand():
    # 4 jobs (min(pp, m)) at the slowest stage's 8.5 s block, a path that charged each 8.25 s (a
    # pacing block with its exposure): J - 1 = 3 times the 0.25 s excess; nothing where it charged
    # more; one job, nothing.
    assert pile_up_s(np.array([8.5]), 4, charged_s=np.array([8.25])).tolist() == pytest.approx([0.75])
    assert pile_up_s(np.array([8.5]), 4, charged_s=np.array([9.5])).tolist() == [0.0]
    assert pile_up_s(np.array([8.5]), 1, charged_s=np.array([8.0])).tolist() == [0.0]


def test_pacing_stage_ties_go_to_the_last_then_the_first():
    last, first = pacing_stage(np.array([3.0, 3.0, 2.0, 1.0]), np.array([1.0, 3.0, 2.0, 2.0]),
                               np.array([3.0, 2.0, 1.0, 1.0]))
    assert last.tolist() == [True, False, False, False]
    assert first.tolist() == [False, True, True, False]


def test_megatron_group_sizes_by_hand():
    # schedules.py at d98e8a6 lines 1160-1180: pp <= N <= m, and the last group m % N zero or at
    # least pp. pp 2: m 3 takes N 3 alone (N 2 leaves a group of 1); m 4 takes 2 or 4 (3 leaves 1);
    # m 5 takes 3 (groups of 3 and 2: model_parallel_config.py's own example) or 5. pp 4, m 10: 5
    # (5 + 5), 6 (6 + 4) or 10; 4, 7, 8, 9 leave 2, 3, 2, 1. Fewer micro-batches than pp: none.
    assert megatron_group_sizes(2, 3) == (3,)
    assert megatron_group_sizes(2, 4) == (2, 4)
    assert megatron_group_sizes(2, 5) == (3, 5)
    assert megatron_group_sizes(4, 10) == (5, 6, 10)
    assert megatron_group_sizes(4, 3) == ()
    # Some group is accepted exactly where the vpp rule holds (m >= pp), and sp-plan's is the
    # smallest: pp where it divides m.
    for pp, m in itertools.product((2, 3, 4), range(1, 13)):
        assert bool(megatron_group_sizes(pp, m)) == (not interleave_breaks(pp, 2, m)), (pp, m)
        if megatron_group_sizes(pp, m):
            assert micro_batch_group(pp, m) == megatron_group_sizes(pp, m)[0], (pp, m)


def test_micro_batch_group_and_last_group_by_hand():
    # pp 4: m 8 runs groups of 4 (Megatron's default); m 10 groups of 5 and 5 (4 leaves 2); m 11
    # groups of 6 and 5 (4 leaves 3, 5 leaves 1); m 9 of 5 and 4 (4 leaves 1); m 3, fewer than pp,
    # none (pp, refused by interleave_breaks). Every m a multiple of pp: the same object back.
    pp = np.array([4, 4, 4, 4, 4])
    m = np.array([8, 10, 11, 9, 3])
    assert micro_batch_group(pp, m).tolist() == [4, 5, 6, 5, 4]
    assert last_group(pp, m).tolist() == [4, 5, 5, 4, 3]
    same = np.array([4, 4])
    assert micro_batch_group(same, np.array([8, 12])) is same


def test_a_pinned_micro_batch_group_is_the_one_taken():
    # sp-plan --vpp-group (ParallelPlan.vpp_group, 0: none): pp 4, m 12 pinned 6 runs groups of 6 and
    # 6, pinned 7 of 7 and 5; m 10 unpinned its 5 and 5. A pin equal to the group priced (a plan
    # file records it) is no pin: pp itself back where every m is a multiple of pp.
    pp, m = np.array([4, 4, 4]), np.array([12, 12, 10])
    pinned = np.array([6, 7, 0])
    assert micro_batch_group(pp, m, pinned).tolist() == [6, 7, 5]
    assert last_group(pp, m, pinned).tolist() == [6, 5, 5]
    same = np.array([4, 4])
    assert micro_batch_group(same, np.array([8, 12]), np.array([4, 0])) is same


def test_warm_up_and_chunk_counts_in_groups_of_n_by_hand():
    # pp 2, vpp 2, m 5: groups of 3 and 2 (Megatron's model_parallel_config.py example), the
    # schedule table's chunks 0 0 0 1 1 1 0 0 1 1 (schedules.py lines 1220-1227 at d98e8a6).
    # Warm-up 2 (pp - rank - 1) + (vpp - 1) N: rank 0 5 + the paired 1 = 6, rank 1 3 + 1 = 4.
    assert forwards_before_backward(2, 2, 5, np.array([0, 1])).tolist() == [6, 4]
    assert rank_running(2, 2, np.array([6.0, 4.0]), 3).tolist() == [0.0, 1.0]
    # Chunk 0's and chunk 1's forwards among the first n: n 4 -> 3 and 1, n 7 -> 4 and 3, n 10 -> 5, 5.
    n = np.array([4.0, 7.0, 10.0])
    zero, last = chunk_counts(n, np.full(3, 2), 2, (np.full(3, 5), np.full(3, 3), np.full(3, 2)))
    assert zero.tolist() == [3.0, 4.0, 5.0] and last.tolist() == [1.0, 3.0, 5.0]
    # Without groups: groups of pp, as before (n 4 -> 2 and 2).
    assert [x.tolist() for x in chunk_counts(np.array([4.0]), 2, 2)] == [[2.0], [2.0]]


def test_forwards_before_the_first_backward_by_hand():
    # Megatron's warm-up (schedules.py get_pp_rank_microbatches) plus the forward paired with the
    # first backward. pp 4, vpp 2, 8 micro-batches (16 chunk forwards): rank 0 runs 2 x 3 + 4 + 1 =
    # 11, rank 3 4 + 1; 4 micro-batches: rank 0 all 8 in its warm-up. 1F1B: pp - rank, at most m.
    assert forwards_before_backward(4, 2, 8, np.array([0, 2, 3])).tolist() == [11, 7, 5]
    assert forwards_before_backward(4, 2, 4, np.array([0, 1, 3])).tolist() == [8, 8, 5]
    assert forwards_before_backward(4, 1, 2, np.array([0, 2, 3])).tolist() == [2, 2, 1]
    # rank_running inverts it where uncapped: 7 forwards at rank 2, 8 between ranks 1 and 2.
    assert rank_running(4, 2, np.array([7, 8, 11])).tolist() == [2.0, 1.5, 0.0]
    assert rank_running(4, 1, np.array([4, 2])).tolist() == [0.0, 2.0]


def test_chunk_forwards_by_hand():
    # Megatron's interleaved order runs groups of pp micro-batches chunk by chunk: at pp 4, vpp 2
    # forwards 0-3 are chunk 0's, 4-7 chunk 1's (the last), 8-11 the next group's chunk 0's, 12-15
    # its chunk 1's. Chunk 0 takes 1 s, a middle chunk 0.75 s, the last 0.5 s: forwards 5-7 are
    # three of the last chunk; 3-12 five of chunk 0 (3, 8-11) and five of the last (4-7, 12).
    by_chunk = (1.0, 0.75, 0.5)
    assert chunk_forwards_s(by_chunk, 0.8, 4, 2, 5, 8).tolist() == pytest.approx(3 * 0.5)
    assert chunk_forwards_s(by_chunk, 0.8, 4, 2, 3, 13).tolist() == pytest.approx(5 * 1.0 + 5 * 0.5)
    # vpp 3 (12 forwards a group): 2-13 are chunk 0's 2, 3, 12, 13, chunk 1's 4-7, chunk 2's 8-11.
    assert chunk_forwards_s(by_chunk, 0.8, 4, 3, 2, 14).tolist() == pytest.approx(4 * 1.0 + 4 * 0.75 + 4 * 0.5)
    # vpp 1: every forward is the stage's.
    assert chunk_forwards_s(by_chunk, 0.8, 4, 1, 2, 7).tolist() == pytest.approx(5 * 0.8)


def test_end_chunk_layers_by_hand():
    # Megatron's counted split: 126 layers + embedding + loss over pp 16 x vpp 4, 2 a virtual stage,
    # so the first and last stage hold 7: the embedding takes a layer's place in the first stage's
    # chunk 0 (1 layer), the loss in the last stage's last chunk (1). Even stages split evenly.
    # (chunk 0's, the last chunk's) of a 7- and an 8-layer stage.
    assert [x.tolist() for x in end_chunk_layers(np.array([7.0, 8.0]), 4, first_stage=True)] == [[1, 2], [2, 2]]
    assert [x.tolist() for x in end_chunk_layers(np.array([7.0, 8.0]), 4, first_stage=False)] == [[2, 2], [1, 2]]
    assert [x.tolist() for x in end_chunk_layers(np.array([7.0]), 1, first_stage=True)] == [[7], [7]]


def test_chunk_layer_counts_by_hand():
    # The counted split above: a 7-layer first stage over vpp 4 is 1, 2, 2, 2 (chunk 0 with the
    # embedding), a 7-layer last stage 2, 2, 2, 1 (the loss in its last chunk); 8 layers 2 each.
    assert chunk_layer_counts(7, 4, first_stage=True) == (1, 2, 2, 2)
    assert chunk_layer_counts(7, 4, first_stage=False) == (2, 2, 2, 1)
    assert chunk_layer_counts(8, 4, first_stage=True) == (2, 2, 2, 2)
    assert chunk_layer_counts(9, 1, first_stage=False) == (9,)
    # end_chunk_layers and later_chunk_layers are its ends and its largest, over candidates.
    for layers, vpp, first in itertools.product((7, 8, 9, 12), (1, 2, 3, 4), (True, False)):
        counts = chunk_layer_counts(layers, vpp, first_stage=first)
        ends = end_chunk_layers(np.array([float(layers)]), vpp, first_stage=first)
        assert (float(ends[0][0]), float(ends[1][0])) == (counts[0], counts[-1])
        assert float(later_chunk_layers(np.array([layers]), vpp)[0]) == max(counts)


def test_chunk_layer_counts_in_whole_numbers_are_chunk_shape_s():
    # chunk_layer_counts works in Python ints (it runs once per distinct bucket layout); each
    # stage size, vpp and layout chunk gives the (full, end) chunk_shape gives over candidates.
    from sp_planner.pipeline_chunks import chunk_shape

    for layers, vpp, chunk in itertools.product(range(0, 30), range(1, 9), range(0, 7)):
        full, end = (int(v[0]) for v in chunk_shape(np.array([layers]), np.array([vpp]), np.array([chunk])))
        counts = chunk_layer_counts(layers, vpp, first_stage=False, chunk=chunk)
        assert counts == (*[full] * (vpp - 1), end)
        assert chunk_layer_counts(layers, vpp, first_stage=True, chunk=chunk) == counts[::-1]


def test_an_uneven_split_over_two_interleaved_stages_runs_as_the_layout():
    # Megatron's get_transformer_layer_offset (d98e8a6) divides an uneven interleaved split's middle
    # chunk layers by pp - 2: pp 2 with vpp 2 and 22/20 layers raises ZeroDivisionError on rank 1
    # under --decoder-first/last-pipeline-num-layers, so it runs as --pipeline-model-parallel-layout.
    args = (42, np.array([2, 2, 4]), np.array([2, 1, 2]), np.array([22, 22, 12]), np.array([20, 20, 10]))
    assert split_breaks(*args).tolist() == [False, False, False]
    assert split_kind(*args).tolist() == [SPLIT_LAYOUT, SPLIT_EXPLICIT, SPLIT_EXPLICIT]

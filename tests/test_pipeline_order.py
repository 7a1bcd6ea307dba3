"""pipeline_order: each stage's blocks in 1F1B and interleaved 1F1B order, their upstream
blocks, and where Megatron dispatches a chunk's parameter all-gather."""

import numpy as np
import pytest

from sp_planner.pipeline_order import (
    gather_dispatched,
    grad_sync_launches,
    megatron_group_sizes,
    priced_group,
    priced_groups,
    stage_order,
    upstream_stage,
)


def _blocks(text: str) -> list[tuple[str, int, int]]:
    """'F0.1 B1.0' -> [("forward", 0, 1), ("backward", 1, 0)]: kind, chunk, micro-batch."""
    kinds = {"F": "forward", "B": "backward"}
    return [(kinds[b[0]], *map(int, b[1:].split("."))) for b in text.split()]


def test_plain_1f1b_warms_up_pp_minus_1_minus_stage_forwards():
    # PipeDream-Flush (Narayanan et al. 2021, figure 4): stage 0 of 2 runs one forward ahead.
    assert stage_order(2, 3, 0) == _blocks("F0.0 F0.1 B0.0 F0.2 B0.1 B0.2")
    assert stage_order(2, 3, 1) == _blocks("F0.0 B0.0 F0.1 B0.1 F0.2 B0.2")
    assert stage_order(4, 2, 0) == _blocks("F0.0 F0.1 B0.0 B0.1")  # warm-up capped at m


def test_interleaved_1f1b_by_hand():
    # pp 2, vpp 2, 2 micro-batches: stage 0 warms up 2(pp-1) + (vpp-1)pp = 4 (all of them); stage 1
    # warms up 2, then pairs chunk 1's forwards with its backwards, then drains chunk 0.
    assert stage_order(2, 2, 0, vpp=2) == _blocks("F0.0 F0.1 F1.0 F1.1 B1.0 B1.1 B0.0 B0.1")
    assert stage_order(2, 2, 1, vpp=2) == _blocks("F0.0 F0.1 F1.0 B1.0 F1.1 B1.1 B0.0 B0.1")


def _megatron_order(pp: int, m: int, stage: int, vpp: int, group: int | None = None) -> list[tuple[str, int, int]]:
    """Megatron's order as its own tables give it (megatron/core/pipeline_parallel/schedules.py at
    d98e8a6: get_schedule_table with micro-batch groups of N, pp by default, the last one all
    that remain; get_pp_rank_microbatches' warm-up, get_model_chunk_id reversing the chunk in
    backward)."""
    n = pp if group is None else group
    table = [(mb, chunk) for first in range(0, m, n) for chunk in range(vpp)
             for mb in range(first, m if first + n >= m else first + n)]
    warmup = min(2 * (pp - 1 - stage) + (vpp - 1) * n, m * vpp)
    forward = [("forward", chunk, mb) for mb, chunk in table]
    backward = [("backward", vpp - 1 - chunk, mb) for mb, chunk in table]
    steady = [block for pair in zip(forward[warmup:], backward) for block in pair]
    return forward[:warmup] + steady + backward[len(forward) - warmup:]


@pytest.mark.parametrize("pp", [2, 3, 4])
@pytest.mark.parametrize("vpp", [2, 3])
@pytest.mark.parametrize("groups", [1, 2, 3])
def test_interleaved_order_is_megatrons_schedule_table(pp, vpp, groups):
    m = groups * pp  # interleaving needs the micro-batches in whole groups of pp (the vpp rule)
    for stage in range(pp):
        order = stage_order(pp, m, stage, vpp)
        assert order == _megatron_order(pp, m, stage, vpp)
        assert sorted(order) == sorted((kind, c, mb) for kind in ("backward", "forward")
                                       for c in range(vpp) for mb in range(m))


def test_groups_of_n_by_hand():
    # Megatron's own example (schedules.py lines 1220-1227 at d98e8a6): pp 2, N 3, m 5, vpp 2 runs
    # micro-batches 0 1 2 0 1 2 3 4 3 4 of chunks 0 0 0 1 1 1 0 0 1 1. Stage 1 warms up (vpp - 1) N
    # = 3, stage 0 2 (pp - 1) = 2 more, then each pairs its next forward with a backward.
    assert stage_order(2, 5, 1, vpp=2, group=3) == _blocks(
        "F0.0 F0.1 F0.2 F1.0 B1.0 F1.1 B1.1 F1.2 B1.2 F0.3 B0.0 F0.4 B0.1 F1.3 B0.2 F1.4 B1.3 B1.4 B0.3 B0.4")
    assert stage_order(2, 5, 0, vpp=2, group=3)[:7] == _blocks("F0.0 F0.1 F0.2 F1.0 F1.1 F1.2 B1.0")


@pytest.mark.parametrize("pp, vpp", [(2, 2), (3, 3), (4, 2), (4, 4), (8, 2)])
def test_interleaved_order_in_groups_of_n_is_megatrons_schedule_table(pp, vpp):
    # Every N Megatron accepts (pipeline_order.megatron_group_sizes), a last group of m % N >= pp included.
    for m in range(pp, 3 * pp + 2):
        for group in megatron_group_sizes(pp, m):
            for stage in range(pp):
                order = stage_order(pp, m, stage, vpp, group)
                assert order == _megatron_order(pp, m, stage, vpp, group), (m, group, stage)
                assert sorted(order) == sorted((kind, c, mb) for kind in ("backward", "forward")
                                               for c in range(vpp) for mb in range(m))


def test_upstream_is_the_neighbouring_virtual_stage():
    # pp 2, vpp 2: virtual stage chunk*pp + stage, so stage 1 chunk 0 feeds stage 0 chunk 1.
    assert upstream_stage("forward", 0, 0, 2, 2) is None  # the first virtual stage
    assert upstream_stage("forward", 1, 0, 2, 2) == (0, 0)
    assert upstream_stage("forward", 0, 1, 2, 2) == (1, 0)
    assert upstream_stage("backward", 1, 0, 2, 2) == (0, 1)
    assert upstream_stage("backward", 1, 1, 2, 2) is None  # the last virtual stage
    assert upstream_stage("backward", 0, 0, 3, 1) == (1, 0)


def test_chunk_gathers_go_before_the_forward_pp_ahead_of_the_chunks_first():
    # schedules.py forward_step_helper_preprocess: forward k + stage starting chunk j dispatches
    # chunk j + 1's gather, for chunks 2 .. vpp-1 (0 and 1 go at the step's start).
    assert [gather_dispatched(2, 4, 0, k) for k in range(8)] == [-1, -1, 2, -1, 3, -1, -1, -1]
    assert [gather_dispatched(2, 4, 1, k) for k in range(8)] == [-1, 2, -1, 3, -1, -1, -1, -1]
    assert [gather_dispatched(3, 2, 0, k) for k in range(6)] == [-1] * 6  # vpp 2: nothing left to dispatch
    # Groups of N = 3: chunk j's first micro-batch is forward 3j (schedule_table).
    assert [gather_dispatched(2, 4, 0, k, 3) for k in range(10)] == [-1, -1, -1, 2, -1, -1, 3, -1, -1, -1]


def test_aligned_grad_syncs_go_rank_backwards_after_the_chunks_last():
    # pp 4, vpp 4, one group: every rank's backwards run chunk 3's four micro-batches, then chunk
    # 2's, ...; chunk c's last is backward 15 - 4c. Rank r launches it r backwards later
    # (schedules.py backward_step_helper_postprocess, d98e8a6 lines 1445-1456), chunk 0 after the
    # last backward on every rank (lines 2063-2068). Two groups: the last group's.
    assert grad_sync_launches(4, 4, 0, 4) == {3: (3,), 7: (2,), 11: (1,), 15: (0,)}
    assert grad_sync_launches(4, 4, 3, 4) == {6: (3,), 10: (2,), 14: (1,), 15: (0,)}
    assert grad_sync_launches(4, 8, 3, 4) == {22: (3,), 26: (2,), 30: (1,), 31: (0,)}
    assert grad_sync_launches(2, 2, 1, 2) == {2: (1,), 3: (0,)}


def test_the_group_priced_is_megatrons_default_pp_or_the_smallest_it_accepts_and_none_at_vpp_1():
    # pp 2, m 9: N = 2 leaves a last group of 1 < pp, refused; 3 divides 9. pp 4, m 8: the default 4.
    assert priced_group(2, 8, 9) == 3 and priced_group(4, 2, 8) == 4
    assert priced_group(4, 1, 8) is None and priced_group(2, 1, 9) is None
    assert priced_groups(np.array([2, 4, 4]), np.array([8, 2, 1]), np.array([9, 8, 8])).tolist() == [3, 4, 0]
    # A plan's own N (sp-plan --vpp-group) where it names one; still none at vpp 1.
    assert priced_group(4, 2, 12, 6) == 6 and priced_group(4, 2, 12, None) == 4
    assert priced_groups(np.array([4, 4]), np.array([2, 1]), np.array([12, 12]), np.array([8, 0])).tolist() == [8, 0]

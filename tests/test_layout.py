"""The one axis order: strides and spans for plans and for candidate columns agree with the grid."""

import itertools

import numpy as np
import pytest

from sp_planner.layout import (
    DP_CP_AXES,
    GRID_ORDER,
    HSDP_GROUPS,
    axis_stride,
    group_size,
    group_stride,
    groups_over,
    rank_grid,
    rank_groups,
)
from sp_planner.cost.fsdp import replicate_stride
from sp_planner.plan import ParallelPlan
from sp_planner.space import DEGREES, PIN_DEGREES, Pins, degree_tuples

PLANS = [ParallelPlan(**dict(zip(DEGREES, row.tolist()))) for row in degree_tuples(24, Pins())]


def test_every_degree_is_a_grid_axis_and_a_pin():
    assert sorted(DEGREES) == sorted(PIN_DEGREES) == sorted(GRID_ORDER)


@pytest.mark.parametrize("plan", PLANS[::7])
def test_stride_is_the_rank_distance_along_each_axis(plan):
    grid = rank_grid(plan)
    for i, axis in enumerate(GRID_ORDER):
        if grid.shape[i] > 1:
            step = np.take(grid, 1, axis=i) - np.take(grid, 0, axis=i)
            assert (step == axis_stride(plan, axis)).all()


def test_vectorized_strides_and_sizes_match_each_plan():
    columns = {axis: np.array([getattr(p, axis) for p in PLANS]) for axis in GRID_ORDER}
    for axis in GRID_ORDER:  # the innermost axis's stride is the scalar 1
        got = np.broadcast_to(axis_stride(columns, axis), len(PLANS))
        assert got.tolist() == [axis_stride(p, axis) for p in PLANS]
    assert group_size(columns, DP_CP_AXES).tolist() == [p.dp * p.cp for p in PLANS]
    assert group_stride(columns, DP_CP_AXES).tolist() == [p.tp for p in PLANS]


def test_dp_cp_groups_by_hand():
    # tp 2, ulysses 2, ring 2, dp 2: grid (pp, dp, ring, ulysses, tp); the dp-cp group of tp rank 1
    # holds every odd rank.
    groups = groups_over(ParallelPlan(tp=2, ulysses=2, ring=2, dp=2), DP_CP_AXES)
    assert groups.tolist() == [list(range(0, 16, 2)), list(range(1, 16, 2))]


def test_hsdp_groups_by_hand():
    # 16 GPUs, tp 2, dp 8 = 2 replicas x dp_shard 4, ep 4. Dense grid: rank = tp_r + 2 dp_r with
    # dp_r = 4 replica + shard (replicas outermost); expert grid (pp, edp 4, ep 4, etp 1): rank =
    # ep_r + 4 edp_r with edp_r = 2 replica + shard.
    plan = ParallelPlan(tp=2, dp=8, ep=4, zero=3, dp_replicate=2)
    groups = rank_groups(plan)
    assert groups["dp_shard_cp"] == [[0, 2, 4, 6], [1, 3, 5, 7], [8, 10, 12, 14], [9, 11, 13, 15]]
    assert groups["dp_replicate"] == [[r, r + 8] for r in range(8)]
    assert groups["edp"][0] == [0, 4, 8, 12]
    assert groups["edp_shard"] == [[0, 4], [1, 5], [2, 6], [3, 7], [8, 12], [9, 13], [10, 14], [11, 15]]
    assert groups["edp_replicate"] == groups["dp_replicate"]  # the same ranks (cost.fsdp)
    assert replicate_stride(plan) == 8
    assert not set(HSDP_GROUPS) & set(rank_groups(plan.model_copy(update={"dp_replicate": 1})))
    # edp 3 over 2 replicas (Megatron asserts, the expert_replicas rule refuses): no expert lists.
    odd = rank_groups(ParallelPlan(dp=6, ep=2, zero=1, dp_replicate=2))
    assert "edp_shard" not in odd and odd["dp_replicate"] == [[0, 3], [1, 4], [2, 5]]


def test_group_over_axes_that_are_not_adjacent_is_refused():
    with pytest.raises(ValueError, match="not adjacent"):
        group_stride(ParallelPlan(), ("dp", "ulysses"))


@pytest.mark.parametrize("plan", PLANS[::5])
def test_every_rank_group_partitions_the_world(plan):
    for name, groups in rank_groups(plan).items():
        flat = sorted(itertools.chain.from_iterable(groups))
        assert flat == list(range(plan.world_size)), name

"""sim.dp_groups: the rank groups the data-parallel collectives run over, by hand on the grid
order (pp, dp, ring, ulysses, tp; layout.GRID_ORDER): tp adjacent, then ring, then dp."""

from sp_planner.layout import DP_CP_AXES, groups_over
from sp_planner.plan import ParallelPlan
from sp_planner.sim.dp_groups import expert_shard_groups, shard_and_replicate_groups


def test_hsdp_shards_are_inner_runs_of_each_dp_group_and_replicas_stride_across_them():
    # 8 ranks, tp 2, dp 4 = 2 replicas x shards of 2: dp strides by 2, so the dp-cp group {0, 2, 4, 6}
    # shards as {0, 2} and {4, 6}, and each rank's replica is 4 ranks on.
    plan = ParallelPlan(tp=2, dp=4, zero=3, dp_replicate=2)
    shards, replicas = shard_and_replicate_groups(plan)
    assert groups_over(plan, DP_CP_AXES).tolist() == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert shards.tolist() == [[0, 2], [1, 3], [4, 6], [5, 7]]
    assert replicas.tolist() == [[0, 4], [1, 5], [2, 6], [3, 7]]


def test_without_replicas_a_shard_is_the_dp_cp_group_and_each_rank_its_own_replica():
    # tp 2, dp 2, ring 2: ring strides by 2 and dp by 4; the shards span dp x cp.
    plan = ParallelPlan(tp=2, dp=2, ring=2, zero=3)
    shards, replicas = shard_and_replicate_groups(plan)
    assert shards.tolist() == groups_over(plan, DP_CP_AXES).tolist() == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert replicas.tolist() == [[rank] for rank in range(8)]


def test_hsdp_expert_shard_groups_by_hand():
    # 16 ranks, ep 4: the edp groups are {0, 4, 8, 12}, {1, 5, 9, 13}, ... (layout.EXPERT_GRID_ORDER);
    # 2 replicas split each into runs of 2 consecutive members (Megatron's intra-partial groups).
    plan = ParallelPlan(tp=1, dp=16, ep=4, zero=1, dp_replicate=2)
    shards = expert_shard_groups(plan)
    assert shards.tolist()[:4] == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert [8, 12] in shards.tolist() and [9, 13] in shards.tolist()
    assert shards.shape == (8, 2)

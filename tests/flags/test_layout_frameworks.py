"""sp_planner.layout against the frameworks' own rank layouts, as written out (verified by running
their group-building code) in shared reference framework_flags.md sections 1.2, 2 and 5.

Megatron (RankGenerator order tp-cp-ep-dp-pp, hierarchical CP a2a level innermost), MindSpeed's
hybrid_cp_algo (Ulysses = consecutive CP-rank chunks), yunchang with use_ulysses_low=True, DeepSpeed
(SP contiguous) and torchtitan (pp, dp, cp, tp) all agree with the one grid in layout.py, so the
layout needs no per-framework parameter.
"""

from __future__ import annotations

from sp_planner.layout import rank_grid, rank_groups
from sp_planner.plan import ParallelPlan


def test_megatron_worked_example_tp2_cp2_dp2_pp2():
    plan = ParallelPlan(tp=2, ring=2, dp=2, pp=2)
    groups = rank_groups(plan)
    assert groups["tp"][:2] == [[0, 1], [2, 3]]
    assert groups["cp"][:4] == [[0, 2], [1, 3], [4, 6], [5, 7]]
    assert groups["dp"][:5] == [[0, 4], [1, 5], [2, 6], [3, 7], [8, 12]]
    assert groups["pp"][:2] == [[0, 8], [1, 9]]
    # dp-cp (gradient reduce-scatter, distributed optimizer): [0,2,4,6] [1,3,5,7] ...
    grid = rank_grid(plan)  # (pp, dp, ring, ulysses, tp)
    dp_cp = sorted(sorted(grid[pp, :, :, :, tp].ravel().tolist()) for pp in range(2) for tp in range(2))
    assert dp_cp == [[0, 2, 4, 6], [1, 3, 5, 7], [8, 10, 12, 14], [9, 11, 13, 15]]


def test_megatron_hierarchical_cp_2_4_levels():
    # TP=2, CP=8 on 16 ranks, hierarchical sizes [2, 4]: CP ranks [0,2,...,14].
    groups = rank_groups(ParallelPlan(tp=2, ulysses=2, ring=4))
    assert [0, 2, 4, 6, 8, 10, 12, 14] in groups["cp"]
    assert groups["ulysses"][:4] == [[0, 2], [1, 3], [4, 6], [5, 7]]  # level 0 (a2a): adjacent CP ranks
    assert [0, 4, 8, 12] in groups["ring"] and [2, 6, 10, 14] in groups["ring"]  # level 1 (p2p): strided
    assert groups["ring"] == sorted([[0, 4, 8, 12], [1, 5, 9, 13], [2, 6, 10, 14], [3, 7, 11, 15]])


def test_cp_group_order_is_ring_major():
    # Transformer Engine's p2p peer is cp_global_ranks[(ring_rank + 1) % R * U + a2a_rank], i.e.
    # cp rank = a2a rank + U * ring rank: the cp group lists ulysses-neighbours first.
    groups = rank_groups(ParallelPlan(tp=2, ulysses=2, ring=4))
    assert groups["cp"][0] == [0, 2, 4, 6, 8, 10, 12, 14]


def test_yunchang_ulysses_low_u2_r4_world16():
    groups = rank_groups(ParallelPlan(ulysses=2, ring=4, dp=2))
    assert groups["ulysses"][:3] == [[0, 1], [2, 3], [4, 5]]
    assert groups["ring"] == [[0, 2, 4, 6], [1, 3, 5, 7], [8, 10, 12, 14], [9, 11, 13, 15]]
    assert groups["dp"][:2] == [[0, 8], [1, 9]]  # each DP replica is a contiguous block of U*R ranks


def test_deepspeed_sp_groups_are_contiguous():
    groups = rank_groups(ParallelPlan(ulysses=4, dp=2))
    assert groups["ulysses"] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert groups["dp"] == [[0, 4], [1, 5], [2, 6], [3, 7]]


def test_torchtitan_mesh_pp_dp_cp_tp():
    # init_device_mesh(("pp", "dp_replicate", "dp_shard", "cp", "tp")): tp contiguous, then cp, dp, pp.
    groups = rank_groups(ParallelPlan(tp=2, ring=2, dp=2, pp=2))
    assert groups["tp"][0] == [0, 1] and groups["cp"][0] == [0, 2]
    assert groups["dp"][0] == [0, 4] and groups["pp"][0] == [0, 8]

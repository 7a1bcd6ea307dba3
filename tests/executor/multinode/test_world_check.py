"""The world-vs-plan checks every rank runs before attention (sp_planner.executor.world_check)."""

from __future__ import annotations

import subprocess
import sys

from sp_planner.executor.config import RunConfig
from sp_planner.executor.world_check import RankPlace, env_world_problems, job_digest, layout_problems

USP = RunConfig(ulysses=2, ring=2, seq_len=64, num_heads=4, num_kv_heads=2, head_dim=8, nproc_per_node=2)


def _places(cfg: RunConfig, *, node_of, ulysses_groups, ring_groups, digest=None) -> list[RankPlace]:
    def group(groups, rank):
        return next(tuple(g) for g in groups if rank in g)

    return [RankPlace(rank=r, local_rank=r % 2, node=node_of(r), host=f"host{node_of(r)}", address=None, pid=100 + r,
                      job_digest=digest(r) if digest else job_digest(cfg), ulysses_group=group(ulysses_groups, r),
                      ring_group=group(ring_groups, r))
            for r in range(cfg.world_size)]


PLAN_GROUPS = dict(ulysses_groups=[[0, 1], [2, 3]], ring_groups=[[0, 2], [1, 3]])


def test_the_plans_world_passes():
    assert layout_problems(USP, _places(USP, node_of=lambda r: r // 2, **PLAN_GROUPS)) == []
    assert env_world_problems(USP, {"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}) == []


def test_wrong_sizes_are_named():
    assert env_world_problems(USP, {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "4"}) == [
        "WORLD_SIZE is 2 but the plan needs dp*pp*tp*ulysses*ring = 1*1*1*2*2 = 4 ranks "
        "(sp-run runs one attention group of the plan)",
        "LOCAL_WORLD_SIZE is 4 but the plan puts 2 ranks on each node (--nproc-per-node 2); start torchrun with "
        "--nproc-per-node 2 or give sp-run --nproc-per-node 4",
    ]


def test_ulysses_group_split_across_nodes_is_refused():
    # Ranks dealt round-robin over two nodes: each Ulysses group straddles them.
    problems = layout_problems(USP, _places(USP, node_of=lambda r: r % 2, **PLAN_GROUPS))
    assert problems == [
        "node 0 holds ranks [0, 2], the plan puts ranks 0..1 there (2 per node)",
        "node 1 holds ranks [1, 3], the plan puts ranks 2..3 there (2 per node)",
        "Ulysses group [0, 1] spans nodes: rank 0 on host0 (node 0), rank 1 on host1 (node 1); the plan keeps "
        "each Ulysses group inside one node of 2 ranks",
        "Ulysses group [2, 3] spans nodes: rank 2 on host0 (node 0), rank 3 on host1 (node 1); the plan keeps "
        "each Ulysses group inside one node of 2 ranks",
    ]


def test_ulysses_groups_may_span_nodes_when_the_plan_says_so():
    cfg = USP.model_copy(update={"ulysses": 4, "ring": 1})  # 4 Ulysses ranks, 2 per node
    places = _places(cfg, node_of=lambda r: r // 2, ulysses_groups=[[0, 1, 2, 3]], ring_groups=[[0], [1], [2], [3]])
    assert layout_problems(cfg, places) == []


def test_groups_that_differ_from_rank_groups_are_refused():
    places = _places(USP, node_of=lambda r: r // 2, ulysses_groups=[[0, 2], [1, 3]], ring_groups=[[0, 1], [2, 3]])
    problems = layout_problems(USP, places)
    assert problems[:2] == [
        "ulysses groups are [[0, 2], [1, 3]], the plan's are [[0, 1], [2, 3]]",
        "ring groups are [[0, 1], [2, 3]], the plan's are [[0, 2], [1, 3]]",
    ]


def test_ranks_with_other_arguments_are_named():
    places = _places(USP, node_of=lambda r: r // 2, digest=lambda r: "other" if r == 3 else job_digest(USP),
                     **PLAN_GROUPS)
    assert layout_problems(USP, places) == [
        "ranks run different jobs: rank 3 on host1 (node 1) got other sp-run arguments than this rank; "
        "give every node the same arguments"]


def test_mismatched_torchrun_world_aborts_every_rank_before_attention(tmp_path):
    # torchrun starts 2 ranks on this node; the plan wants 4 ranks, 1 per node.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
               "sp_planner.cli.run_cmd", "--ulysses", "2", "--ring", "2", "--seq-len", "64", "--heads", "4",
               "--head-dim", "8", "--nproc-per-node", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode != 0
    message = ("error: the launched world differs from the plan: WORLD_SIZE is 2 but the plan needs "
               "dp*pp*tp*ulysses*ring = 1*1*1*2*2 = 4 ranks (sp-run runs one attention group of the plan); "
               "LOCAL_WORLD_SIZE is 2 but the plan puts 1 ranks on each node")
    # Each rank checks its own environment and stops with that one line; torchrun stops the other
    # rank as soon as one fails, so under load the second may be stopped before it prints.
    assert 1 <= done.stderr.count(message) <= 2
    assert done.stdout == ""  # no rank reached the attention
    assert "world_check.py" not in done.stderr  # no rank's traceback (torchrun's own summary follows)

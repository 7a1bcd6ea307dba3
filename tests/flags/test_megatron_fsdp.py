"""flags.megatron_fsdp: HSDP replicas under ZeRO-1 are Megatron's distributed optimizer
instances (--num-distributed-optimizer-instances R), over the shard and replicate groups the
cost model prices."""

from __future__ import annotations

import json

import pytest
from megatron.core.parallel_state import RankGenerator

from sp_planner.cli import plan_cmd
from sp_planner.cost.fsdp import replicate_stride, shard_group_size
from sp_planner.plan import ParallelPlan


def test_sp_plan_runs_hsdp_zero_1_as_distributed_optimizer_instances(run_main, bash_args):
    # `--dp-replicate 2 --zero 1` is accepted: Megatron-LM runs it as two distributed-optimizer
    # instances, each sharding the optimizer over dp/2 x cp ranks, the gradient reduce-scattered
    # inside one and its shard all-reduced across them (param_and_grad_buffer.py at d98e8a6,
    # inter_distributed_optimizer_instance_group), as cost.comm prices HSDP.
    result = run_main(plan_cmd, "--model", "llama3-8b", "--hardware", "h100", "--nodes", "4", "--seq-len", "32k",
                      "--dp-replicate", "2", "--zero", "1", "--top", "1", "--format", "json")
    assert result.exit_code == 0, result.stderr
    best = json.loads(result.stdout)["plans"][0]
    assert (best["zero"], best["dp_replicate"], best["dp"]) == (1, 2, 4)
    megatron = best["flags"]["megatron"]
    assert megatron["supported"]
    args = bash_args(megatron["text"])
    assert args["--use-distributed-optimizer"] == [] and args["--num-distributed-optimizer-instances"] == ["2"]
    assert "--use-megatron-fsdp" not in args and "--data-parallel-sharding-strategy" not in args


@pytest.mark.parametrize("plan", [
    ParallelPlan(tp=2, ulysses=2, ring=2, dp=4, pp=2, dp_replicate=2),
    ParallelPlan(ulysses=8, dp=4, dp_replicate=2),
    ParallelPlan(tp=2, ring=2, dp=6, dp_replicate=3),
], ids=["usp-pp2-r2", "ulysses8-r2", "ring2-dp6-r3"])
def test_the_instances_are_the_plans_shard_and_replicate_groups(plan):
    # parallel_state.py (d98e8a6, initialize_model_parallel) cuts each dp-cp group, in
    # RankGenerator order, into num_distributed_optimizer_instances contiguous slices: the
    # optimizer's shard groups; the ranks at one position across slices all-reduce (the replicas).
    generator = RankGenerator(tp=plan.tp, ep=1, dp=plan.dp, pp=plan.pp, cp=plan.cp, order="tp-cp-ep-dp-pp")
    for dp_cp in generator.get_ranks("dp-cp"):
        size = len(dp_cp) // plan.dp_replicate
        slices = [dp_cp[i * size:(i + 1) * size] for i in range(plan.dp_replicate)]
        assert size == shard_group_size(plan)
        assert {b - a for first, second in zip(slices, slices[1:]) for a, b in zip(first, second)} == {
            replicate_stride(plan)}


@pytest.mark.parametrize("plan", [
    ParallelPlan(tp=2, dp=8, ep=4, dp_replicate=2),
    ParallelPlan(tp=2, ring=2, dp=4, pp=2, ep=2, etp=2, dp_replicate=2),
    ParallelPlan(dp=12, ep=2, dp_replicate=3),
], ids=["tp2-ep4-r2", "usp-pp2-etp2-r2", "dp12-ep2-r3"])
def test_the_instances_split_the_expert_data_parallel_groups_as_the_cost_model(plan):
    # parallel_state.py (d98e8a6 lines 1447-1497) cuts each expert-data-parallel group of the
    # expert RankGenerator with create_hierarchical_groups([edp / R, R]) (lines 378-434): level 0
    # "(l s u) -> (l u) s" with u = 1 takes runs of edp / R members (the experts' shard groups),
    # level 1 with u = edp / R the members edp / R apart (the replicas). Those are
    # sim.dp_groups.expert_shard_groups' and, for the replicas, the dense replicate groups.
    import numpy as np

    from sp_planner.cost.fsdp import expert_shard_size
    from sp_planner.sim.dp_groups import expert_shard_groups, shard_and_replicate_groups

    experts = RankGenerator(tp=plan.etp, ep=plan.ep, dp=plan.edp, pp=plan.pp, cp=1, order="tp-cp-ep-dp-pp")
    edp_groups = np.array(experts.get_ranks("dp"))
    size = plan.edp // plan.dp_replicate
    intra = [g[i * size:(i + 1) * size] for g in edp_groups.tolist() for i in range(plan.dp_replicate)]
    inter = [g[j::size] for g in edp_groups.tolist() for j in range(size)]
    assert size == expert_shard_size(plan)
    assert sorted(intra) == sorted(expert_shard_groups(plan).tolist())
    _, replicas = shard_and_replicate_groups(plan)
    assert sorted(inter) == sorted(sorted(g) for g in replicas.tolist())

"""plan_checks: a plan is refused before any work, in one line naming every problem."""

import pytest

from sp_planner.catalog import load_model
from sp_planner.errors import UserInputError
from sp_planner.plan import ParallelPlan
from sp_planner.plan_checks import adam_moments_problem, check_plan_runs, plan_problems
from sp_planner.specs import Workload

LLAMA = load_model("Llama-3-8B")  # 32 heads, 8 KV heads, 32 layers
WORK = Workload(seq_len=8192, global_batch=16)


def test_bf16_adam_moments_need_zero_1():
    assert adam_moments_problem(ParallelPlan(dp=8, zero=1, adam_moments_bf16=True)) is None
    assert adam_moments_problem(ParallelPlan(dp=8, zero=2)) is None
    assert adam_moments_problem(ParallelPlan(dp=8, zero=2, adam_moments_bf16=True)) == (
        "adam_moments_bf16 needs zero 1 (Megatron's precision-aware optimizer runs only with the distributed "
        "optimizer), not zero 2")


def test_problems_are_the_broken_rules_then_the_options_never_combined():
    assert plan_problems(ParallelPlan(dp=8), LLAMA, WORK) == []
    problems = plan_problems(ParallelPlan(tp=3, zero=3, adam_moments_bf16=True), LLAMA, WORK)
    assert problems[0] == "num_heads 32 is not divisible by tp*ulysses = 3*1"
    assert problems[-1].startswith("adam_moments_bf16 needs zero 1") and "not zero 3" in problems[-1]


def test_a_plan_for_another_cluster_is_refused_naming_both_counts():
    check_plan_runs(ParallelPlan(dp=2, tp=4), LLAMA, WORK, num_nodes=1, gpus_per_node=8)
    with pytest.raises(UserInputError) as refused:
        check_plan_runs(ParallelPlan(dp=2, tp=4), LLAMA, WORK, num_nodes=2, gpus_per_node=8)
    assert str(refused.value).startswith(
        "plan uses dp*pp*tp*ulysses*ring = 8 GPUs but the cluster has 2 nodes x 8 = 16;")


def test_a_plan_that_cannot_run_is_refused_in_one_line():
    with pytest.raises(UserInputError) as refused:
        check_plan_runs(ParallelPlan(dp=3), LLAMA, WORK, num_nodes=1, gpus_per_node=3)
    message = str(refused.value)
    assert message.startswith("plan cannot run: global_batch 16 is not divisible by dp*micro_batch = 3*1")
    assert "\n" not in message

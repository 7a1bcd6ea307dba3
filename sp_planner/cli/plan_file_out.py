"""The plan file sp-plan writes for its answer (--out): the chosen plan and the framework that runs
it. For one --framework, that framework. Under --framework all, which times every plan with
Megatron's runtime (cost.runtime.framework_runtime), the first of flags.FRAMEWORKS that runs the
plan: its flags express it, they are for the profile's chips (cli.question.framework_device_note:
MindSpeed's for Ascend NPUs, the others' for CUDA GPUs) and it fits as that framework runs it,
timed again with its runtime, which the file's readers time it with (PlanFile.runtime). Where none
does, the file names none (framework null): no framework's flags run it, and it is timed as
--framework all timed it."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from sp_planner.cli.question import framework_device_note
from sp_planner.estimate import PlanEstimate
from sp_planner.flags import FRAMEWORKS, release_runtime, render_flags, torchtitan
from sp_planner.layout import rank_groups
from sp_planner.pipeline_order import recorded_group
from sp_planner.planfile import PlanFile
from sp_planner.planfile_layout import RankLayout
from sp_planner.search import evaluate
from sp_planner.units import format_seconds

if TYPE_CHECKING:  # plan_output writes the file this module builds
    from sp_planner.cli.plan_output import Answer


def recorded_release(framework: str | None, framework_version: str | None) -> str | None:
    """The release plan.json records (PlanFile.framework_version): torchtitan's, its default where
    none was given (so that a later default leaves the file's timing as it was); None for the others."""
    return (framework_version or torchtitan.DEFAULT_VERSION) if framework == "torchtitan" else None


class RecordedPlan(NamedTuple):
    framework: str | None  # a name in flags.FRAMEWORKS; None where none runs the plan
    estimate: PlanEstimate  # the plan as `framework` runs it (Megatron's runtime for None)


def recorded_plan(answer: Answer) -> RecordedPlan:
    """The framework plan.json names for the answer's plan and the plan's estimate in its runtime."""
    best, q = answer.chosen, answer.question
    if answer.framework != "all":
        return RecordedPlan(answer.framework, best)
    request, version = answer.flag_request(best), answer.flag_choices.framework_version
    timed_with = release_runtime("all", version, model=q.model)
    for name in FRAMEWORKS:
        if framework_device_note(q.hardware, name) is not None or not render_flags(name, request).supported:
            continue
        runtime = release_runtime(name, recorded_release(name, version), model=q.model)
        if runtime == timed_with:
            return RecordedPlan(name, best)
        estimate = evaluate(q.model, q.hardware, q.workload, best.plan, num_nodes=q.num_nodes,
                            gpus_per_node=q.gpus_per_node, runtime=runtime)
        if estimate.fits:
            return RecordedPlan(name, estimate)
    return RecordedPlan(None, best)


def answer_plan_file(answer: Answer, *, full_rank_groups: bool = False) -> tuple[PlanFile, str | None]:
    """plan.json for the answer's plan, and under --framework all the rest of a line that begins with
    the file's name, saying which framework it names where that is not Megatron (None otherwise)."""
    q = answer.question
    framework, estimate = recorded_plan(answer)
    # The micro-batch group the flags set, where not Megatron's default (ParallelPlan.vpp_group).
    group = recorded_group(estimate.plan.pp, estimate.plan.vpp, estimate.plan.num_micro_batches(q.workload))
    estimate = estimate.model_copy(update={"plan": estimate.plan.model_copy(update={"vpp_group": group})})
    plan_file = PlanFile(
        model=q.model, hardware=q.hardware, workload=q.workload, num_nodes=q.num_nodes,
        gpus_per_node=q.gpus_per_node, framework=framework,
        framework_version=recorded_release(framework, answer.flag_choices.framework_version),
        attention_kernel=q.attention_kernel, attention_kernel_chosen=answer.flag_choices.attention_kernel is not None,
        plan=estimate.plan, estimate=estimate, rank_layout=RankLayout.of(estimate.plan),
        rank_groups=rank_groups(estimate.plan) if full_rank_groups else {},
    )
    if answer.framework != "all" or framework == "megatron":
        return plan_file, None
    if framework is None:
        return plan_file, ("names no framework (framework null): no framework's flags run plan 1 (each one's "
                           "flags above are for another plan or none); sp-simulate and sp-report time it as "
                           "--framework all did, with Megatron's runtime")
    return plan_file, (f"names {framework}, the first framework whose flags run plan 1, and holds its time as "
                       f"{framework} runs it, {format_seconds(estimate.step_time_s)} per step (Megatron's runtime "
                       f"ranked it at {format_seconds(answer.chosen.step_time_s)})")

"""The plan file sp-plan writes for its answer (--out): the chosen plan and the framework that runs
it. For one --framework, that framework. Under --framework all, which times every plan with
Megatron's runtime (cost.runtime.framework_runtime), the first of flags.FRAMEWORKS that runs the
plan: its flags express it, they are for the profile's chips (cli.profile_notes.framework_device_note:
MindSpeed's for Ascend NPUs, the others' for CUDA GPUs) and it fits as that framework runs it,
timed again as sp-plan --framework X times it: its runtime, which the file's readers time it with
(PlanFile.runtime), its default attention kernel (PlanFile.hardware's curves), its expert GEMMs
(the file's model, cost.grouped_gemm.with_framework_expert_gemm) and, where --fp8-recipe was not
given, its FP8 recipe (the file's plan, flags.own_recipe.framework_plan). Where none
does, the file names none (framework null): no framework's flags run it, and it is timed as
--framework all timed it."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, cast

from sp_planner.cli.plan_kernel import stack_default_kernel
from sp_planner.cli.profile_notes import framework_device_note
from sp_planner.cli.question import PlanQuestion
from sp_planner.cost.attention_kernels import TimedKernel, timed_kernel, with_attention_kernel
from sp_planner.cost.grouped_gemm import with_framework_expert_gemm
from sp_planner.estimate import PlanEstimate
from sp_planner.flags import FRAMEWORKS, release_runtime, render_flags, torchtitan
from sp_planner.flags.flash_head_dim import flash_head_dim_problem
from sp_planner.flags.own_recipe import framework_plan
from sp_planner.flags.torchtitan import resolve_version
from sp_planner.layout import rank_groups
from sp_planner.planfile import PlanFile
from sp_planner.planfile_layout import RankLayout
from sp_planner.search import evaluate
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.moe import MoEExpertGemm
from sp_planner.units import format_seconds

if TYPE_CHECKING:  # plan_output writes the file this module builds
    from sp_planner.cli.plan_output import Answer


# MoESpec.expert_gemm in the note on a plan file naming another framework.
_EXPERT_GEMM_WORDS: dict[MoEExpertGemm, str] = {"grouped": "grouped expert GEMM", "per_expert": "per-expert GEMMs"}


def recorded_release(framework: str | None, framework_version: str | None) -> str | None:
    """The release plan.json records (PlanFile.framework_version): torchtitan's, its default where
    none was given (so that a later default leaves the file's timing as it was); for a file naming no
    framework, the --framework-version given (None where none was), which times nothing there
    (Megatron's runtime) but is the release torchtitan's flags were printed for, as sp-report renders
    them again; None for the others."""
    if framework is None:
        return framework_version
    return (framework_version or torchtitan.DEFAULT_VERSION) if framework == "torchtitan" else None


class RecordedPlan(NamedTuple):
    framework: str | None  # a name in flags.FRAMEWORKS; None where none runs the plan
    estimate: PlanEstimate  # the plan as `framework` runs it (Megatron's runtime for None)
    hardware: HardwareProfile  # the profile with the curves of the kernel that timed it
    attention_kernel: TimedKernel | None  # that kernel (PlanFile.attention_kernel)
    model: ModelSpec  # the model with `framework`'s expert GEMMs (the question's for None)
    # Under --framework all with framework None: those whose flags run the plan, where it does not
    # fit as they run it.
    unfit: tuple[str, ...] = ()
    # Under --framework all with framework None: those whose flags express the plan (sp-plan prints
    # them for plan 1) but are for other chips than the profile's (cli.profile_notes.framework_device_note).
    off_device: tuple[str, ...] = ()


def framework_kernel_timing(question: PlanQuestion, name: str,
                            version: str | None) -> tuple[HardwareProfile, TimedKernel | None] | None:
    """The profile with the curves of the kernel `name` runs plan 1 with, and that kernel: the one
    sp-plan --framework `name` times with (cli.plan_kernel.stack_default_kernel, on the profile as
    given), or the user's --attention-kernel, which its flags select; the question's own profile
    where that is the kernel that timed the ranking. None where `name` cannot run the model's head
    dims with it (flags.flash_head_dim.flash_head_dim_problem, which refuses sp-plan --framework `name`)."""
    chosen = question.flag_choices.attention_kernel
    given = question.given_hardware or question.hardware
    interface = resolve_version(recorded_release(name, version)) if name == "torchtitan" else None
    kernel = chosen if chosen is not None else stack_default_kernel(question.model, given, name, interface)
    timed = timed_kernel(given, kernel)
    if timed == question.attention_kernel:
        hardware = question.hardware
    else:
        hardware = with_attention_kernel(given, kernel)
    if flash_head_dim_problem(question.model, hardware, stack=name, chosen=chosen, timed=timed) is not None:
        return None
    return hardware, cast("TimedKernel | None", timed)


def recorded_plan(answer: Answer) -> RecordedPlan:
    """The framework plan.json names for the answer's plan and the plan's estimate in its runtime,
    with the attention kernel it runs."""
    best, q = answer.chosen, answer.question
    if answer.framework != "all":
        return RecordedPlan(answer.framework, best, q.hardware, q.attention_kernel, q.model)
    request, version = answer.flag_request(best), answer.flag_choices.framework_version
    timed_with = release_runtime("all", version, model=q.model)
    unfit: list[str] = []
    off_device: list[str] = []
    for name in FRAMEWORKS:
        # Its flags asked of the plan with its own FP8 recipe (torchtitan refuses Megatron's delayed).
        plan = framework_plan(best.plan, name, recipe_given=q.fp8_recipe_given)
        if not render_flags(name, request.model_copy(update={"plan": plan})).supported:
            continue
        if framework_device_note(q.hardware, name) is not None:
            off_device.append(name)
            continue
        if (timing := framework_kernel_timing(q, name, version)) is None:
            continue
        hardware, kernel = timing
        # Its expert GEMMs, as sp-plan --framework `name` sets them (cli.plan_kernel.set_up_kernel):
        # torchtitan's grouped where --framework all timed Megatron's per-expert GEMMs.
        model = with_framework_expert_gemm(q.given_model or q.model, name)
        runtime = release_runtime(name, recorded_release(name, version), model=model)
        if runtime == timed_with and kernel == q.attention_kernel and model == q.model and plan == best.plan:
            return RecordedPlan(name, best, q.hardware, q.attention_kernel, q.model)
        estimate = evaluate(model, hardware, q.workload, plan, num_nodes=q.num_nodes,
                            gpus_per_node=q.gpus_per_node, runtime=runtime)
        if estimate.fits:
            return RecordedPlan(name, estimate, hardware, kernel, model)
        unfit.append(name)
    return RecordedPlan(None, best, q.hardware, q.attention_kernel, q.model, tuple(unfit), tuple(off_device))


def answer_plan_file(answer: Answer, *, full_rank_groups: bool = False) -> tuple[PlanFile, str | None]:
    """plan.json for the answer's plan, and under --framework all the rest of a line that begins with
    the file's name, saying which framework it names where that is not Megatron (None otherwise)."""
    q = answer.question
    recorded = recorded_plan(answer)
    framework, estimate = recorded.framework, recorded.estimate
    # The micro-batch group priced, Megatron's default pp included (ParallelPlan.vpp_group; the flags
    # set it where it is not pp).
    group = estimate.plan.priced_vpp_group(q.workload.global_batch)
    estimate = estimate.model_copy(update={"plan": estimate.plan.model_copy(update={"vpp_group": group})})
    plan_file = PlanFile(
        model=recorded.model, hardware=recorded.hardware, workload=q.workload, num_nodes=q.num_nodes,
        gpus_per_node=q.gpus_per_node, framework=framework,
        framework_version=recorded_release(framework, answer.flag_choices.framework_version),
        attention_kernel=recorded.attention_kernel,
        attention_kernel_chosen=answer.flag_choices.attention_kernel is not None,
        fp8_recipe_given=q.fp8_recipe_given,
        plan=estimate.plan, estimate=estimate, rank_layout=RankLayout.of(estimate.plan),
        rank_groups=rank_groups(estimate.plan) if full_rank_groups else {},
    )
    if answer.framework != "all" or framework == "megatron":
        return plan_file, None
    if framework is None:
        unfit = (f"; {' and '.join(recorded.unfit)} {'runs' if len(recorded.unfit) == 1 else 'run'} it but it "
                 "does not fit in memory as " + ("it runs" if len(recorded.unfit) == 1 else "they run") + " it"
                 if recorded.unfit else "")
        # The flags printed for plan 1 that cannot run it on these chips, named: "for another plan" would
        # contradict the "<framework> flags for plan 1" above them.
        off = recorded.off_device
        others = ("each one's flags above are for another plan or none" if not off else
                  f"{' and '.join(off)} {'expresses' if len(off) == 1 else 'express'} it, but for other chips "
                  f"than {q.hardware.name}'s; the others' flags above are for another plan or none")
        return plan_file, (f"names no framework (framework null): no framework's flags run plan 1 ({others})"
                           f"{unfit}; sp-simulate and sp-report time it as --framework all did, with Megatron's "
                           "runtime")
    own, ranked = [], ["Megatron's runtime"]  # what the file's time runs with, where not what ranked it
    if recorded.attention_kernel != q.attention_kernel:
        own.append(f"attention kernel {recorded.attention_kernel or 'the profile own'}")
        ranked.append(f"{q.attention_kernel or 'the profile own'}")
    if recorded.model.moe is not None and q.model.moe is not None and recorded.model != q.model:
        own.append(_EXPERT_GEMM_WORDS[recorded.model.moe.expert_gemm])
        ranked.append(_EXPERT_GEMM_WORDS[q.model.moe.expert_gemm])
    if (recipe := estimate.plan.fp8_recipe) != answer.chosen.plan.fp8_recipe:
        own.append(f"{recipe} FP8 scaling")
        ranked.append(f"{answer.chosen.plan.fp8_recipe} FP8 scaling")
    how = f" with its {' and its '.join(own)}" if own else ""
    by = ranked[0] if len(ranked) == 1 else f"{', '.join(ranked[:-1])} and {ranked[-1]}"
    return plan_file, (f"names {framework}, the first framework whose flags run plan 1, and holds its time as "
                       f"{framework} runs it{how}, {format_seconds(estimate.step_time_s)} per step ({by} ranked "
                       f"it at {format_seconds(answer.chosen.step_time_s)})")

"""Whether a plan file's plan can run on its cluster and be timed, asked before any work.

PlanFile refuses on read a plan its hardware cannot run (hardware_problems: a precision, FP8
attention, block scaling or offloading sp-plan would have refused for that profile); sp-run
refuses a plan that breaks a hard rule or cannot run on the file's GPUs (check_plan_file_runs),
and sp-simulate and sp-report, which time the plan again, also a model they cannot time
(check_loaded_plan_times). Each refusal is one UserInputError line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sp_planner.cost.dsa import dsa_untimed
from sp_planner.cost.fp8_attention import fp8_attention_problem
from sp_planner.cost.offload import check_host_link
from sp_planner.cost.precision import check_blockwise, precision_problem
from sp_planner.errors import UserInputError
from sp_planner.plan import ParallelPlan
from sp_planner.plan_checks import check_plan_runs
from sp_planner.specs.hardware import HardwareProfile

if TYPE_CHECKING:  # planfile imports hardware_problems from here
    from sp_planner.planfile import LoadedPlan, PlanFile


def hardware_problems(plan: ParallelPlan, hardware: HardwareProfile) -> list[str]:
    """What of `plan` the cost model cannot run on `hardware`, as sp-plan refuses its options:
    a GEMM precision the profile has no peak and efficiency for, FP8 attention without a published
    curve, FP8 block scaling off Hopper, activation offloading without a measured host link."""
    problems = []
    precision = precision_problem(plan.precision, hardware)
    if precision is not None:
        problems.append(f"plan.precision {precision}")
    attention = fp8_attention_problem(hardware) if plan.fp8_attention else None
    if attention is not None:
        problems.append(f"plan.fp8_attention: {attention}")
    try:
        if plan.fp8_blockwise:
            check_blockwise(hardware)
    except ValueError as err:
        problems.append(f"plan.fp8_recipe: {err}")
    try:
        check_host_link(hardware, plan.cpu_offload_layers)
    except ValueError as err:
        problems.append(f"plan.cpu_offload_layers: {err}")
    return problems


def check_plan_file_runs(plan_file: PlanFile) -> None:
    """Refuse, in one UserInputError line, a plan file whose plan cannot run on its cluster
    (plan_checks.check_plan_runs: its GPUs, the hard rules, options sp-plan never combines), before
    any work: sp-run's check, and sp-simulate's and sp-report's with check_loaded_plan_times."""
    check_plan_runs(plan_file.plan, plan_file.model, plan_file.workload, num_nodes=plan_file.num_nodes,
                    gpus_per_node=plan_file.gpus_per_node)


def check_loaded_plan_times(loaded: LoadedPlan) -> None:
    """check_plan_file_runs, and refuse in one UserInputError line a file whose model cannot be
    timed (LoadedPlan.timing_problem, as sp-run refuses it): what sp-simulate and sp-report ask of
    a plan file they read before any work."""
    check_plan_file_runs(loaded.plan_file)
    problem = loaded.timing_problem() or dsa_untimed(loaded.plan_file.model, loaded.plan_file.hardware)
    if problem is not None:  # it would time another model's attention (full, not windowed or sparse)
        raise UserInputError(problem)

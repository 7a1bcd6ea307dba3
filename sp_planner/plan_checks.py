"""Whether a plan can run as written, checked before any work: the hard rules (plan.violations),
the options sp-plan never combines (bf16 Adam moments outside ZeRO-1) and, on a given cluster, its
GPU count. sp-simulate and sp-report refuse a plan file with these (planfile), the flag renderers
name the problems, and the simulator checks its every plan."""

from __future__ import annotations

from sp_planner.errors import UserInputError
from sp_planner.plan import ParallelPlan, violations
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload
from sp_planner.units import plural


def adam_moments_problem(plan: ParallelPlan) -> str | None:
    """bf16 Adam moments outside ZeRO-1 (None when fine): Megatron's precision-aware optimizer runs
    only with the distributed optimizer (megatron/core/optimizer/__init__.py at d98e8a6:
    "--use-precision-aware-optimizer only supported with distributed optimizer"), so sp-plan pins
    zero 1 with --bf16-adam-moments."""
    if plan.adam_moments_bf16 and plan.zero != 1:
        return (f"adam_moments_bf16 needs zero 1 (Megatron's precision-aware optimizer runs only with the "
                f"distributed optimizer), not zero {plan.zero}")
    return None


def plan_problems(plan: ParallelPlan, model: ModelSpec, workload: Workload) -> list[str]:
    """Why the plan cannot run as written, beyond what ParallelPlan itself refuses: the hard rules
    (violations) and the options sp-plan never combines (adam_moments_problem); empty when it can."""
    problems = [v.message for v in violations(plan, model, workload)]
    adam = adam_moments_problem(plan)
    return problems + [adam] if adam else problems


def check_plan_runs(plan: ParallelPlan, model: ModelSpec, workload: Workload, *, num_nodes: int,
                    gpus_per_node: int) -> None:
    """Refuse, in one UserInputError line, a plan that cannot run on the cluster: degrees that do
    not multiply to its GPUs, or any of plan_problems. sp-simulate and sp-report check a plan file
    with it before any work (planfile_checks.check_plan_file_runs), and the simulator its every plan."""
    world = num_nodes * gpus_per_node
    if plan.world_size != world:
        raise UserInputError(
            f"plan uses dp*pp*tp*ulysses*ring = {plan.world_size} GPUs but the cluster has "
            f"{plural(num_nodes, 'node')} x {gpus_per_node} = {world}; make the plan's degrees multiply to "
            f"{world}, or plan again with sp-plan for this cluster"
        )
    problems = plan_problems(plan, model, workload)
    if problems:
        raise UserInputError("plan cannot run: " + "; ".join(problems))

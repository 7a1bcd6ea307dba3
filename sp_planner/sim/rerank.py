"""Re-rank the analytic model's best plans by simulated step time (`sp-plan --simulate K`)."""

from __future__ import annotations

from sp_planner.cost.runtime import MEGATRON_RUNTIME, Runtime
from sp_planner.estimate import PlanEstimate, SearchResult
from sp_planner.sim.simulate import simulate
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload


def rerank_by_simulation(result: SearchResult, model: ModelSpec, hardware: HardwareProfile, workload: Workload, *,
                         num_nodes: int, gpus_per_node: int, top_k: int,
                         runtime: Runtime = MEGATRON_RUNTIME, known: dict | None = None) -> SearchResult:
    """Simulate the first `top_k` fitting plans and order them by simulated step time (ties by the
    analytic time before the MFU bound, then memory).

    Each simulated estimate keeps its analytic numbers and gains `simulated_step_time_s`; plans
    beyond the first `top_k` (and plans that do not fit) keep their places after them, but those
    `known` (plan -> seconds, filled here) holds from another ranking's head, which join the head
    where they simulate faster than one of its plans (else they keep their place, given their
    simulated step): one document never gives one plan two values, and a plan that simulates
    faster than this ranking's head is not left behind it (sp-plan's framework ranking simulates its own first K,
    which may lie past the first K of every plan: the overall best must not then differ from the
    framework's best by a plan both can run).
    """
    known = {} if known is None else known

    def simulated_s(est: PlanEstimate) -> float:
        if est.plan not in known:
            known[est.plan] = simulate(model, hardware, workload, est.plan, num_nodes=num_nodes,
                                       gpus_per_node=gpus_per_node, detail=False, runtime=runtime).step_time_s
        return known[est.plan]

    first = [est for est in result.ranked[:top_k] if est.fits]
    simulated = [est.model_copy(update={"simulated_step_time_s": simulated_s(est)}) for est in first]
    # Past the first top_k, only a plan another ranking simulated faster than one of them joins
    # the head: a slower one keeps its analytic place (lifted whole, the framework's simulated
    # 72.9 s plans went ahead of 70.8 s ones: Llama-3-8B at 64K, --framework torchtitan --simulate 3).
    bar = max((known[est.plan] for est in first), default=float("-inf"))
    late = [est for est in result.ranked[top_k:] if est.fits and est.plan in known and known[est.plan] < bar]
    head = first + late
    simulated += [est.model_copy(update={"simulated_step_time_s": known[est.plan]}) for est in late]
    # Ties at the best published MFU (both steps held to it) go by the time before that bound, as
    # the search orders them (search_rank), then by memory.
    simulated.sort(key=lambda est: (est.simulated_step_time_s, est.step_time_s - est.time.mfu_ceiling_s,
                                    est.memory_peak_bytes))
    rest = with_known(tuple(est for est in result.ranked if not any(est is done for done in head)), known)
    return result.model_copy(update={"ranked": tuple(simulated) + rest})


def with_known(ranked: tuple[PlanEstimate, ...], known: dict) -> tuple[PlanEstimate, ...]:
    """`ranked` in its order, each plan `known` holds (plan -> simulated seconds) given its
    simulated step where it has none."""
    return tuple(est.model_copy(update={"simulated_step_time_s": known[est.plan]})
                 if est.simulated_step_time_s is None and est.plan in known else est for est in ranked)

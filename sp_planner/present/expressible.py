"""The plans a given framework can express: sp-plan --framework X ranks only those.

Frameworks differ (Megatron-LM has ZeRO-1 only, DeepSpeed Ulysses has no ring, torchtitan no
Ulysses), so the first plan overall may have no flags in the framework asked for; the user then
gets the fitting plans that do, with the overall best shown beside them.
"""

from __future__ import annotations

from sp_planner.estimate import PlanEstimate, SearchResult
from sp_planner.flags import FlagRequest, FrameworkFlags, render_flags
from sp_planner.search import HEAD_ROWS
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload

# Fitting candidates scanned, in rank order, before giving up: the rows the search keeps.
MAX_SCANNED = HEAD_ROWS


def best_expressible(
    result: SearchResult,
    framework: str,
    *,
    model: ModelSpec,
    workload: Workload,
    num_nodes: int,
    gpus_per_node: int,
    framework_version: str | None = None,
) -> tuple[int, PlanEstimate, FrameworkFlags] | None:
    """(rank from 1, estimate, flags) of the best fitting plan `framework` can express, or None.

    `result.head` gives the candidates in rank order (fitting plans first, fastest first), so the
    first supported row is the best.
    """
    for rank, (_, row) in enumerate(result.head(MAX_SCANNED).iterrows(), start=1):
        if not row["fits"]:
            return None
        estimate = PlanEstimate.from_row(row)
        flags = render_flags(framework, FlagRequest(
            model=model, workload=workload, plan=estimate.plan, num_nodes=num_nodes, gpus_per_node=gpus_per_node,
            framework_version=framework_version,
        ))
        if flags.supported:
            return rank, estimate, flags
    return None


def expressible_plans(
    result: SearchResult,
    framework: str,
    *,
    model: ModelSpec,
    workload: Workload,
    num_nodes: int,
    gpus_per_node: int,
    top_k: int,
    framework_version: str | None = None,
) -> tuple[PlanEstimate, ...]:
    """The best `top_k` fitting plans `framework` can express, best first (empty if none is), in
    the analytic order of `result.head`."""
    found: list[PlanEstimate] = []
    for _, row in result.head(MAX_SCANNED).iterrows():
        if not row["fits"] or len(found) == top_k:
            break
        estimate = PlanEstimate.from_row(row)
        request = FlagRequest(model=model, workload=workload, plan=estimate.plan, num_nodes=num_nodes,
                              gpus_per_node=gpus_per_node, framework_version=framework_version)
        if render_flags(framework, request).supported:
            found.append(estimate)
    return tuple(found)

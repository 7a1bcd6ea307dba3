"""The plans a given framework can express: sp-plan --framework X ranks only those.

Frameworks differ (DeepSpeed Ulysses has no ring, torchtitan no Ulysses, MindSpeed no all-gather CP
for dense attention), so the first plan overall may have no flags in the framework asked for; the user then
gets the fitting plans that do, with the overall best shown beside them.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

from sp_planner.estimate import PlanEstimate, SearchResult
from sp_planner.flags import FlagRequest, FrameworkFlags, render_flags
from sp_planner.search import HEAD_ROWS
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload

# Fitting candidates scanned, in rank order, before giving up: the rows the search keeps.
MAX_SCANNED = HEAD_ROWS


def _expressible(
    result: SearchResult, framework: str, *, model: ModelSpec, workload: Workload, num_nodes: int,
    gpus_per_node: int, framework_version: str | None,
) -> Iterator[tuple[int, PlanEstimate, FrameworkFlags]]:
    """(rank from 1, estimate, flags) of each fitting plan `framework` can express, in the order of
    `result.head` (fitting plans first, fastest first); stops at the first plan that does not fit."""
    for rank, (_, row) in enumerate(result.head(MAX_SCANNED).iterrows(), start=1):
        if not row["fits"]:
            return
        estimate = PlanEstimate.from_row(row)
        flags = render_flags(framework, FlagRequest(
            model=model, workload=workload, plan=estimate.plan, num_nodes=num_nodes, gpus_per_node=gpus_per_node,
            framework_version=framework_version,
        ))
        if flags.supported:
            yield rank, estimate, flags


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
    """(rank from 1, estimate, flags) of the best fitting plan `framework` can express, or None."""
    return next(_expressible(result, framework, model=model, workload=workload, num_nodes=num_nodes,
                             gpus_per_node=gpus_per_node, framework_version=framework_version), None)


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
    found = _expressible(result, framework, model=model, workload=workload, num_nodes=num_nodes,
                         gpus_per_node=gpus_per_node, framework_version=framework_version)
    return tuple(estimate for _, estimate, _ in islice(found, top_k))


def best_expert_parallel(
    result: SearchResult,
    framework: str,
    *,
    model: ModelSpec,
    workload: Workload,
    num_nodes: int,
    gpus_per_node: int,
    framework_version: str | None = None,
) -> tuple[int, PlanEstimate] | None:
    """(rank from 1, estimate) of the best fitting plan with expert parallelism (ep > 1) among the
    rows the search keeps, one `framework` can express ("all": any), or None."""
    if framework == "all":
        for rank, (_, row) in enumerate(result.head(MAX_SCANNED).iterrows(), start=1):
            if not row["fits"]:
                return None
            if row["ep"] > 1:
                return rank, PlanEstimate.from_row(row)
        return None
    found = _expressible(result, framework, model=model, workload=workload, num_nodes=num_nodes,
                         gpus_per_node=gpus_per_node, framework_version=framework_version)
    return next(((rank, est) for rank, est, _ in found if est.plan.ep > 1), None)

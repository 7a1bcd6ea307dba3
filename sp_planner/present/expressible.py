"""The plans a given framework can express: sp-plan --framework X ranks only those.

Frameworks differ (DeepSpeed Ulysses has no ring, torchtitan no Ulysses, MindSpeed no all-gather CP
for dense attention), so the first plan overall may have no flags in the framework asked for; the user then
gets the fitting plans that do, with the overall best shown beside them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from itertools import islice

import numpy as np

from sp_planner.estimate import PlanEstimate, SearchResult, plan_of_row
from sp_planner.flags import FlagChoices, FlagRequest, FrameworkFlags, render_flags
from sp_planner.flags.own_recipe import own_recipe_flags
from sp_planner.plan import ParallelPlan
from sp_planner.search import HEAD_ROWS, Progress
from sp_planner.specs.base import FrozenModel
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload
from sp_planner.units import plural

# sp-plan --format csv's column after plans.csv's (report.csv.PLAN_CSV_COLUMNS): whether --framework
# can express the row's plan. Without it the rows of a framework that expresses no fitting plan
# (every framework's best, sp-plan exit 1) read as that framework's.
EXPRESSIBLE_COLUMN = "expressible"
# Fitting candidates scanned, in rank order, before giving up: the rows the search keeps.
MAX_SCANNED = HEAD_ROWS
# Expert-parallel plans whose flags are rendered looking for one the framework can express (about
# 2 ms each).
MAX_EXPERT_PARALLEL_TRIED = 100


def _expressible(
    result: SearchResult, framework: str, *, model: ModelSpec, workload: Workload, num_nodes: int,
    gpus_per_node: int, choices: FlagChoices,
) -> Iterator[tuple[int, PlanEstimate, FrameworkFlags]]:
    """(rank from 1, estimate, flags rendered with `choices`) of each fitting plan `framework` can
    express, in the order of `result.head` (fitting plans first, fastest first); stops at the first
    plan that does not fit. Each plan's flags are asked with the framework's own FP8 recipe where
    none was given (flags.own_recipe.own_recipe_flags, with its note), as plan 1's are."""
    head = result.head(MAX_SCANNED)
    # The flags read the plan alone: each row's plan columns are read, and a row's whole estimate
    # (PlanEstimate.from_row, a millisecond) only where the framework expresses it.
    names = list(ParallelPlan.model_fields)
    for rank, (fits, *values) in enumerate(zip(head["fits"], *(head[name] for name in names)), start=1):
        if not fits:
            return
        plan = plan_of_row(dict(zip(names, values)))
        flags = own_recipe_flags(framework, choices.request(plan, model=model, workload=workload, num_nodes=num_nodes,
                                                            gpus_per_node=gpus_per_node))
        if flags.supported:
            _, whole = next(head.iloc[rank - 1:rank].iterrows())  # the row as iterrows gives it
            yield rank, PlanEstimate.from_row(whole), flags


def best_expressible(
    result: SearchResult,
    framework: str,
    *,
    model: ModelSpec,
    workload: Workload,
    num_nodes: int,
    gpus_per_node: int,
    choices: FlagChoices = FlagChoices(),
) -> tuple[int, PlanEstimate, FrameworkFlags] | None:
    """(rank from 1, estimate, flags) of the best fitting plan `framework` can express, or None."""
    return next(_expressible(result, framework, model=model, workload=workload, num_nodes=num_nodes,
                             gpus_per_node=gpus_per_node, choices=choices), None)


class ExpressedFlags(FrozenModel):
    """A framework's flags for a plan or, where they cannot express it, for the best fitting plan of
    the search that they can (framework_flags): what sp-plan prints and the report shows."""

    flags: FrameworkFlags | None  # supported flags; None where no fitting plan can be expressed
    refusal: str | None = None  # why the flags cannot express the plan asked; None where they can
    rank: int | None = None  # the search's rank of the plan `flags` are for, where it is not the one asked
    estimate: PlanEstimate | None = None  # that plan's estimate


def framework_flags(name: str, request: FlagRequest, result: SearchResult, *,
                    searching: Callable[[str], AbstractContextManager[object]] | None = None) -> ExpressedFlags:
    """`name`'s flags for the request's plan, asked with its own FP8 recipe where none was given
    (flags.own_recipe); where they cannot express it, those of the best fitting plan of `result`
    they can (best_expressible, renders down the ranking: a second or more at a large world),
    inside `searching(refusal)` where given (sp-plan says the refusal, then shows a bar)."""
    flags = own_recipe_flags(name, request)
    if flags.supported:
        return ExpressedFlags(flags=flags)
    with searching(flags.reason or "") if searching is not None else nullcontext():
        found = best_expressible(result, name, model=request.model, workload=request.workload,
                                 num_nodes=request.num_nodes, gpus_per_node=request.gpus_per_node,
                                 choices=request.choices)
    if found is None:
        return ExpressedFlags(flags=None, refusal=flags.reason)
    rank, estimate, expressed = found
    return ExpressedFlags(flags=expressed, refusal=flags.reason, rank=rank, estimate=estimate)


def expressible_plans(
    result: SearchResult,
    framework: str,
    *,
    model: ModelSpec,
    workload: Workload,
    num_nodes: int,
    gpus_per_node: int,
    top_k: int,
    choices: FlagChoices = FlagChoices(),
    progress: Progress | None = None,
) -> tuple[PlanEstimate, ...]:
    """The best `top_k` fitting plans `framework` can express, best first (empty if none is), in
    the analytic order of `result.head`. progress(found, top_k, what) hears of each plan found
    (about 1.5 ms each: sp-plan --top 1000 spends over a second here)."""
    found = _expressible(result, framework, model=model, workload=workload, num_nodes=num_nodes,
                         gpus_per_node=gpus_per_node, choices=choices)
    plans: list[PlanEstimate] = []
    for _, estimate, _ in islice(found, top_k):
        plans.append(estimate)
        if progress is not None:
            progress(len(plans), top_k, f"finding the best {plural(top_k, 'plan')} {framework} can express")
    return tuple(plans)


def best_expert_parallel(
    result: SearchResult,
    framework: str,
    *,
    model: ModelSpec,
    workload: Workload,
    num_nodes: int,
    gpus_per_node: int,
    choices: FlagChoices = FlagChoices(),
) -> tuple[int, PlanEstimate] | None:
    """(rank from 1, estimate) of the best fitting plan with expert parallelism (ep > 1) among the
    rows the search keeps that `framework` can express ("all": any), trying at most
    MAX_EXPERT_PARALLEL_TRIED of them; None if none is."""
    head = result.head(MAX_SCANNED).reset_index(drop=True)
    fitting = head["fits"].to_numpy(dtype=bool)
    # Fitting rows come first (search order), so the first non-fitting row ends the candidates.
    last = int(np.argmin(fitting)) if not fitting.all() else len(head)
    rows = head.index[:last][head["ep"].to_numpy()[:last] > 1][:MAX_EXPERT_PARALLEL_TRIED]
    for i in rows:
        estimate = PlanEstimate.from_row(head.loc[i])
        if framework == "all" or render_flags(framework, choices.request(
                estimate.plan, model=model, workload=workload, num_nodes=num_nodes,
                gpus_per_node=gpus_per_node)).supported:
            return int(i) + 1, estimate
    return None

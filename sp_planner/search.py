"""Whole-space search: enumerate, evaluate every candidate in columns, prune with reasons, rank.

`evaluate` runs one plan through the same column code, so a single plan and the frame agree.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from sp_planner.cost.comm import comm_columns
from sp_planner.cost.memory import memory_columns
from sp_planner.cost.step import time_columns
from sp_planner.estimate import PlanEstimate, SearchResult
from sp_planner.plan import ParallelPlan, violations
from sp_planner.space import (
    DEGREES,
    RECOMPUTE,
    RULES,
    Pins,
    enumerate_candidates,
    first_rule,
    plan_columns,
    rule_masks,
)
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload
from sp_planner.units import plural

__all__ = ["Pins", "evaluate", "search"]

GIB = 2.0**30


def _check_cluster(num_nodes: int, gpus_per_node: int) -> int:
    if num_nodes < 1 or gpus_per_node < 1:
        raise ValueError(f"num_nodes ({num_nodes}) and gpus_per_node ({gpus_per_node}) must be >= 1")
    return num_nodes * gpus_per_node


def _rule_messages(model: ModelSpec, workload: Workload, c: dict, code: np.ndarray) -> np.ndarray:
    """The first broken rule's message from `plan.violations`, computed once per distinct plan shape."""
    reasons = np.full(len(code), "", dtype=object)
    bad = np.flatnonzero(code >= 0)
    if len(bad) == 0:
        return reasons
    keys = np.stack([c[n][bad] for n in DEGREES] + [c["micro_batch"][bad], c["zigzag"][bad]], axis=1)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    texts = []
    for row, rule in zip(unique, code[bad][np.unique(inverse, return_index=True)[1]]):
        plan = ParallelPlan(**dict(zip(DEGREES, row[:5].tolist())), micro_batch=int(row[5]),
                            ring_layout="zigzag" if row[6] else "contiguous")
        found = {v.rule: v.message for v in violations(plan, model, workload)}
        texts.append(f"{RULES[rule]}: {found[RULES[rule]]}")
    reasons[bad] = np.array(texts, dtype=object)[inverse.reshape(-1)]
    return reasons


# A search's steps, for a progress line: search(progress=update) calls update(done, SEARCH_STEPS, what).
SEARCH_STEPS = 5


def _no_progress(done: int, total: int, description: str | None = None) -> None:
    pass


def _frame(model: ModelSpec, hardware: HardwareProfile, workload: Workload, c: dict,
           gpus_per_node: int, progress: Callable[..., None] = _no_progress) -> pd.DataFrame:
    c = dict(c, gpus_per_node=gpus_per_node)
    n = len(c["tp"])
    step = f"searching {plural(n, 'candidate')}"
    cols: dict[str, object] = {name: c[name] for name in DEGREES}
    cols["zero"] = c["zero"]
    cols["recompute"] = np.array(RECOMPUTE, dtype=object)[c["recompute_code"]]
    cols["micro_batch"] = c["micro_batch"]
    cols["ring_layout"] = np.where(c["zigzag"], "zigzag", "contiguous").astype(object)
    progress(1, SEARCH_STEPS, f"{step}: memory")
    cols.update(memory_columns(model, hardware, workload, c))
    progress(2, SEARCH_STEPS, f"{step}: step time")
    cols.update(time_columns(model, hardware, workload, c))
    cols.update(comm_columns(model, workload, c))
    progress(3, SEARCH_STEPS, f"{step}: rules")
    code = first_rule(rule_masks(model, workload, c), n)
    peak = cols["memory_peak_bytes"]
    oom = (code < 0) & (peak > hardware.hbm_bytes)
    reason = _rule_messages(model, workload, c, code)
    oom_idx = np.flatnonzero(oom)
    reason[oom_idx] = [
        f"oom: needs {p / GIB:.1f} GiB per GPU, {hardware.hbm_bytes / GIB:.1f} GiB available"
        for p in peak[oom_idx]
    ]
    cols["fits"] = (code < 0) & ~oom
    cols["reason"] = reason
    cols["rule_code"] = np.where(oom, len(RULES), code)
    return pd.DataFrame(cols)


def _ranked_order(frame: pd.DataFrame, capacity: float) -> np.ndarray:
    """Fitting plans by step time (then memory); then OOM by how far over; then rule breakers."""
    tier = np.where(frame["fits"], 0, np.where(frame["rule_code"] == len(RULES), 1, 2))
    primary = np.where(tier == 0, frame["step_time_s"], frame["memory_peak_bytes"] / capacity)
    secondary = np.where(tier == 0, frame["memory_peak_bytes"], frame["step_time_s"])
    return np.lexsort((secondary, primary, tier))


def search(model: ModelSpec, hardware: HardwareProfile, workload: Workload, *, num_nodes: int,
           gpus_per_node: int, pins: Pins = Pins(), top_k: int = 10,
           progress: Callable[..., None] = _no_progress) -> SearchResult:
    """Every candidate plan, ranked. progress(done, SEARCH_STEPS, what) is told each step."""
    world = _check_cluster(num_nodes, gpus_per_node)
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    progress(0, SEARCH_STEPS, "searching plans: enumerating candidates")
    cols = enumerate_candidates(workload, world, pins)
    if len(cols["tp"]) == 0:
        raise ValueError(f"no (dp, pp, tp, ulysses, ring) with product {world} matches the pins {pins}")
    frame = _frame(model, hardware, workload, cols, gpus_per_node, progress)
    progress(4, SEARCH_STEPS, f"ranking {plural(len(frame), 'candidate')}")
    order = _ranked_order(frame, hardware.hbm_bytes)
    frame = frame.iloc[order].reset_index(drop=True)
    counts = np.bincount(frame["rule_code"].to_numpy()[~frame["fits"].to_numpy()],
                         minlength=len(RULES) + 1)
    prune_counts = {rule: int(k) for rule, k in zip((*RULES, "oom"), counts) if k}
    ranked = tuple(PlanEstimate.from_row(frame.iloc[i]) for i in range(min(top_k, len(frame))))
    return SearchResult(candidates_evaluated=len(frame), ranked=ranked, prune_counts=prune_counts,
                        frame=frame.drop(columns="rule_code"))


def evaluate(model: ModelSpec, hardware: HardwareProfile, workload: Workload, plan: ParallelPlan, *,
             num_nodes: int, gpus_per_node: int) -> PlanEstimate:
    """One plan, through the same columns as the search; fits False with a reason when it cannot run."""
    world = _check_cluster(num_nodes, gpus_per_node)
    if plan.world_size != world:
        raise ValueError(
            f"plan uses dp*pp*tp*ulysses*ring = {plan.world_size} GPUs but the cluster has {world} "
            f"({plural(num_nodes, 'node')} x {gpus_per_node})"
        )
    frame = _frame(model, hardware, workload, plan_columns(plan), gpus_per_node)
    return PlanEstimate.from_row(frame.iloc[0])

"""Whole-space search: enumerate, evaluate every candidate in columns, prune with reasons, rank.

Candidates and their costs are typed numpy arrays (space.Candidates, cost.*Columns); `evaluate`
runs one plan through the same code, so a single plan and the search agree.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from sp_planner.cost.comm import CommColumns, comm_columns
from sp_planner.cost.memory import MemoryColumns, memory_columns
from sp_planner.cost.step import StepColumns, time_columns
from sp_planner.estimate import (
    FRAME_PREFIXES,
    CommBytes,
    CommLinks,
    MemoryBreakdown,
    PlanEstimate,
    SearchResult,
    TimeBreakdown,
    plain,
)
from sp_planner.plan import PRECISIONS, RECOMPUTE, RULES, ParallelPlan, violations
from sp_planner.space import DEGREES, Candidates, Pins, enumerate_candidates, first_rule, rule_masks
from sp_planner.specs.base import FrozenModel
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload
from sp_planner.units import GIB

__all__ = ["Pins", "evaluate", "search"]


def _check_cluster(num_nodes: int, gpus_per_node: int) -> int:
    if num_nodes < 1 or gpus_per_node < 1:
        raise ValueError(f"num_nodes ({num_nodes}) and gpus_per_node ({gpus_per_node}) must be >= 1")
    return num_nodes * gpus_per_node


def _rule_messages(model: ModelSpec, workload: Workload, c: Candidates, code: np.ndarray) -> np.ndarray:
    """The first broken rule's message from `plan.violations`, computed once per distinct plan shape."""
    reasons = np.full(len(code), "", dtype=object)
    bad = np.flatnonzero(code >= 0)
    if len(bad) == 0:
        return reasons
    # The rules read the degrees, the micro-batch, the ring layout and the pipeline split only.
    keys = np.stack([getattr(c, n)[bad] for n in (*DEGREES, "micro_batch", "zigzag", "vpp", "first_stage_layers",
                                                   "last_stage_layers")], axis=1)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    texts = []
    for i in bad[first]:
        rule = RULES[code[i]]
        found = {v.rule: v.message for v in violations(c.plan(i), model, workload)}
        texts.append(f"{rule}: {found[rule]}")
    reasons[bad] = np.array(texts, dtype=object)[inverse.reshape(-1)]
    return reasons


class _Evaluated(NamedTuple):
    """Every candidate's estimate as typed arrays, and whether and why it cannot run."""

    candidates: Candidates
    memory: MemoryColumns
    step: StepColumns
    comm: CommColumns
    fits: np.ndarray
    reason: np.ndarray
    rule_code: np.ndarray  # index into RULES, len(RULES) for OOM, -1 when it fits

    def estimate(self, i: int) -> PlanEstimate:
        reason = self.reason[i]
        return PlanEstimate(
            plan=self.candidates.plan(i),
            fits=bool(self.fits[i]),
            reason=str(reason) if reason else None,
            memory=MemoryBreakdown(**_at(self.memory, MemoryBreakdown, i)),
            memory_peak_bytes=float(self.memory.peak_bytes[i]),
            time=TimeBreakdown(**_at(self.step.time, TimeBreakdown, i)),
            step_time_s=float(self.step.step_time_s[i]),
            tokens_per_s=float(self.step.tokens_per_s[i]),
            model_tflops_per_gpu=float(self.step.model_tflops_per_gpu[i]),
            hardware_tflops_per_gpu=float(self.step.hardware_tflops_per_gpu[i]),
            mfu=float(self.step.mfu[i]),
            hardware_mfu=float(self.step.hardware_mfu[i]),
            comm_bytes=CommBytes(**_at(self.comm.sent_bytes, CommBytes, i)),
            comm_links=CommLinks(**_at(self.comm.links, CommLinks, i)),
        )

    def frame(self) -> pd.DataFrame:
        """One row per candidate; columns named as estimate.FRAME_PREFIXES says."""
        c, step = self.candidates, self.step
        cols: dict[str, object] = {name: getattr(c, name) for name in DEGREES}
        cols["zero"] = c.zero
        cols["recompute"] = np.array(RECOMPUTE, dtype=object)[c.recompute]
        cols["micro_batch"] = c.micro_batch
        cols["ring_layout"] = np.where(c.zigzag, "zigzag", "contiguous").astype(object)
        cols["vpp"] = c.vpp
        # 0 (the even split) as missing, as in the plan (None).
        cols["first_stage_layers"] = pd.array(np.where(c.first_stage_layers > 0, c.first_stage_layers, None),
                                              dtype="Int64")
        cols["last_stage_layers"] = pd.array(np.where(c.last_stage_layers > 0, c.last_stage_layers, None),
                                             dtype="Int64")
        cols["precision"] = np.array(PRECISIONS, dtype=object)[c.precision]
        cols.update(_prefixed("memory", self.memory, MemoryBreakdown))
        cols["memory_peak_bytes"] = self.memory.peak_bytes
        cols.update(_prefixed("time", step.time, TimeBreakdown))
        cols.update({name: getattr(step, name) for name in step._fields if name != "time"})
        cols.update(_prefixed("comm_bytes", self.comm.sent_bytes, CommBytes))
        cols.update(_prefixed("comm_links", self.comm.links, CommLinks))
        cols["fits"] = self.fits
        cols["reason"] = self.reason
        cols["rule_code"] = self.rule_code
        return pd.DataFrame(cols)


def _prefixed(part: str, columns: tuple, model: type[FrozenModel]) -> dict[str, object]:
    return {f"{FRAME_PREFIXES[part]}{name}": getattr(columns, name) for name in model.model_fields}


def _at(columns: tuple, model: type[FrozenModel], i: int) -> dict[str, object]:
    """Entry `i` of typed columns as the fields of `model` (numpy scalars -> Python scalars)."""
    return {name: plain(getattr(columns, name)[i]) for name in model.model_fields}


def _evaluate(model: ModelSpec, hardware: HardwareProfile, workload: Workload, c: Candidates,
              gpus_per_node: int) -> _Evaluated:
    memory = memory_columns(model, hardware, workload, c)
    step = time_columns(model, hardware, workload, c, gpus_per_node=gpus_per_node)
    comm = comm_columns(model, workload, c, gpus_per_node=gpus_per_node)
    code = first_rule(rule_masks(model, workload, c), len(c))
    peak = memory.peak_bytes
    oom = (code < 0) & (peak > hardware.hbm_bytes)
    reason = _rule_messages(model, workload, c, code)
    oom_idx = np.flatnonzero(oom)
    reason[oom_idx] = [
        f"oom: needs {p / GIB:.1f} GiB per GPU, {hardware.hbm_bytes / GIB:.1f} GiB available"
        for p in peak[oom_idx]
    ]
    return _Evaluated(candidates=c, memory=memory, step=step, comm=comm, fits=(code < 0) & ~oom,
                      reason=reason, rule_code=np.where(oom, len(RULES), code))


def _ranked_order(e: _Evaluated, capacity_bytes: float) -> np.ndarray:
    """Fitting plans by step time (then memory); then OOM by how far over; then rule breakers."""
    peak, step = e.memory.peak_bytes, e.step.step_time_s
    tier = np.where(e.fits, 0, np.where(e.rule_code == len(RULES), 1, 2))
    primary = np.where(tier == 0, step, peak / capacity_bytes)
    secondary = np.where(tier == 0, peak, step)
    return np.lexsort((secondary, primary, tier))


def search(model: ModelSpec, hardware: HardwareProfile, workload: Workload, *, num_nodes: int,
           gpus_per_node: int, pins: Pins = Pins(), top_k: int = 10) -> SearchResult:
    world = _check_cluster(num_nodes, gpus_per_node)
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    candidates = enumerate_candidates(workload, world, pins, num_layers=model.num_layers,
                                      precisions=hardware.precisions)
    if len(candidates) == 0:
        raise ValueError(f"no (dp, pp, tp, ulysses, ring) with product {world} matches the pins {pins}")
    evaluated = _evaluate(model, hardware, workload, candidates, gpus_per_node)
    order = _ranked_order(evaluated, hardware.hbm_bytes)
    frame = evaluated.frame().drop(columns="rule_code").iloc[order].reset_index(drop=True)
    counts = np.bincount(evaluated.rule_code[~evaluated.fits], minlength=len(RULES) + 1)
    prune_counts = {rule: int(k) for rule, k in zip((*RULES, "oom"), counts) if k}
    ranked = tuple(evaluated.estimate(i) for i in order[:top_k])
    return SearchResult(candidates_evaluated=len(candidates), ranked=ranked, prune_counts=prune_counts,
                        frame=frame)


def evaluate(model: ModelSpec, hardware: HardwareProfile, workload: Workload, plan: ParallelPlan, *,
             num_nodes: int, gpus_per_node: int) -> PlanEstimate:
    """One plan, through the same columns as the search; fits False with a reason when it cannot run."""
    world = _check_cluster(num_nodes, gpus_per_node)
    if plan.world_size != world:
        raise ValueError(
            f"plan uses dp*pp*tp*ulysses*ring = {plan.world_size} GPUs but the cluster has {world} "
            f"({num_nodes} nodes x {gpus_per_node})"
        )
    return _evaluate(model, hardware, workload, Candidates.of_plan(plan), gpus_per_node).estimate(0)

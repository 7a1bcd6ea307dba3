"""Whole-space search: enumerate, evaluate every candidate in columns, prune with reasons, rank.

Candidates and their costs are typed numpy arrays (space.Candidates, cost.*Columns); `evaluate`
runs one plan through the same code, so a single plan and the search agree.

The search streams: candidates are enumerated and costed in chunks of about CHUNK_CANDIDATES,
those that break a rule are counted and not costed (unless too few plans pass the rules to fill
the ranking), and only the best HEAD_ROWS rows are kept, so memory stays bounded whatever the
cluster size. The frame of every candidate is built only when a caller asks for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd

from sp_planner import columns
from sp_planner.cost.comm import CommColumns, comm_columns
from sp_planner.cost.memory import MemoryColumns, memory_columns
from sp_planner.cost.overlap import MEGATRON_OVERLAP, Overlap
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
from sp_planner.errors import UserInputError
from sp_planner.plan import PRECISIONS, RECOMPUTE, RULES, ParallelPlan, violations
from sp_planner.space import (
    DEGREES,
    EXPERT_DEGREES,
    Axes,
    Candidates,
    Pins,
    count_candidates,
    degree_tuples,
    first_rule,
    iter_candidates,
    rule_masks,
    search_order,
    with_expert_degrees,
)
from sp_planner.specs.base import FrozenModel
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload
from sp_planner.units import GIB, plural

__all__ = ["Pins", "SearchTooLarge", "evaluate", "search"]

# Candidates enumerated and costed at once: a chunk's columns take a few hundred bytes per
# candidate, so this bounds the search's working memory (tens of MB) at any cluster size.
CHUNK_CANDIDATES = 1 << 16
# Rows kept in rank order besides top_k: present.expressible scans this many for a plan the
# asked framework can express.
HEAD_ROWS = 2000
# The most candidates one search takes on: about 30 s on one core of a loaded 2-core machine at
# the ~5 us per candidate of a search where nothing passes the rules (benchmarks/scale.py).
MAX_CANDIDATES = 4_000_000
# Node counts below the asked one tried when looking for the largest the search answers.
MAX_SMALLER_TRIED = 1000
# progress(done, total, what): candidates searched out of all of them. SEARCH_STEPS is the total
# that callers report their own steps after the search against (cli/plan_solve.py).
Progress = Callable[..., None]
SEARCH_STEPS = 5


def _no_progress(done: int, total: int, description: str | None = None) -> None:
    pass


class SearchTooLarge(UserInputError):
    """More candidates than MAX_CANDIDATES: refused before any work, naming a size that is answered."""


def search_axes(model: ModelSpec, hardware: HardwareProfile) -> Axes:
    """What the non-degree axes read: the model's layers, the precisions the hardware runs and the
    model's routed experts (0 for dense models)."""
    return Axes(num_layers=model.num_layers, precisions=hardware.precisions,  # type: ignore[arg-type]
                num_experts=model.moe.num_experts if model.moe else 0)


def _check_size(workload: Workload, num_nodes: int, gpus_per_node: int, pins: Pins, axes: Axes) -> int:
    """The number of candidates, when the search takes them on."""
    count = count_candidates(workload, num_nodes * gpus_per_node, pins, gpus_per_node, axes=axes)
    if count <= MAX_CANDIDATES:
        return count
    smaller = next((n for n in range(num_nodes - 1, max(0, num_nodes - MAX_SMALLER_TRIED), -1)
                    if 0 < count_candidates(workload, n * gpus_per_node, pins, gpus_per_node, axes=axes)
                    <= MAX_CANDIDATES), None)
    largest = f"the largest node count below it that is searched is {smaller}" if smaller else \
        f"no node count within {MAX_SMALLER_TRIED} below it is searched"
    raise SearchTooLarge(
        f"{num_nodes} nodes x {gpus_per_node} GPUs give {count:,} candidate plans, more than the "
        f"{MAX_CANDIDATES:,} one search takes on (about 30 s); {largest}, or pin a degree (e.g. --tp 8)")


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
    keys = np.stack([getattr(c, n)[bad] for n in (*DEGREES, *EXPERT_DEGREES, "micro_batch", "zigzag", "vpp",
                                                   "first_stage_layers", "last_stage_layers")], axis=1)
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
        cols["cp_comm"] = np.where(c.allgather, "allgather", "p2p").astype(object)
        cols["dp_replicate"] = c.dp_replicate
        cols["reshard_after_forward"] = c.reshard
        cols.update({name: getattr(c, name) for name in EXPERT_DEGREES})
        cols["vpp"] = c.vpp
        # 0 (the even split) as missing, as in the plan (None).
        for name in ("first_stage_layers", "last_stage_layers"):
            layers = getattr(c, name)
            split = pd.array(layers, dtype="Int64")
            split[layers == 0] = pd.NA
            cols[name] = split
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
              gpus_per_node: int, code: np.ndarray | None = None,
              overlap: Overlap = MEGATRON_OVERLAP) -> _Evaluated:
    """Costs of `c`; `code` is first_rule's answer when the caller has it. Reasons are left
    empty: `_explained` writes them for the rows that are shown. `overlap`: cost.overlap."""
    memory = memory_columns(model, hardware, workload, c)
    # Links are classified by the fast domain (the host, or a rack-scale NVLink domain).
    domain = hardware.link_domain_gpus(gpus_per_node)
    step = time_columns(model, hardware, workload, c, gpus_per_node=domain, overlap=overlap)
    comm = comm_columns(model, workload, c, gpus_per_node=domain)
    if code is None:
        code = first_rule(rule_masks(model, workload, c), len(c))
    oom = (code < 0) & (memory.peak_bytes > hardware.hbm_bytes)
    return _Evaluated(candidates=c, memory=memory, step=step, comm=comm, fits=(code < 0) & ~oom,
                      reason=np.full(len(c), "", dtype=object), rule_code=np.where(oom, len(RULES), code))


def _explained(model: ModelSpec, hardware: HardwareProfile, workload: Workload, e: _Evaluated) -> _Evaluated:
    """`e` with each row's reason: the first broken rule's message, or the memory shortfall."""
    oom = e.rule_code == len(RULES)
    reason = _rule_messages(model, workload, e.candidates, np.where(oom, -1, e.rule_code))
    peak = e.memory.peak_bytes
    oom_idx = np.flatnonzero(oom)
    reason[oom_idx] = [
        f"oom: needs {p / GIB:.1f} GiB per GPU, {hardware.hbm_bytes / GIB:.1f} GiB available"
        for p in peak[oom_idx]
    ]
    return e._replace(reason=reason)


def _rank_keys(e: _Evaluated, capacity_bytes: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(tier, primary, uncapped, secondary): fitting plans by step time (then the time before the
    MFU ceiling, cost.mfu_ceiling, then memory); then OOM by how far over; then rule breakers."""
    peak, step = e.memory.peak_bytes, e.step.step_time_s
    tier = np.where(e.fits, 0, np.where(e.rule_code == len(RULES), 1, 2))
    primary = np.where(tier == 0, step, peak / capacity_bytes)
    uncapped = np.where(tier == 0, step - e.step.time.mfu_ceiling_s, 0.0)
    secondary = np.where(tier == 0, peak, step)
    return tier, primary, uncapped, secondary


def _ranked_order(e: _Evaluated, index: np.ndarray, capacity_bytes: float) -> np.ndarray:
    """Rows in rank order (_rank_keys), ties in enumeration order (`index`: each row's place in it)."""
    tier, primary, uncapped, secondary = _rank_keys(e, capacity_bytes)
    return np.lexsort((index, secondary, uncapped, primary, tier))


class _Best(NamedTuple):
    """The best rows seen so far, in rank order, and their places in the enumeration."""

    evaluated: _Evaluated
    place: np.ndarray


def _keep_best(best: _Best | None, e: _Evaluated, index: np.ndarray, capacity_bytes: float,
               keep: int | None) -> _Best:
    """The best `keep` rows (all when None) of `best` and `e` together, in rank order."""
    if best is not None:
        if keep is not None and len(best.place) >= keep:
            # Rows ranked after the last one kept cannot enter: drop them before sorting.
            tier, primary = _rank_keys(e, capacity_bytes)[:2]
            last_tier, last_primary = (k[-1] for k in _rank_keys(best.evaluated, capacity_bytes)[:2])
            rows = np.flatnonzero((tier < last_tier) | ((tier == last_tier) & (primary <= last_primary)))
            e, index = columns.take(e, rows), index[rows]
        e, index = columns.concat([best.evaluated, e]), np.concatenate([best.place, index])
    order = _ranked_order(e, index, capacity_bytes)[:keep]
    return _Best(columns.take(e, order), index[order])


class _Scan(NamedTuple):
    best: _Best | None
    candidates: int
    costed: int
    counts: np.ndarray  # candidates per RULES entry, then OOM


def _scan(model: ModelSpec, hardware: HardwareProfile, workload: Workload, degrees: np.ndarray, pins: Pins,
          gpus_per_node: int, overlap: Overlap, *, keep: int | None, breakers: bool, progress: Progress,
          total: int = 0) -> _Scan:
    """Cost the candidates that pass the rules (`breakers`: those that break one instead), chunk by
    chunk, keeping the best `keep` rows (every row when None) in rank order."""
    parts: list[_Evaluated] = []
    places: list[np.ndarray] = []
    best: _Best | None = None
    counts = np.zeros(len(RULES) + 1, dtype=np.int64)
    seen = costed = 0
    axes = search_axes(model, hardware)
    for done, chunk in iter_candidates(workload, degrees, pins, chunk_candidates=CHUNK_CANDIDATES,
                                       gpus_per_node=gpus_per_node, axes=axes):
        code = first_rule(rule_masks(model, workload, chunk), len(chunk))
        rows = np.flatnonzero(code >= 0 if breakers else code < 0)
        e = _evaluate(model, hardware, workload, columns.take(chunk, rows), gpus_per_node, code[rows], overlap)
        if not breakers:  # the rules are counted once, in the pass over every candidate
            counts += np.bincount(code[code >= 0], minlength=len(RULES) + 1)
        counts[len(RULES)] += np.count_nonzero(e.rule_code == len(RULES))
        index = seen + rows
        if keep is None:
            parts.append(e)
            places.append(index)
        elif len(rows):
            best = _keep_best(best, e, index, hardware.hbm_bytes, keep)
        seen += len(chunk)
        costed += len(rows)
        progress(seen, total, f"searching {plural(total, 'candidate')}")
    if keep is None and parts:
        best = _keep_best(None, columns.concat(parts), np.concatenate(places), hardware.hbm_bytes, None)
    return _Scan(best, seen, costed, counts)


def search(model: ModelSpec, hardware: HardwareProfile, workload: Workload, *, num_nodes: int,
           gpus_per_node: int, pins: Pins = Pins(), top_k: int = 10, progress: Progress | None = None,
           overlap: Overlap = MEGATRON_OVERLAP) -> SearchResult:
    """Every candidate plan, ranked; the best `top_k` as estimates, every row on `result.frame`
    (built on first access). progress(done, total, what) hears of each chunk (candidates). More than MAX_CANDIDATES
    candidates raise SearchTooLarge before any work. `overlap`: what the framework overlaps (cost.overlap)."""
    progress = progress or _no_progress
    world = _check_cluster(num_nodes, gpus_per_node)
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    axes = search_axes(model, hardware)
    total = _check_size(workload, num_nodes, gpus_per_node, pins, axes)
    degrees = search_order(with_expert_degrees(degree_tuples(world, pins), axes.num_experts, pins))
    if len(degrees) == 0:
        raise ValueError(f"no (dp, pp, tp, ulysses, ring) with product {world} matches the pins {pins}")
    keep = max(top_k, HEAD_ROWS)
    args = (model, hardware, workload, degrees, pins, gpus_per_node, overlap)
    progress(0, total, f"searching {plural(total, 'candidate')}")
    passing = _scan(*args, keep=keep, breakers=False, progress=progress, total=total)
    counts, best = passing.counts, passing.best  # breakers do not run out of memory: counts are whole
    if passing.costed < keep:  # too few plans pass the rules to fill the rows kept: rank the rest
        broken = _scan(*args, keep=keep, breakers=True, progress=_no_progress)
        if broken.best is not None:
            best = _keep_best(best, broken.best.evaluated, broken.best.place, hardware.hbm_bytes, keep)
    assert best is not None
    shown = _explained(model, hardware, workload, best.evaluated)
    prune_counts = {rule: int(k) for rule, k in zip((*RULES, "oom"), counts) if k}
    ranked = tuple(shown.estimate(i) for i in range(min(top_k, len(shown.fits))))
    head = _frame_of(shown)
    if passing.candidates <= keep:  # every candidate is in the head: it is the frame
        return SearchResult(candidates_evaluated=passing.candidates, ranked=ranked, prune_counts=prune_counts,
                            frame=head)

    def every_row() -> pd.DataFrame:
        full = _scan(*args, keep=None, breakers=False, progress=_no_progress).best
        broken = _scan(*args, keep=None, breakers=True, progress=_no_progress).best
        parts = [b for b in (full, broken) if b is not None]
        e = _explained(model, hardware, workload, columns.concat([b.evaluated for b in parts]))
        return _frame_of(e)

    return SearchResult(candidates_evaluated=passing.candidates, ranked=ranked, prune_counts=prune_counts,
                        frame=every_row, head=head)


def _frame_of(e: _Evaluated) -> pd.DataFrame:
    return e.frame().drop(columns="rule_code")


def evaluate(model: ModelSpec, hardware: HardwareProfile, workload: Workload, plan: ParallelPlan, *,
             num_nodes: int, gpus_per_node: int, overlap: Overlap = MEGATRON_OVERLAP) -> PlanEstimate:
    """One plan, through the same columns as the search; fits False with a reason when it cannot run."""
    world = _check_cluster(num_nodes, gpus_per_node)
    if plan.world_size != world:
        raise ValueError(
            f"plan uses dp*pp*tp*ulysses*ring = {plan.world_size} GPUs but the cluster has {world} "
            f"({plural(num_nodes, 'node')} x {gpus_per_node})"
        )
    e = _evaluate(model, hardware, workload, Candidates.of_plan(plan), gpus_per_node, overlap=overlap)
    return _explained(model, hardware, workload, e).estimate(0)

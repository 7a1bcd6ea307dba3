"""The search's chunked scan: candidates enumerated and costed chunk by chunk, the best K rows kept
in rank order by merging each chunk into them (search.search drives it)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from sp_planner import columns
from sp_planner.cost.runtime import Runtime
from sp_planner.plan import RULES
from sp_planner.search_columns import Evaluated, _evaluate, candidate_memory, search_axes
from sp_planner.search_refine import TupleBests, merged, tuple_bests
from sp_planner.space import Pins, first_rule, iter_candidates, rule_masks
from sp_planner.candidates import Candidates
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload
from sp_planner.units import plural

if TYPE_CHECKING:
    from sp_planner.search import Progress


def _rank_keys(e: Evaluated, capacity_bytes: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(tier, primary, uncapped, secondary): fitting plans by step time (then the time before the
    MFU ceiling, cost.mfu_ceiling, then memory); then OOM by how far over; then rule breakers."""
    peak, step = e.memory.peak_bytes, e.step.step_time_s
    tier = np.where(e.fits, 0, np.where(e.rule_code == len(RULES), 1, 2))
    primary = np.where(tier == 0, step, peak / capacity_bytes)
    uncapped = np.where(tier == 0, step - e.step.time.mfu_ceiling_s, 0.0)
    secondary = np.where(tier == 0, peak, step)
    return tier, primary, uncapped, secondary


def _ranked_order(e: Evaluated, index: np.ndarray, capacity_bytes: float) -> np.ndarray:
    """Rows in rank order (_rank_keys), ties in enumeration order (`index`: each row's place in it)."""
    return _order_of(_rank_keys(e, capacity_bytes), index)


def _order_of(keys: Sequence[np.ndarray], index: np.ndarray) -> np.ndarray:
    """The rank order of rows of _rank_keys' `keys`, ties in enumeration order (`index`)."""
    tier, primary, uncapped, secondary = keys
    return np.lexsort((index, secondary, uncapped, primary, tier))


class _Best(NamedTuple):
    """The best rows seen so far, in rank order, and their places in the enumeration."""

    evaluated: Evaluated
    place: np.ndarray


def _keep_best(best: _Best | None, e: Evaluated, index: np.ndarray, capacity_bytes: float,
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


def _ranked_union(pieces: Sequence[_Best], capacity_bytes: float) -> _Best:
    """Every row of `pieces` (unsorted rows and their places in the enumeration) in rank order:
    the order _keep_best gives their union (one sort of all the keys, ties by place), each column
    concatenated and taken on its own (columns.concat_take) instead of the whole union copied
    before it is sorted."""
    keys = [np.concatenate(k) for k in zip(*(_rank_keys(p.evaluated, capacity_bytes) for p in pieces))]
    place = np.concatenate([p.place for p in pieces])
    order = _order_of(keys, place)
    return _Best(columns.concat_take([p.evaluated for p in pieces], order), place[order])


def _full_of_fits(best: _Best | None, keep: int | None, capacity_bytes: float) -> bool:
    """Whether `best` holds `keep` rows already, the last of them one that fits (tier 0)."""
    if best is None or keep is None or len(best.place) < keep:
        return False
    return bool(_rank_keys(best.evaluated, capacity_bytes)[0][-1] == 0)


def _evaluate_fitting(model: ModelSpec, hardware: HardwareProfile, workload: Workload, chunk, gpus_per_node: int,
                      code: np.ndarray, runtime: Runtime) -> tuple[np.ndarray, Evaluated, int]:
    """(rows, their costs, OOM rows) of the chunk's rows that pass the rules and fit in memory:
    once the rows kept all fit (_full_of_fits) an OOM row cannot enter them (_keep_best drops it
    unranked), so its memory is priced and counted but not its time. The cost model is row by row
    (columns.take_rows): these rows get the costs _evaluate gives them in the whole chunk."""
    passing = np.flatnonzero(code < 0)
    sub = columns.take(chunk, passing)
    memory = candidate_memory(model, hardware, workload, sub, gpus_per_node, runtime)
    oom = memory.peak_bytes > hardware.hbm_bytes  # as _evaluate's
    fit = np.flatnonzero(~oom)
    rows = passing[fit]
    e = _evaluate(model, hardware, workload, columns.take(sub, fit), gpus_per_node, code[rows], runtime,
                  memory=columns.take(memory, fit))
    return rows, e, int(np.count_nonzero(oom))


class _Scan(NamedTuple):
    best: _Best | None
    candidates: int
    costed: int
    counts: np.ndarray  # candidates per RULES entry, then OOM
    tuples: TupleBests  # each degree tuple's fastest fitting pp > 1 row (search_refine)
    pieces: tuple[_Best, ...] = ()  # keep=None: each chunk's rows, unsorted (best is None)


def _scan(model: ModelSpec, hardware: HardwareProfile, workload: Workload, degrees: np.ndarray, pins: Pins,
          gpus_per_node: int, runtime: Runtime, chunk_candidates: int, *, keep: int | None,
          breakers: bool | None, progress: Progress, total: int = 0, chunks: list[Candidates] | None = None,
          what: str = "searching {}") -> _Scan:
    """Cost the candidates that pass the rules (`breakers`: those that break one instead; None:
    every candidate), chunk by chunk of about `chunk_candidates`, keeping the best `keep` rows in
    rank order (keep None: every row, left unsorted in `pieces` for the caller to rank with others
    in one sort, _ranked_union). `costed` counts the rows costed that pass the rules; `tuples`
    each degree tuple's fastest fitting pipelined row (search_refine.tuple_bests). `chunks`: the
    candidates, enumerated by the caller (search._refined_chunks), instead of those of `degrees`
    (space.iter_candidates); `what` names the candidates counted for progress ({}: how many)."""
    parts: list[_Best] = []
    bests: list[TupleBests] = []
    best: _Best | None = None
    counts = np.zeros(len(RULES) + 1, dtype=np.int64)
    seen = costed = 0
    axes = search_axes(model, hardware)
    enumerated: Iterable[Candidates] = chunks if chunks is not None else (
        c for _, c in iter_candidates(workload, degrees, pins, chunk_candidates=chunk_candidates,
                                      gpus_per_node=gpus_per_node, axes=axes))
    for chunk in enumerated:
        code = first_rule(rule_masks(model, workload, chunk), len(chunk))
        if breakers is None:
            rows = np.arange(len(chunk))
            e = _evaluate(model, hardware, workload, chunk, gpus_per_node, code, runtime)
        elif not breakers and _full_of_fits(best, keep, hardware.hbm_bytes):
            rows, e, oom = _evaluate_fitting(model, hardware, workload, chunk, gpus_per_node, code, runtime)
            counts[len(RULES)] += oom
        else:
            rows = np.flatnonzero(code >= 0 if breakers else code < 0)
            e = _evaluate(model, hardware, workload, columns.take(chunk, rows), gpus_per_node, code[rows], runtime)
        if not breakers:  # the rules are counted once, in the pass over every candidate
            counts += np.bincount(code[code >= 0], minlength=len(RULES) + 1)
        counts[len(RULES)] += np.count_nonzero(e.rule_code == len(RULES))  # 0 where counted above
        index = seen + rows
        if not breakers:
            bests.append(tuple_bests(e, index))
        if keep is None:
            parts.append(_Best(e, index))
        elif len(rows):
            best = _keep_best(best, e, index, hardware.hbm_bytes, keep)
        seen += len(chunk)
        costed += len(rows) if breakers else int(np.count_nonzero(code < 0))
        progress(seen, total, what.format(plural(total, 'candidate')))
    return _Scan(best, seen, costed, counts, merged(bests), tuple(parts))



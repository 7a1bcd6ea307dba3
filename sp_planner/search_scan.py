"""The search's chunked scan: candidates enumerated and costed chunk by chunk, the best K rows kept
in rank order by merging each chunk into them (search.search drives it); those that pass the rules
priced several chunks at a time and timed only where they can change the answer (_PrunedScan)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from sp_planner import columns
from sp_planner.cost.runtime import Runtime
from sp_planner.plan import RULES
from sp_planner.search_columns import Evaluated, _evaluate, candidate_memory, candidate_step_bound_s, search_axes
from sp_planner.search_prune import skipped_rows
from sp_planner.search_refine import TupleBests, merged, tuple_bests
from sp_planner.space import Pins, first_rule, iter_candidates, rule_masks
from sp_planner.candidates import Candidates
from sp_planner.cost.memory import MemoryColumns
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


# Fitting rows timed at once by the pruned scan (_time_pending), and the most it leaves pending
# between chunks: a call of cost.step takes ~40 ms at any size up to this (its numpy calls, not
# its rows, set its time), so fewer prune more of the rest after each round but cost more calls.
PRUNE_ROUND_ROWS = 16384
# Rows that pass the rules priced at once (memory, the step's bound) by the pruned scan: those
# calls too take about as long at any size below this, so several chunks' rows go together.
PRUNE_BATCH_ROWS = 1 << 17


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


class _Pending(NamedTuple):
    """Rows that pass the rules, their memory priced, not yet timed by the pruned scan (_PrunedScan)."""

    candidates: Candidates
    memory: MemoryColumns
    code: np.ndarray
    place: np.ndarray  # each row's place in the enumeration
    bound_s: np.ndarray  # its step's lower bound (search_prune), where `bounded`
    bounded: np.ndarray  # bound_s priced (OOM rows never are: they are not pruned)


class _Passing(NamedTuple):
    """Rows that pass the rules, not yet priced by the pruned scan (_fitting_rows)."""

    candidates: Candidates
    code: np.ndarray
    place: np.ndarray  # each row's place in the enumeration


def _fitting_rows(model: ModelSpec, hardware: HardwareProfile, workload: Workload, passing: _Passing,
                  gpus_per_node: int, runtime: Runtime) -> tuple[_Pending, _Pending]:
    """The `passing` rows that fit in memory and those that do not, their memory priced. The cost
    model is row by row (columns.take_rows): these rows get the costs _evaluate gives them in
    their chunk."""
    memory = candidate_memory(model, hardware, workload, passing.candidates, gpus_per_node, runtime)
    oom = memory.peak_bytes > hardware.hbm_bytes  # as _evaluate's

    def rows(index: np.ndarray) -> _Pending:
        return _Pending(columns.take(passing.candidates, index), columns.take(memory, index), passing.code[index],
                        passing.place[index], np.full(len(index), np.nan), np.zeros(len(index), dtype=bool))

    return rows(np.flatnonzero(~oom)), rows(np.flatnonzero(oom))


class _PrunedScan:
    """The rows that pass the rules, merged into the best `keep` (rank order) and each degree
    tuple's best (search_refine) with the fewest rows timed: their memory and step bound priced
    PRUNE_BATCH_ROWS at a time (several chunks' rows), then the fitting ones timed
    PRUNE_ROUND_ROWS at a time, least bound first, each round merged before the rest are pruned
    (search_prune) once the rows kept all fit (_full_of_fits). An OOM row cannot enter rows kept
    that all fit (_keep_best drops it unranked), so its memory is priced and counted, and its time
    only where the rows kept never come to all fit (held back until then, timed once they grow
    past PRUNE_BATCH_ROWS). Every merge is a function of the set of rows merged (rank order
    breaks ties by place), so the order in which rows are timed leaves the result as it was."""

    def __init__(self, model: ModelSpec, hardware: HardwareProfile, workload: Workload, gpus_per_node: int,
                 runtime: Runtime, keep: int) -> None:
        self.args = (model, hardware, workload)
        self.gpus_per_node, self.runtime, self.keep = gpus_per_node, runtime, keep
        self.best: _Best | None = None
        self.tuples = merged([])
        self.oom = 0  # OOM rows counted
        self.unpriced: list[_Passing] = []
        self.pending: _Pending | None = None  # fitting rows left to time
        self.held: list[_Pending] = []  # OOM rows left to time while the rows kept are not all fits

    def add(self, chunk: Candidates, code: np.ndarray, seen: int) -> None:
        """The rows of `chunk` (at places `seen` on, first_rule's `code`) that pass the rules."""
        rows = np.flatnonzero(code < 0)
        self.unpriced.append(_Passing(columns.take(chunk, rows), code[rows], seen + rows))
        if sum(len(p.place) for p in self.unpriced) >= PRUNE_BATCH_ROWS:
            self._price(leave=PRUNE_ROUND_ROWS)

    def finish(self) -> tuple[_Best | None, TupleBests, int]:
        """(the rows kept, the tuple bests, the OOM rows' count) once every row added is merged."""
        self._priced()
        held = sum(len(p.place) for p in self.held)
        if self.pending is not None and not self._full() and len(self.pending.place) + held <= PRUNE_ROUND_ROWS:
            # Nothing to prune (a small search): the fitting and OOM rows timed in one call.
            rows, self.pending, self.held = columns.concat([self.pending, *self.held]), None, []
            self.tuples = merged([self.tuples, tuple_bests(self._merge(rows), rows.place)])
        self._price(leave=0)
        self._time_held()
        return self.best, self.tuples, self.oom

    def _full(self) -> bool:
        return _full_of_fits(self.best, self.keep, self.args[1].hbm_bytes)

    def _priced(self) -> None:
        """The unpriced rows' memory priced, the fitting ones pending, the OOM ones held."""
        if self.unpriced:
            fitting, out = _fitting_rows(*self.args, columns.concat(self.unpriced), self.gpus_per_node, self.runtime)
            self.unpriced, self.oom = [], self.oom + len(out.place)
            self.pending = fitting if self.pending is None else columns.concat([self.pending, fitting])
            self.held.append(out)

    def _price(self, leave: int) -> None:
        self._priced()
        self._time_pending(leave)
        if self._full():
            self.held = []
        elif sum(len(p.place) for p in self.held) > PRUNE_BATCH_ROWS:
            self._time_held()

    def _time_pending(self, leave: int) -> None:
        """Time the pending fitting rows until at most `leave` are left."""
        pending = self.pending
        while pending is not None and len(pending.place) > leave:
            if self._full() or len(pending.place) > PRUNE_ROUND_ROWS:  # the bound prunes or orders them
                pending = self._bounded(pending)
            if self._full():
                assert self.best is not None
                last_kept_s = float(self.best.evaluated.step.step_time_s[-1])
                pending = columns.take(pending, np.flatnonzero(~skipped_rows(pending.bound_s, pending.candidates,
                                                                             last_kept_s, self.tuples)))
                if len(pending.place) <= leave:
                    break
            order = np.argsort(pending.bound_s, kind="stable")  # NaN last
            now = columns.take(pending, np.sort(order[:PRUNE_ROUND_ROWS]))
            pending = columns.take(pending, np.sort(order[PRUNE_ROUND_ROWS:]))
            e = self._merge(now)
            self.tuples = merged([self.tuples, tuple_bests(e, now.place)])
        self.pending = pending

    def _bounded(self, rows: _Pending) -> _Pending:
        """`rows` with every row's step bound priced (search_prune)."""
        new = np.flatnonzero(~rows.bounded)
        if len(new) == 0:
            return rows
        bound_s, bounded = rows.bound_s.copy(), rows.bounded.copy()
        bound_s[new] = candidate_step_bound_s(*self.args, columns.take(rows.candidates, new), self.gpus_per_node,
                                              self.runtime)
        bounded[new] = True
        return rows._replace(bound_s=bound_s, bounded=bounded)

    def _time_held(self) -> None:
        held, self.held = self.held, []
        rows = columns.concat(held) if held and not self._full() else None
        if rows is not None and len(rows.place):
            self._merge(rows)

    def _merge(self, rows: _Pending) -> Evaluated:
        e = _evaluate(*self.args, rows.candidates, self.gpus_per_node, rows.code, self.runtime, memory=rows.memory)
        self.best = _keep_best(self.best, e, rows.place, self.args[1].hbm_bytes, self.keep)
        return e


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
    bests = merged([])
    best: _Best | None = None
    # The rows that pass the rules, ranked with the fewest timed (breakers False): _PrunedScan.
    pruned = None if breakers is not False or keep is None else _PrunedScan(model, hardware, workload, gpus_per_node,
                                                                             runtime, keep)
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
        elif pruned is not None:
            pruned.add(chunk, code, seen)
            counts += np.bincount(code[code >= 0], minlength=len(RULES) + 1)
            seen += len(chunk)
            costed += int(np.count_nonzero(code < 0))
            progress(seen, total, what.format(plural(total, 'candidate')))
            continue
        else:
            rows = np.flatnonzero(code >= 0 if breakers else code < 0)
            e = _evaluate(model, hardware, workload, columns.take(chunk, rows), gpus_per_node, code[rows], runtime)
        if not breakers:  # the rules are counted once, in the pass over every candidate
            counts += np.bincount(code[code >= 0], minlength=len(RULES) + 1)
        counts[len(RULES)] += np.count_nonzero(e.rule_code == len(RULES))  # 0 where counted above
        index = seen + rows
        if not breakers:  # each tuple's best so far (search_prune reads them): merged([all chunks']) as it goes
            bests = merged([bests, tuple_bests(e, index)])
        if keep is None:
            parts.append(_Best(e, index))
        elif len(rows):
            best = _keep_best(best, e, index, hardware.hbm_bytes, keep)
        seen += len(chunk)
        costed += len(rows) if breakers else int(np.count_nonzero(code < 0))
        progress(seen, total, what.format(plural(total, 'candidate')))
    if pruned is not None:
        best, bests, oom = pruned.finish()
        counts[len(RULES)] += oom
    return _Scan(best, seen, costed, counts, bests, tuple(parts))



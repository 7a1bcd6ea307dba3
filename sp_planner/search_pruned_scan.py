"""The search's pruned scan (PrunedScan): the rows that pass the rules priced several chunks at a
time and timed only where they can change the answer (search_prune), for search_scan.scan_chunks."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from sp_planner import columns
from sp_planner.candidates import Candidates
from sp_planner.cost.memory import MemoryColumns, states_floor_bytes
from sp_planner.cost.runtime import Runtime
from sp_planner.cost.stage_states import FirstMiddleLastStates
from sp_planner.cost.step_bound import BoundLayers
from sp_planner.search_columns import (Evaluated, candidate_memory, candidate_stage_states, candidate_step_bound,
                                       evaluate_rows)
from sp_planner.search_prune import skipped_rows, waiting_rows
from sp_planner.search_rank import Best, keep_best, rank_keys
from sp_planner.search_refine import TupleBests, merged, tuple_bests
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload

# Fitting rows timed at once by the pruned scan (_time_pending), and the most it leaves pending
# between chunks: a call of cost.step takes ~40 ms at any size up to this (its numpy calls, not
# its rows, set its time), so fewer prune more of the rest after each round but cost more calls.
PRUNE_ROUND_ROWS = 16384
# The fewest rows a round times once the rows kept all fit, where rows kept for their degree tuple's
# best only wait behind their tuple's least-bound row (search_prune.waiting_rows): fewer rows timed,
# a call or two more. 128 x 8 H100s at 32K, Qwen3-235B-A22B: 103,353 rows in 8 calls -> 73,875 in 7,
# (no minimum: 72,042 in 16 calls, slower); the same rows merged either way.
MIN_ROUND_ROWS = 4096
# Rows that pass the rules whose memory the pruned scan prices at once: several chunks' rows
# together (a call's numpy overhead is paid once), few enough that its arrays stay small.
PRUNE_BATCH_ROWS = 1 << 17
# Fitting rows, memory priced, that the pruned scan gathers before it bounds and times them
# (_time_pending): a bound call on DeepSeek-V3's layer kinds costs 80-100 ms on 3,000 to 100,000
# rows (its schedules' walks and layer-kind tables, not its rows, set most of it), and the more rows
# bounded together, the better the least-bound rounds prune the rest. Gathered over memory
# batches (a third to two thirds of a batch's rows fit), 128 x 8 H100s at 32K: DeepSeek-V3's bound
# calls 10 -> 5 and rows timed 68,008 -> 50,896, Qwen3-235B-A22B's 12 -> 7 and 143,905 -> 109,693
# (docs/cost-model.md Stop 62); the same rows are merged either way.
BOUND_BATCH_ROWS = 1 << 17
# The share of a batch's rows out of memory by their model states (_fitting_rows) below which all
# are priced instead: taking the others out costs about what pricing this share's memory saves
# (searches in separate processes, 128 x 8 H100s, 32K, noisy: splitting Qwen3-235B-A22B's 16%
# made it 0.25-0.35 s slower, DeepSeek-V3's 31% 0.1-0.2 s faster).
FLOOR_SPLIT_SHARE = 0.25


def _full_of_fits(best: Best | None, keep: int | None, capacity_bytes: float) -> bool:
    """Whether `best` holds `keep` rows already, the last of them one that fits (tier 0)."""
    if best is None or keep is None or len(best.place) < keep:
        return False
    return bool(rank_keys(best.evaluated, capacity_bytes)[0][-1] == 0)


class _Pending(NamedTuple):
    """Rows that pass the rules, their memory priced, not yet timed by the pruned scan (PrunedScan)."""

    candidates: Candidates
    memory: MemoryColumns
    code: np.ndarray
    place: np.ndarray  # each row's place in the enumeration
    bound_s: np.ndarray  # its step's lower bound (search_prune), where `layers` is not None
    layers: BoundLayers | None  # the layers the bound priced (None: not bounded; OOM rows never are)


class _Passing(NamedTuple):
    """Rows that pass the rules, not yet priced by the pruned scan (_fitting_rows)."""

    candidates: Candidates
    code: np.ndarray
    place: np.ndarray  # each row's place in the enumeration


class _Out(NamedTuple):
    """The rows of `rows` at `at` (places `place`), out of memory, their memory priced, taken only
    if ever timed (_fitting_rows; PrunedScan drops them once the rows kept all fit)."""

    rows: _Pending
    at: np.ndarray
    place: np.ndarray


class _Unpriced(NamedTuple):
    """The rows of `rows` at `at` (places `place`), out of memory, their memory not priced (_fitting_rows)."""

    rows: _Passing
    at: np.ndarray
    place: np.ndarray


def _priced_rows(model: ModelSpec, hardware: HardwareProfile, workload: Workload, passing: _Passing,
                 gpus_per_node: int, runtime: Runtime, stage_states: FirstMiddleLastStates | None = None) -> _Pending:
    """The `passing` rows, their memory priced (`stage_states`: their model states, where priced).
    The cost model is row by row (columns.take_rows): these rows get the costs evaluate_rows gives
    them in their chunk."""
    memory = candidate_memory(model, hardware, workload, passing.candidates, gpus_per_node, runtime, stage_states)
    return _Pending(passing.candidates, memory, passing.code, passing.place, np.full(len(passing.place), np.nan), None)


def _fitting_rows(model: ModelSpec, hardware: HardwareProfile, workload: Workload, passing: _Passing,
                  gpus_per_node: int, runtime: Runtime) -> tuple[_Pending, np.ndarray, _Out, _Unpriced]:
    """The `passing` rows priced (_priced_rows), the indices of those that fit in memory among them,
    and those that do not (_Out: taken only if ever timed),
    and those out of memory by their model states alone (cost.memory.states_floor_bytes), their
    memory not priced: only the timing of OOM rows reads it, which a search whose rows kept come
    to all fit never does (PrunedScan). The states are the memory's first parts, priced once."""
    states = candidate_stage_states(model, hardware, workload, passing.candidates, gpus_per_node, runtime)
    over = states_floor_bytes(states) > hardware.hbm_bytes  # then the peak is too
    unpriced = _Unpriced(passing, np.flatnonzero(over), passing.place[over])  # taken if ever timed
    if len(unpriced.at) < FLOOR_SPLIT_SHARE * len(over):  # too few to pay for the takes: all priced
        unpriced = _Unpriced(passing, unpriced.at[:0], unpriced.place[:0])
    if len(unpriced.at):
        index = np.flatnonzero(~over)
        passing, states = columns.take(passing, index), columns.take_rows(states, index, len(over))
    rows = _priced_rows(model, hardware, workload, passing, gpus_per_node, runtime, states)
    oom = rows.memory.peak_bytes > hardware.hbm_bytes  # as evaluate_rows's
    out = np.flatnonzero(oom)
    return rows, np.flatnonzero(~oom), _Out(rows, out, rows.place[out]), unpriced


class PrunedScan:
    """The rows that pass the rules, merged into the best `keep` (rank order) and each degree
    tuple's best (search_refine) with the fewest rows timed: their memory priced PRUNE_BATCH_ROWS
    at a time (several chunks' rows), the fitting ones gathered to BOUND_BATCH_ROWS and their step
    bound priced together, then timed PRUNE_ROUND_ROWS at a time, least bound first, each round
    merged before the rest are pruned (search_prune) once the rows kept all fit (_full_of_fits).
    An OOM row cannot enter rows kept that all fit (keep_best drops it unranked), so it is counted,
    its memory priced only where its model states alone do not already exceed the capacity
    (_fitting_rows), and its time only where the rows kept never come to all fit (held back until
    then, dropped once `keep` rows known rank before it, _still_held, memory priced and timed once
    they grow past PRUNE_BATCH_ROWS). Every merge is a function
    of the set of rows merged (rank order breaks ties by place), so the order in which rows are
    timed leaves the result as it was.

    `after`: the rows kept by the scan this one goes on from (search's refinement after its scan;
    their places before this scan's, so negative), kept from the start, so its rows are pruned
    against both scans' rows kept, the best `keep` of which this one's are; its tuple bests are
    read by no one (a refined tuple is not refined again), so rows are pruned on the ranking alone
    (search_prune.skipped_rows with no tuple bests) and `tuples` holds the timed rows' only."""

    def __init__(self, model: ModelSpec, hardware: HardwareProfile, workload: Workload, gpus_per_node: int,
                 runtime: Runtime, keep: int, after: Best | None = None) -> None:
        self.args = (model, hardware, workload)
        self.gpus_per_node, self.runtime, self.keep = gpus_per_node, runtime, keep
        self.best: Best | None = after
        self.reads_tuples = after is None
        self.tuples = merged([])
        self.oom = 0  # OOM rows counted
        # Chunks and the rows of each that pass the rules, taken when priced (several chunks at once)
        self.unpriced: list[tuple[_Passing, np.ndarray]] = []
        self.pending: _Pending | None = None  # fitting rows left to time
        # OOM rows left to time while the rows kept are not all fits (_Unpriced: memory not priced yet)
        self.held: list[_Out | _Unpriced] = []

    def add(self, chunk: Candidates, code: np.ndarray, seen: int) -> None:
        """The rows of `chunk` (at places `seen` on, first_rule's `code`) that pass the rules."""
        rows = np.flatnonzero(code < 0)
        self.unpriced.append((_Passing(chunk, code, seen + np.arange(len(code))), rows))
        if sum(len(rows) for _, rows in self.unpriced) >= PRUNE_BATCH_ROWS:
            self._priced()
            if self.pending is not None and len(self.pending.place) >= BOUND_BATCH_ROWS:
                self._time_pending(leave=PRUNE_ROUND_ROWS)
            self._settle_held()

    def finish(self) -> tuple[Best | None, TupleBests, int]:
        """(the rows kept, the tuple bests, the OOM rows' count) once every row added is merged."""
        self._priced()
        held = sum(len(p.place) for p in self.held)
        if self.pending is not None and not self._full() and len(self.pending.place) + held <= PRUNE_ROUND_ROWS:
            # Nothing to prune (a small search): the fitting and OOM rows timed in one call.
            rows, self.pending, self.held = columns.concat([self.pending, *self._held_priced()]), None, []
            self.tuples = merged([self.tuples, tuple_bests(self._merge(rows), rows.place)])
        self._price(leave=0)
        self._time_held()
        return self.best, self.tuples, self.oom

    def _full(self) -> bool:
        return _full_of_fits(self.best, self.keep, self.args[1].hbm_bytes)

    def _priced(self) -> None:
        """The unpriced rows' memory priced, the fitting ones pending, the OOM ones held."""
        if self.unpriced:
            passing = columns.concat_taken([p for p, _ in self.unpriced], [rows for _, rows in self.unpriced])
            rows, fit, out, over = _fitting_rows(*self.args, passing, self.gpus_per_node, self.runtime)
            self.unpriced, self.oom = [], self.oom + len(out.place) + len(over.place)
            # the fitting rows taken once, after those pending
            self.pending = columns.take(rows, fit) if self.pending is None else \
                columns.concat_taken([self.pending, rows], [None, fit])
            self.held += [out, over] if len(over.place) else [out]

    def _price(self, leave: int) -> None:
        self._priced()
        self._time_pending(leave)
        self._settle_held()

    def _settle_held(self) -> None:
        """The held OOM rows dropped once the rows kept all fit, and before that those that can no
        longer be kept (_still_held); the rest timed once they grow past PRUNE_BATCH_ROWS (checked
        after every memory batch: they stay bounded)."""
        if self._full():
            self.held = []
            return
        self.held = self._still_held()
        if sum(len(p.place) for p in self.held) > PRUNE_BATCH_ROWS:
            self._time_held()

    def _still_held(self) -> list[_Out | _Unpriced]:
        """The held OOM rows that can still be among the best `keep`. The rank order puts fitting
        rows first, then OOM ones by peak over capacity, their step breaking ties only
        (search_rank.rank_keys): an OOM row that `keep` rows known now rank strictly before (fitting
        rows, kept or pending; OOM rows of a smaller ratio, kept or held) is never kept, now or
        later (a row ahead of it is dropped only for `keep` others ahead of both). Rows whose
        memory is not priced (_Unpriced) are dropped only where the fitting rows alone are `keep`."""
        capacity = self.args[1].hbm_bytes
        ahead = 0 if self.pending is None else len(self.pending.place)
        ratios = [p.rows.memory.peak_bytes[p.at] / capacity for p in self.held if isinstance(p, _Out)]
        if self.best is not None:
            tier, primary = rank_keys(self.best.evaluated, capacity)[:2]
            ahead += int(np.count_nonzero(tier == 0))
            ratios.append(primary[tier == 1])
        need = self.keep - ahead  # OOM rows that can still be kept
        if need <= 0:
            return []
        known = np.concatenate(ratios) if ratios else np.zeros(0)
        if len(known) < need:
            return self.held
        last = np.partition(known, need - 1)[need - 1]  # `need` known OOM rows at or below it
        held: list[_Out | _Unpriced] = []
        for p in self.held:
            if isinstance(p, _Out):
                kept = np.flatnonzero(~(p.rows.memory.peak_bytes[p.at] / capacity > last))  # NaN stays
                p = p._replace(at=p.at[kept], place=p.place[kept])
            if len(p.place):
                held.append(p)
        return held

    def _time_pending(self, leave: int) -> None:
        """Time the pending fitting rows until at most `leave` are left."""
        pending = self.pending
        while pending is not None and len(pending.place) > leave:
            full = self._full()
            if full:
                assert self.best is not None
                last_kept_s = float(self.best.evaluated.step.step_time_s[-1])
                tuples = self.tuples if self.reads_tuples else None
                rows = pending.candidates

                def skip(partial_s: np.ndarray) -> np.ndarray:  # below the bound: skips fewer
                    return skipped_rows(partial_s, rows, last_kept_s, tuples)

            if full or len(pending.place) > PRUNE_ROUND_ROWS:  # the bound prunes or orders them
                pending = self._bounded(pending, skip if full else None)
            if full:
                pending = columns.take(pending, np.flatnonzero(~skipped_rows(pending.bound_s, pending.candidates,
                                                                             last_kept_s, tuples)))
                if len(pending.place) <= leave:
                    break
            order = np.argsort(pending.bound_s, kind="stable")  # NaN last
            size = PRUNE_ROUND_ROWS
            if full and self.reads_tuples:  # the rows that can wait last, and not in this round
                wait = waiting_rows(pending.bound_s, pending.candidates, last_kept_s)[order]
                order = np.concatenate([order[~wait], order[wait]])
                size = min(PRUNE_ROUND_ROWS, max(MIN_ROUND_ROWS, len(order) - int(np.count_nonzero(wait))))
            now = columns.take(pending, np.sort(order[:size]))
            pending = columns.take(pending, np.sort(order[size:]))
            e = self._merge(now)
            self.tuples = merged([self.tuples, tuple_bests(e, now.place)])
        self.pending = pending

    def _bounded(self, rows: _Pending, skip: Callable[[np.ndarray], np.ndarray] | None = None) -> _Pending:
        """`rows` with every row's step bound priced (search_prune), in one call where some are not
        (rows bounded in another call are again: a call's time is its numpy calls', not its rows'),
        its layers kept for _merge. `skip`: the rows skipped_rows drops, asked of a sum below the
        bound, left out before their bound is finished (cost.step_bound.step_lower_bound): those
        it drops the bound drops too."""
        if rows.layers is not None:
            return rows
        bound = candidate_step_bound(*self.args, rows.candidates, self.gpus_per_node, self.runtime, skip)
        if bound.rows is not None:
            rows = columns.take(rows, bound.rows)
        return rows._replace(bound_s=bound.bound_s, layers=bound.layers)

    def _held_priced(self) -> list[_Pending]:
        """The held rows, those whose memory is not priced yet priced now."""
        return [columns.take(p.rows, p.at) if isinstance(p, _Out) else
                _priced_rows(*self.args, columns.take(p.rows, p.at), self.gpus_per_node, self.runtime)
                for p in self.held]

    def _time_held(self) -> None:
        rows = columns.concat(self._held_priced()) if self.held and not self._full() else None
        self.held = []
        if rows is not None and len(rows.place):
            self._merge(rows)

    def _merge(self, rows: _Pending) -> Evaluated:
        layers = None if rows.layers is None else rows.layers.at_rows()
        e = evaluate_rows(*self.args, rows.candidates, self.gpus_per_node, rows.code, self.runtime,
                          memory=rows.memory, layers=layers)
        self.best = keep_best(self.best, e, rows.place, self.args[1].hbm_bytes, self.keep)
        return e

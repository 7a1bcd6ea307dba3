"""The search's pruning: candidates that pass the rules and fit in memory, but whose step time
provably keeps them out of everything the scan keeps, are not timed in full (search_pruned_scan.PrunedScan).

Timing a candidate in full is mostly its data-parallel passes (cost.dp_times, cost.dp_passes:
two thirds of a Mixture-of-Experts search's time). cost.step_bound.step_lower_bound bounds its step
from below without them. Once the rows kept are all fitting ones (search_pruned_scan._full_of_fits), a
fitting row matters to the search in two ways only, and the bound rules both out:

- the ranking: a fitting row enters the rows kept only if its step is at most the last kept
  row's (rank keys: fitting rows by step, then the time before the MFU ceiling, memory and
  enumeration place); one whose bound exceeds that step never enters, now or later (the last
  kept step only falls);
- the refinement (search_refine): a pipelined row (pp > 1) is its degree tuple's best unless a
  row of the tuple has a smaller step, or an equal one at an earlier place; refine_tuples then
  takes the REFINE_TOP_TUPLES best tuples and the REFINE_PER_PP best of each pp. A row whose
  bound exceeds a step recorded for its tuple is not its best (strictly: rows are timed out of
  place order). One whose bound exceeds both the REFINE_TOP_TUPLES-th best recorded tuple step
  and the REFINE_PER_PP-th of its pp cannot be a chosen tuple's best: recorded bests are steps of
  real rows, so the final K-th best steps are at most those recorded now. So every chosen
  tuple's best row is timed and recorded exactly; a tuple recorded high or not at all ranks after
  every chosen one in both searches; the chosen tuples and their order are the unpruned scan's
  (tests/test_search_prune.py compares the two searches, refined tuples included).

The bound is the step's parts summed with three left at 0 (cost.step_bound.BOUND_ZEROED_PARTS), each at
least 0 in exact arithmetic; the DP exposure is partly a difference of two critical paths (the
passes with their traffic, less without), which rounding can leave a few ulps below 0 (-2.8e-14 s
on a 1-10 s step seen: DeepSeek-V3 on 1,024 H100s), so the bound is lowered by BOUND_MARGIN of
itself, orders of magnitude above any rounding, before it is compared."""

from __future__ import annotations

import numpy as np

from sp_planner.distinct import distinct_columns, distinct_rows
from sp_planner.search_refine import TUPLE_COLUMNS, REFINE_PER_PP, REFINE_TOP_TUPLES, TupleBests
from sp_planner.candidates import Candidates
from sp_planner.space import DEGREES

__all__ = ["BOUND_MARGIN", "skipped_rows", "waiting_rows"]

# Relative slack taken off the lower bound: rounding of the zeroed parts (module docstring) is
# ~1e-15 of the step; a bound this much higher than the threshold still only skips rows that are.
BOUND_MARGIN = 1e-9

_PP = DEGREES.index("pp")


def skipped_rows(bound_s: np.ndarray, c: Candidates, last_kept_s: float, bests: TupleBests | None) -> np.ndarray:
    """Which fitting rows `c` (their step's lower bounds `bound_s`) need no full timing (module
    docstring): their bound exceeds `last_kept_s`, the step of the last row kept (a fitting one),
    and each pipelined one either is not its tuple's best or cannot be a chosen tuple's, by the
    tuple bests recorded so far (`bests`, in rank order, search_refine.merged; None where no tuple
    bests are read: the refinement's scan, whose rows only the ranking reads). NaN never skips."""
    floor = bound_s - BOUND_MARGIN * np.abs(bound_s)
    skip = floor > last_kept_s
    pipelined = np.flatnonzero(skip & (np.asarray(c.pp) > 1))
    if len(pipelined) == 0 or bests is None:
        return skip
    tuples = np.stack([np.asarray(getattr(c, name))[pipelined] for name in TUPLE_COLUMNS], axis=1).astype(np.int64)
    floor = floor[pipelined]
    skip[pipelined] = (floor > _tuple_best_s(tuples, bests)) | (
        (floor > _kth_s(bests.step_s, REFINE_TOP_TUPLES)) & (floor > _per_pp_kth_s(tuples[:, _PP], bests)))
    return skip


def waiting_rows(bound_s: np.ndarray, c: Candidates, last_kept_s: float) -> np.ndarray:
    """Which rows left after skipped_rows can wait for a later round (search_pruned_scan): those
    kept for their tuple's best only (pipelined, bound above `last_kept_s`: they cannot enter the
    ranking) whose bound is above the least bound of their tuple's rows (so no tuple's least
    waits). Timing the least first records a step for the tuple, after which skipped_rows drops
    the rows of it whose bound exceeds that step. The order rows are timed in changes which rows
    are skipped, not the answer (module docstring): a row waits, it is never dropped here."""
    floor = bound_s - BOUND_MARGIN * np.abs(bound_s)
    only = floor > last_kept_s  # NaN never waits; the rows of pp 1 left are all at or below it
    if not only.any():
        return only
    _, tuple_id = distinct_columns([np.asarray(getattr(c, name)) for name in TUPLE_COLUMNS])
    least = np.full(int(tuple_id.max()) + 1, np.inf)
    np.fmin.at(least, tuple_id, bound_s)  # NaN bounds ignored
    return only & (bound_s > least[tuple_id])


def _tuple_best_s(tuples: np.ndarray, bests: TupleBests) -> np.ndarray:
    """Each row's tuple's best recorded step (inf where none is recorded)."""
    recorded = len(bests.step_s)
    _, inverse = distinct_rows(np.concatenate([bests.tuples, tuples]))
    inverse = inverse.reshape(-1)
    by_tuple = np.full(int(inverse.max()) + 1, np.inf)
    by_tuple[inverse[:recorded]] = bests.step_s  # one entry per tuple in bests
    return by_tuple[inverse[recorded:]]


def _kth_s(steps: np.ndarray, k: int) -> float:
    """The k-th best of rank-ordered `steps` (inf where fewer; NaN, last in rank order, never skips)."""
    return float(steps[k - 1]) if len(steps) >= k else np.inf


def _per_pp_kth_s(pp: np.ndarray, bests: TupleBests) -> np.ndarray:
    """Per row, the REFINE_PER_PP-th best recorded step among the tuples of its pp."""
    recorded_pp = bests.tuples[:, _PP]
    out = np.empty(len(pp))
    for value in np.unique(pp):
        out[pp == value] = _kth_s(bests.step_s[recorded_pp == value], REFINE_PER_PP)
    return out

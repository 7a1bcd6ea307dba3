"""The search's rank order: fitting plans by step time, then OOM rows, then rule breakers
(rank_keys), and the best K rows of everything merged so far kept in that order (keep_best,
ranked_union), ties by each row's place in the enumeration (search_scan, search_pruned_scan)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from sp_planner import columns
from sp_planner.plan import RULES
from sp_planner.search_columns import Evaluated


def rank_keys(e: Evaluated, capacity_bytes: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(tier, primary, uncapped, secondary): fitting plans by step time (then the time before the
    MFU ceiling, cost.mfu_ceiling, then memory); then OOM by how far over; then rule breakers."""
    peak, step = e.memory.peak_bytes, e.step.step_time_s
    tier = np.where(e.fits, 0, np.where(e.rule_code == len(RULES), 1, 2))
    primary = np.where(tier == 0, step, peak / capacity_bytes)
    uncapped = np.where(tier == 0, step - e.step.time.mfu_ceiling_s, 0.0)
    secondary = np.where(tier == 0, peak, step)
    return tier, primary, uncapped, secondary


def _ranked_order(e: Evaluated, index: np.ndarray, capacity_bytes: float) -> np.ndarray:
    """Rows in rank order (rank_keys), ties in enumeration order (`index`: each row's place in it)."""
    return _order_of(rank_keys(e, capacity_bytes), index)


def _order_of(keys: Sequence[np.ndarray], index: np.ndarray) -> np.ndarray:
    """The rank order of rows of rank_keys' `keys`, ties in enumeration order (`index`)."""
    tier, primary, uncapped, secondary = keys
    return np.lexsort((index, secondary, uncapped, primary, tier))


class Best(NamedTuple):
    """The best rows seen so far, in rank order, and their places in the enumeration."""

    evaluated: Evaluated
    place: np.ndarray


def keep_best(best: Best | None, e: Evaluated, index: np.ndarray, capacity_bytes: float,
              keep: int | None) -> Best:
    """The best `keep` rows (all when None) of `best` and `e` together, in rank order."""
    if best is not None:
        if keep is not None and len(best.place) >= keep:
            # Rows ranked after the last one kept cannot enter: drop them before sorting.
            tier, primary = rank_keys(e, capacity_bytes)[:2]
            last_tier, last_primary = (k[-1] for k in rank_keys(best.evaluated, capacity_bytes)[:2])
            rows = np.flatnonzero((tier < last_tier) | ((tier == last_tier) & (primary <= last_primary)))
            e, index = columns.take(e, rows), index[rows]
        e, index = columns.concat([best.evaluated, e]), np.concatenate([best.place, index])
    order = _ranked_order(e, index, capacity_bytes)[:keep]
    return Best(columns.take(e, order), index[order])


def ranked_union(pieces: Sequence[Best], capacity_bytes: float) -> Best:
    """Every row of `pieces` (unsorted rows and their places in the enumeration) in rank order:
    the order keep_best gives their union (one sort of all the keys, ties by place), each column
    concatenated and taken on its own (columns.concat_take) instead of the whole union copied
    before it is sorted."""
    keys = [np.concatenate(k) for k in zip(*(rank_keys(p.evaluated, capacity_bytes) for p in pieces))]
    place = np.concatenate([p.place for p in pieces])
    order = _order_of(keys, place)
    return Best(columns.concat_take([p.evaluated for p in pieces], order), place[order])

"""The search's refinement: interleaved variants of the best plans' degrees that the whole-space
scan leaves out.

An unpinned search drops every vpp > 1 row whose split needs Megatron's
--pipeline-model-parallel-layout (space_choices._vpp_keep): pricing them all doubled DeepSeek-V3's
candidates, each an interleaved walk (cost.chunk_path). Some are the best plans there are
(DeepSeek-V3 at 4K on 128 x 8 H100s: pp 16 x vpp 2 at 3 / 2 layers, 4.04 s, against 4.82 s for the
best scanned plan, pp 16 vpp 1). So the scan keeps, per degree tuple (with ep, etp), its fastest
fitting plan (TupleBests), and search.search then prices the left-out vpp > 1 rows of the
REFINE_TOP_TUPLES best pp > 1 tuples and of the REFINE_PER_PP best of each pp, with the split a
pinned vpp gives them (space_choices._vpp_refine), through the same rules and cost columns as
every other candidate, and merges them into the ranking. What is kept does not depend on how many
rows the scan keeps or how it is chunked, so the streamed and the every-row search agree."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.distinct import distinct_rows
from sp_planner.search_columns import Evaluated
from sp_planner.space import DEGREES, EXPERT_DEGREES, Pins, pinned_split

__all__ = ["REFINE_PER_PP", "REFINE_TOP_TUPLES", "TupleBests", "refine_tuples", "refines", "tuple_bests",
           "tuples_to_refine"]

# Degree tuples refined: the best this many (pp > 1), and the best REFINE_PER_PP of each pp beside
# them. DeepSeek-V3 on 1,024 H100s at 4K: 7,896 rows beside the scan's 1,413,432, about 4% of the
# search's CPU time (docs/cost-model.md, Stop 55).
REFINE_TOP_TUPLES = 32
REFINE_PER_PP = 4

TUPLE_COLUMNS: tuple[str, ...] = (*DEGREES, *EXPERT_DEGREES)


class TupleBests(NamedTuple):
    """Per degree tuple (rows of TUPLE_COLUMNS), the fastest fitting step seen and where it was
    seen first (its place in the enumeration: ties go to the earlier)."""

    tuples: np.ndarray  # (n, len(TUPLE_COLUMNS)) int64
    step_s: np.ndarray
    place: np.ndarray


def refines(pins: Pins) -> bool:
    """Whether the search refines: vpp and the split free (pinned, the scan prices what they give)."""
    return pins.vpp is None and pinned_split(pins) is None


def tuple_bests(e: Evaluated, place: np.ndarray) -> TupleBests:
    """The fitting pipelined (pp > 1) rows of `e` (at enumeration places `place`), per degree tuple."""
    c = e.candidates
    rows = np.flatnonzero(e.fits & (c.pp > 1))
    tuples = np.stack([getattr(c, name)[rows] for name in TUPLE_COLUMNS], axis=1).astype(np.int64)
    return _best_per_tuple(TupleBests(tuples.reshape(len(rows), len(TUPLE_COLUMNS)), e.step.step_time_s[rows],
                                      place[rows]))


def _best_per_tuple(b: TupleBests) -> TupleBests:
    """One row per distinct tuple: its fastest step, ties to the earliest place."""
    order = np.lexsort((b.place, b.step_s))
    b = TupleBests(b.tuples[order], b.step_s[order], b.place[order])
    first, _ = distinct_rows(b.tuples)  # each tuple's first row in that order: its best
    first = np.sort(first)
    return TupleBests(b.tuples[first], b.step_s[first], b.place[first])


def merged(parts: list[TupleBests]) -> TupleBests:
    """The best per tuple over `parts` (a scan's chunks), in rank order: step, then place."""
    width = len(TUPLE_COLUMNS)
    if not parts:
        return TupleBests(np.zeros((0, width), dtype=np.int64), np.zeros(0), np.zeros(0, dtype=np.int64))
    return _best_per_tuple(TupleBests(np.concatenate([p.tuples for p in parts]),
                                      np.concatenate([p.step_s for p in parts]),
                                      np.concatenate([p.place for p in parts])))


def refine_tuples(bests: TupleBests) -> np.ndarray:
    """The degree tuples to refine (rows of space.with_expert_degrees' columns), best first: the
    REFINE_TOP_TUPLES best, and the REFINE_PER_PP best of each pp (the best plans of a pp that
    ranks below another can be the ones whose interleaving pays most)."""
    pp = bests.tuples[:, DEGREES.index("pp")]
    order = np.argsort(pp, kind="stable")  # bests is in rank order: within a pp, rank order too
    within = np.empty(len(pp), dtype=np.int64)
    within[order] = np.arange(len(pp)) - np.searchsorted(pp[order], pp[order], side="left")
    chosen = (np.arange(len(pp)) < REFINE_TOP_TUPLES) | (within < REFINE_PER_PP)
    return bests.tuples[chosen]


def tuples_to_refine(bests: TupleBests, pins: Pins) -> np.ndarray:
    """refine_tuples of a scan's `bests`, none where the pins fix vpp or the split (refines)."""
    return refine_tuples(bests) if refines(pins) else bests.tuples[:0]

"""How many candidates the search space holds, counted without expanding them (space.enumerate_candidates
gives the same number of rows): the search refuses a space too large before any work by this count."""

from __future__ import annotations

import numpy as np

from sp_planner.distinct import distinct_rows
from sp_planner.plan import MAX_DEGREE
from sp_planner.space import Pins
from sp_planner.space_choices import (
    Axes,
    _micro_batches,
    _num_experts,
    _precision_codes,
    _variants,
    _vpps_kept,
    _zeros_and_recomputes,
)
from sp_planner.space_degrees import (
    DEGREES,
    _divisors,
    bounded_factorizations,
    degree_tuples,
    ordered_factorizations,
    with_expert_degrees,
)
from sp_planner.specs.workload import Workload

# Above this many degree tuples count_candidates counts without them (the base count, which is
# then already far above any search's size limit, so the refusal stands).
COUNT_TUPLES_LIMIT = 2_000_000


def count_candidates(workload: Workload, world: int, pins: Pins, gpus_per_node: int | None = None,
                     *, axes: Axes | None = None) -> int:
    """How many candidates enumerate_candidates gives, without expanding them: per degree tuple and
    ZeRO stage, its valid variants x recompute x micro-batch choices (MoE: per (ep, etp) row too).
    Beyond COUNT_TUPLES_LIMIT tuples, the degree tuples with each dp by formula times what one of
    them expands to, variants and expert rows aside (a lower bound)."""
    dp_axis = DEGREES.index("dp")
    zeros, recomputes = _zeros_and_recomputes(pins, axes)
    if ordered_factorizations(world, len(DEGREES)) <= COUNT_TUPLES_LIMIT:
        tuples = with_expert_degrees(degree_tuples(world, pins), _num_experts(axes), pins)[:, :len(DEGREES)]
        named = dict(zip(DEGREES, tuples.T))
        per_tuple = np.zeros(len(tuples), dtype=np.int64)
        for zero in zeros:
            mask, _ = _variants(named, np.full(len(tuples), zero), pins, gpus_per_node)
            per_tuple += mask.sum(axis=1)
        # vpp x precision per (tuple, micro-batch): the vpp values kept depend on dp, pp and the
        # micro-batch, so they are counted once per distinct (dp, pp) (a few dozen, against up to
        # millions of tuples).
        dp_pp = np.stack([named["dp"], named["pp"]], axis=1)
        first, inverse = distinct_rows(dp_pp)
        mbs = _vpps_kept(workload, dp_pp[first], pins, axes)[inverse]
        return int((per_tuple * mbs).sum()) * len(recomputes) * len(_precision_codes(pins, axes))
    if any(getattr(pins, axis) is not None for axis in DEGREES if axis != "dp"):
        dps, per_dp = np.unique(degree_tuples(world, pins)[:, dp_axis], return_counts=True)
    else:
        dps = np.array([d for d in _divisors(world) if pins.dp in (None, d) and d <= MAX_DEGREE], dtype=np.int64)
        per_dp = np.array([bounded_factorizations(world // int(dp), len(DEGREES) - 1) for dp in dps], dtype=np.int64)
    return sum(tuples * len(zeros) * len(recomputes) * len(_micro_batches(workload, dp, pins))
               for dp, tuples in zip(dps.tolist(), per_dp.tolist())) * len(_precision_codes(pins, axes))

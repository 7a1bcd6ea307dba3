"""candidates: a plan as one-entry columns and back, and the columns' derived expert degree."""

import numpy as np

from sp_planner.candidates import Candidates
from sp_planner.plan import ParallelPlan


def test_a_plan_round_trips_through_its_columns():
    plan = ParallelPlan(dp=4, pp=2, tp=2, ulysses=2, zero=1, recompute="selective", micro_batch=2, vpp=2,
                        precision="fp8", fp8_recipe="tensorwise", ring_layout="zigzag")
    c = Candidates.of_plan(plan)
    assert len(c) == 1
    assert c.plan(0) == plan
    assert bool(c.fp8_current[0]) and not bool(c.fp8_blockwise[0])


def test_edp_take_and_concat():
    # edp = dp x ring x ulysses x tp / (ep x etp): 4 x 1 x 1 x 2 / 2 = 4; 1 at least.
    moe = Candidates.of_plan(ParallelPlan(dp=4, tp=2, ep=2))
    dense = Candidates.of_plan(ParallelPlan(dp=2))
    both = Candidates.concat([moe, dense])
    assert both.edp.tolist() == [4, 2]
    assert both.take(np.array([1])).plan(0) == dense.plan(0)


def test_take_by_positions_masks_and_slices_agree():
    """take's integer positions (ndarray.take, negative ones from the end) pick the rows a mask and
    a slice pick."""
    plans = [ParallelPlan(dp=4, tp=2, ep=2), ParallelPlan(dp=2, zero=1, recompute="full"),
             ParallelPlan(dp=8, precision="fp8", fp8_recipe="tensorwise")]
    c = Candidates.concat([Candidates.of_plan(p) for p in plans])
    for index in (np.array([2, 0]), np.array([-1, 0], dtype=np.int32), np.array([True, False, True]),
                  slice(1, 3), np.array([], dtype=np.int64)):
        taken = c.take(index)
        assert [taken.plan(i) for i in range(len(taken))] == [plans[i] for i in np.arange(3)[index]]

"""cost.pipeline_groups by hand. The groups' waits themselves are checked through
cost.pipeline_path.critical_path_s against the simulator (tests/cost/test_pipeline_path.py)."""

import numpy as np
import pytest

from sp_planner.cost.pipeline_groups import below_s, descent_s, last_middle, ridden_at
from sp_planner.cost.pipeline_path import StageBlocks


def test_sums_below_the_first_the_last_middle_and_the_last_stage():
    # pp 5: 3 middle stages; the first stage's 1 s and each middle one's 2 s below each of the three.
    three, none = last_middle(np.array(3.0), None), last_middle(np.array(0.0), None)
    assert below_s(np.array(3.0), 1.0, 2.0, under=three.under) == (0.0, 1.0 + 2 * 2.0, 1.0 + 3 * 2.0)
    # pp 2: no middle stage; the last stage has the first below it.
    assert below_s(np.array(0.0), 1.0, 2.0, under=none.under) == (0.0, 1.0, 1.0)
    # Riding middle rank 1 of 3: none of them below it, 2 above; below it the first stage alone.
    ridden = ridden_at(np.array(1.0), np.array(3.0), None)
    assert (ridden.under, ridden.over) == (0.0, 2.0)
    assert below_s(np.array(3.0), 1.0, 2.0, under=ridden.under) == (0.0, 1.0, 1.0 + 3 * 2.0)
    assert (three.rank, three.under, three.over) == (3.0, 2.0, 0.0)


def _blocks(first_bwd_s, last_bwd_s, last_fwd_s=0.0):
    return StageBlocks(1.0, np.array(0.0), np.array(0.0), np.array(0.0), np.array(first_bwd_s), np.array(last_bwd_s),
                       0.0, np.array(last_fwd_s))


def test_the_last_middle_stage_waits_at_each_group_boundary_for_the_chain_down_the_stages():
    # pp 8 x vpp 3, 32 micro-batches: 4 groups, 3 boundaries. Middle stages' chunk-0 backward 3 s,
    # last chunk's 2 s (a layout's 3 / 3 / 2), its forward 0.1 s; the first stage's last chunk 3 s,
    # the last stage's chunk 1 2 s. The chain down to stage 1: 5 chunk-0 hops (stages 5..1) and stage
    # 1's last chunk, 17 s, beats down to stage 6 (2 + 5 x 2 = 12 s); then stages 0 and 7, 3 + 2 s,
    # against stage 6's own 8 last-chunk backwards and forwards, 8 x 2.1 s: 17 + 5 - 16.8 = 5.2 s each.
    first, middle, last = _blocks(0.0, 3.0), _blocks(3.0, 2.0, 0.1), _blocks(2.0, 0.0)
    waits = descent_s((first, middle, last), np.array(6.0), np.array(8), np.array(3), np.array(32.0), mid=middle)
    assert waits == pytest.approx(3 * 5.2)
    # Equal chunks wait for nothing (the chains are p's own blocks less its 8 forwards), nor one group.
    even = _blocks(2.0, 2.0, 0.1)
    assert descent_s((_blocks(0.0, 2.0), even, last), np.array(6.0), np.array(8), np.array(3), np.array(32.0),
                     mid=even) == 0.0
    assert descent_s((first, middle, last), np.array(6.0), np.array(8), np.array(3), np.array(8.0), mid=middle) == 0.0

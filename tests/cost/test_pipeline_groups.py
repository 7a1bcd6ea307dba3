"""cost.pipeline_groups by hand. The groups' waits themselves are checked through
cost.pipeline_path.critical_path_s against the simulator (tests/cost/test_pipeline_path.py)."""

import numpy as np

from sp_planner.cost.pipeline_groups import below_s


def test_sums_below_the_first_the_last_middle_and_the_last_stage():
    # pp 5: 3 middle stages; the first stage's 1 s and each middle one's 2 s below each of the three.
    assert below_s(np.array(3.0), 1.0, 2.0) == (0.0, 1.0 + 2 * 2.0, 1.0 + 3 * 2.0)
    # pp 2: no middle stage; the last stage has the first below it.
    assert below_s(np.array(0.0), 1.0, 2.0) == (0.0, 1.0, 1.0)

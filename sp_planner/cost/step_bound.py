"""A lower bound of the step (cost.step.time_columns' step_time_s) without the data-parallel passes
(cost.dp_times, cost.dp_passes: most of a search's time), for search_prune."""

from __future__ import annotations

from functools import reduce
from typing import TYPE_CHECKING

import numpy as np

from sp_planner.candidates import Candidates
from sp_planner.cost.step import time_parts
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from sp_planner.cost.step_options import StepOptions


# The parts a lower bound leaves at 0 (TimeColumns' places): the DP traffic exposed, the optimizer
# step and the host time the GPU work does not hide, the three the data-parallel passes price.
BOUND_ZEROED_PARTS = ("dp_comm_exposed_s", "optimizer_s", "host_overhead_s")


def step_lower_bound_s(model: ModelSpec, hardware: HardwareProfile, workload: Workload, c: Candidates,
                       **options: Unpack[StepOptions]) -> np.ndarray:
    """A lower bound of time_columns' step_time_s, per candidate, without the data-parallel passes
    (cost.dp_times, cost.dp_passes: most of a search's time), for search_prune. The step is the
    parts summed left to right, then the MFU ceiling's stretch (>= 0, cost.mfu_ceiling) added;
    this is the same sum with BOUND_ZEROED_PARTS at 0, each of which is >= 0: the DP exposure and
    its hidden seconds are clamped at 0 wherever they are formed (cost.dp_exposure, cost.dp_once,
    cost.pipeline_dp, cost.pipeline_tails; tests/cost/test_step_bound.py checks it on searches), the
    optimizer's is HBM bytes over a bandwidth, and the host's is m x its exposed stall (>= 0,
    cost.host) less what runs beside the DP traffic, clipped to [0, that]. A rounded sum does not
    decrease when one term grows (IEEE addition is monotone), so the bound is <= the step bit for
    bit, NaN where any kept part is (never taken for a bound by the comparisons that use it)."""
    parts = time_parts(model, hardware, workload, c, lower_bound=True, **options)
    return np.broadcast_to(np.asarray(reduce(np.add, parts), dtype=np.float64), np.shape(c.tp))

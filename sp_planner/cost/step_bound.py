"""A lower bound of the step (cost.step.time_columns' step_time_s) without the data-parallel passes
(cost.dp_times, cost.dp_passes: most of a search's time), for search_prune."""

from __future__ import annotations

from dataclasses import fields
from functools import reduce
from typing import TYPE_CHECKING

import numpy as np

from sp_planner.candidates import Candidates
from sp_planner.cost.step import DP_CHOICE_COLUMNS, time_parts
from sp_planner.cost.step_columns import TimeColumns
from sp_planner.cost.zero_read_terms import zero_read_terms
from sp_planner.distinct import distinct_key, per_key
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from sp_planner.cost.step_options import StepOptions


# The parts a lower bound leaves at 0 (TimeColumns' places): the DP traffic exposed, the optimizer
# step and the host time the GPU work does not hide, the three the data-parallel passes price.
BOUND_ZEROED_PARTS = ("dp_comm_exposed_s", "optimizer_s", "host_overhead_s")
# The parts cost.zero_read_terms' weight casts and tied all-reduce go to (TimeColumns' places).
_GEMM, _SENDS = TimeColumns._fields.index("gemm_s"), TimeColumns._fields.index("pp_comm_s")
# The columns the bound's parts but cost.zero_read_terms' read: every candidate column but the
# data-parallel choices, which only the DP passes and those terms read (cost.step.DP_CHOICE_COLUMNS;
# tests/cost/test_step_bound_distinct.py checks it bit for bit).
BOUND_COLUMNS = tuple(f.name for f in fields(Candidates) if f.name not in DP_CHOICE_COLUMNS)


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
    bit, NaN where any kept part is (never taken for a bound by the comparisons that use it).
    The parts are priced once per distinct row of BOUND_COLUMNS (time_parts works row by row), and
    the weight casts and tied all-reduce (cost.zero_read_terms) added row by row as time_parts adds them."""
    def bound_parts(rows: Candidates) -> tuple:
        return time_parts(model, hardware, workload, rows, lower_bound=True, **options)

    parts, layers, micro_batches = per_key(bound_parts, distinct_key(c, BOUND_COLUMNS), c)
    cast, tied = zero_read_terms(model, hardware, c, layers, micro_batches, **options)
    added = {_GEMM: cast, _SENDS: tied}
    parts = tuple(part + added[i] if i in added else part for i, part in enumerate(parts))
    return np.broadcast_to(np.asarray(reduce(np.add, parts), dtype=np.float64), np.shape(c.tp))

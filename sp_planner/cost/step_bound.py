"""A lower bound of the step (cost.step.time_columns' step_time_s) without the data-parallel passes
(cost.dp_times, cost.dp_passes: most of a search's time), for search_prune, and the layers it
priced (cost.step_layers.LayerParts), which the search hands to cost.step for the rows it times."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import reduce
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from sp_planner.candidates import Candidates
from sp_planner.columns import take_rows
from sp_planner.cost.step_layers import DP_CHOICE_COLUMNS, LayerParts, layer_parts
from sp_planner.cost.zero_read_terms import zero_read_terms
from sp_planner.distinct import distinct_key
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from sp_planner.cost.step_options import LayerOptions


# The parts a lower bound leaves at 0 (StepParts' names): the DP traffic exposed, the optimizer
# step and the host time the GPU work does not hide, the three the data-parallel passes price.
BOUND_ZEROED_PARTS = ("dp_comm_exposed_s", "optimizer_s", "host_overhead_s")
# The columns the bound's parts but cost.zero_read_terms' read: every candidate column but the
# data-parallel choices, which only the DP passes and those terms read (cost.step_layers.DP_CHOICE_COLUMNS;
# tests/cost/test_step_bound_distinct.py checks it bit for bit).
BOUND_COLUMNS = tuple(f.name for f in fields(Candidates) if f.name not in DP_CHOICE_COLUMNS)


@dataclass(frozen=True)
class BoundLayers:
    """The LayerParts a bound priced (`priced`, on distinct rows) and each candidate's row of them
    (`row`): a column of the search's pending rows (columns.take takes `row`)."""

    priced: LayerParts
    row: np.ndarray

    def take(self, index: np.ndarray) -> BoundLayers:
        """The candidates at `index` (columns.take)."""
        return BoundLayers(self.priced, self.row[index])

    @classmethod
    def concat(cls, parts: list[BoundLayers | None]) -> BoundLayers | None:
        """One bound's rows one after another (columns.concat); None where some are not bounded or
        come from another bound (the search prices their bound again, in one call)."""
        first = parts[0]
        bounded = [p for p in parts if p is not None and first is not None and p.priced is first.priced]
        if first is None or len(bounded) < len(parts):
            return None
        return BoundLayers(first.priced, np.concatenate([p.row for p in bounded]))

    def at_rows(self) -> LayerParts:
        """The LayerParts of these candidates, as cost.step_layers prices them alone."""
        return self.priced.take(self.row)


class StepBound(NamedTuple):
    """step_lower_bound's answer per candidate (per candidate at `rows` where it skipped some)."""

    bound_s: np.ndarray  # the step's lower bound
    layers: BoundLayers  # the layers priced for it
    rows: np.ndarray | None = None  # the candidates bounded (None: all)


def step_lower_bound(model: ModelSpec, hardware: HardwareProfile, workload: Workload, c: Candidates,
                     *, sums_sequence_parallel_grads: bool = True, partial_tp_grads: bool = False,
                     skip: Callable[[np.ndarray], np.ndarray] | None = None,
                     **options: Unpack[LayerOptions]) -> StepBound:
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
    The parts are priced once per distinct row of BOUND_COLUMNS (cost.step_layers works row by
    row), and the weight casts, the tied all-reduce and the replicated gradients' TP all-reduces
    (cost.zero_read_terms; `sums_sequence_parallel_grads` and `partial_tp_grads` theirs, which the
    layers do not read)
    added row by row as cost.step.time_parts adds them.
    `skip(partial_s)`: which rows need no bound (search_prune.skipped_rows), asked of the layers'
    parts summed alone (partial_s), before those terms are priced; only the others are bounded
    (StepBound.rows). The terms are each >= 0 (seconds of bytes over a bandwidth) and summed into
    the parts, so partial_s <= bound_s bit for bit (IEEE addition is monotone): a rule that skips
    a row for a bound above a threshold skips it for its full bound too, and the rows left are
    bounded as they are without `skip`. Those terms, priced row by row, cost about two thirds of
    what the layers cost on the distinct rows (docs/cost-model.md, Stop 65)."""
    key = distinct_key(c, BOUND_COLUMNS)
    first, row = (np.arange(len(c)), np.arange(len(c))) if key is None else key
    priced = layer_parts(model, hardware, workload, c if key is None else c.take(first), walked=False, **options)
    kept = None
    if skip is not None:  # summed on the distinct rows, then spread: the sum of the parts spread
        distinct_s = np.broadcast_to(np.asarray(reduce(np.add, priced.compute), dtype=np.float64), np.shape(first))
        kept = np.flatnonzero(~skip(distinct_s[row]))
        c, row = c.take(kept), row[kept]
    parts, layers, micro_batches = take_rows((priced.compute, priced.layers, priced.micro_batches), row, len(first))
    cast, tied, replicated = zero_read_terms(model, hardware, c, layers, micro_batches, seq_len=workload.seq_len,
                                             sums_sequence_parallel_grads=sums_sequence_parallel_grads,
                                             partial_tp_grads=partial_tp_grads, **options)
    parts = parts._replace(gemm_s=parts.gemm_s + cast, pp_comm_s=parts.pp_comm_s + tied,
                           tp_comm_s=parts.tp_comm_s + replicated)
    bound = np.broadcast_to(np.asarray(reduce(np.add, parts), dtype=np.float64), np.shape(c.tp))
    return StepBound(bound, BoundLayers(priced, row), kept)

"""Seconds of a stage's data-parallel collectives over the candidates (vectorized): each distinct
shape's calls priced once (cost.dp_calls, call by call) and spread back over the candidates where
they are read (StageTimes), the middle and last stages' on a pipeline's rows only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sp_planner.cost.dp_calls import STAGES, Stage, priced_rows
from sp_planner.cost.dp_exposure import DPTimes
from sp_planner.cost.fp8_params import gather_bytes_per_gemm_param
from sp_planner.cost.states import MEGATRON_STATES, TrainingStates
from sp_planner.distinct import distinct_columns
from sp_planner.pipeline import StageLayers
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec


# The candidate columns the data-parallel calls depend on (the rest, recompute, micro-batch, the
# ring's layout and resharding, change when they run, not what they cost; precision only through
# the parameter gather's width, a column of its own, cost.fp8_params).
_SHAPE_COLUMNS = ("dp", "pp", "tp", "ulysses", "ring", "zero", "dp_replicate", "vpp", "first_stage_layers",
                  "last_stage_layers", "ep", "etp")


def dp_stage_times(model: ModelSpec, hardware: HardwareProfile, c, *, stages: StageLayers, gpus_per_node: int,
                   seq_len: int, states: TrainingStates = MEGATRON_STATES, which: tuple[Stage, ...] = ("first",)
                   ) -> tuple[DPTimes, ...]:
    """One pass of every data-parallel collective of a rank of each pipeline stage in `which`
    ("first", "middle", "last"; cost.dp_exposure.DPTimes), priced once per distinct shape
    (_SHAPE_COLUMNS) and spread back over the candidates: a chunk of 65,536 candidates holds a few
    thousand shapes at most (1,500 to 2,700 in a 4096-GPU search), and each is priced call by
    call. A middle or last stage's calls only where there is a pipeline (`_stage_times`; 0
    elsewhere). `states`: the framework's gradient and gathered-parameter widths (cost.states);
    `seq_len`: the workload's, which cost.layer_kinds' kind helpers take (a stage's MoE layers do
    not depend on it)."""
    return tuple(times.at() for times in dp_stage_tables(model, hardware, c, stages=stages, seq_len=seq_len,
                                                         gpus_per_node=gpus_per_node, states=states, which=which))


@dataclass(frozen=True)
class StageTimes:
    """A stage's DPTimes for each distinct shape (`table`) and each candidate's shape (`inverse`):
    dp_stage_times' columns, spread over the candidates only where they are read."""

    table: DPTimes
    num_shapes: int
    inverse: np.ndarray
    # The table's fields as rows of one (fields, shapes) array, spread in one call (at); None: stacked here.
    columns: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.columns is None:
            size = (self.num_shapes,)
            object.__setattr__(self, "columns", np.stack(
                [np.broadcast_to(np.asarray(v, dtype=np.float64), size) for v in self.table]))

    def take(self, index: np.ndarray | slice) -> "StageTimes":
        """The candidates at `index` (columns.take_rows)."""
        return StageTimes(self.table, self.num_shapes, self.inverse[index], self.columns)

    def at(self, index: np.ndarray | slice = slice(None)) -> DPTimes:
        """The candidates' DPTimes at `index` (all: every candidate)."""
        assert self.columns is not None  # __post_init__ sets it
        # np.take along the shapes axis: 2 to 3 times faster than the same fancy index columns[:, rows].
        return DPTimes(*np.take(self.columns, self.inverse[index], axis=1))


def dp_stage_tables(model: ModelSpec, hardware: HardwareProfile, c, *, stages: StageLayers, gpus_per_node: int,
                    seq_len: int, states: TrainingStates = MEGATRON_STATES, which: tuple[Stage, ...] = ("first",),
                    lightest: bool = False) -> tuple[StageTimes, ...]:
    """dp_stage_times before it is spread over the candidates; `lightest`: the middle stage's calls
    those of the one with the fewest MoE layers (stage_params.dp_lightest_middle_stage)."""
    n = len(c)
    gather_width = np.broadcast_to(gather_bytes_per_gemm_param(states, c.precision, c.zero, c.reshard), (n,))
    first, inverse = distinct_columns(
        [np.broadcast_to(np.asarray(getattr(c, name)), (n,)) for name in _SHAPE_COLUMNS] + [gather_width])
    stage_rows = StageLayers(*(np.broadcast_to(np.asarray(v), (n,))[first] for v in stages))
    priced = _stage_times(model, hardware, c.take(first), stages=stage_rows, gpus_per_node=gpus_per_node,
                          seq_len=seq_len, states=states, which=which, lightest=lightest)
    return tuple(StageTimes(times, len(first), inverse) for times in priced)


def relay_stage_times(model: ModelSpec, hardware: HardwareProfile, c, rows: np.ndarray, *, stages: StageLayers,
                      gpus_per_node: int, seq_len: int, states: TrainingStates = MEGATRON_STATES) -> DPTimes:
    """The calls of the middle stage with the fewest MoE layers (stage_params.dp_lightest_middle_stage)
    on the candidates where `rows` (a mask), 0 elsewhere: priced on those rows alone."""
    n = len(c)
    at = np.flatnonzero(rows)
    part = StageLayers(*(np.broadcast_to(np.asarray(v), (n,))[at] for v in stages))
    times = dp_stage_tables(model, hardware, c.take(at), stages=part, gpus_per_node=gpus_per_node, seq_len=seq_len,
                            states=states, which=("middle",), lightest=True)[0].at()
    return DPTimes(*(_spread(np.broadcast_to(np.asarray(v, dtype=np.float64), (len(at),)), at, n) for v in times))


def _stage_times(model: ModelSpec, hardware: HardwareProfile, c, *, stages: StageLayers, gpus_per_node: int,
                 seq_len: int, states: TrainingStates, which: tuple[Stage, ...], lightest: bool = False
                 ) -> tuple[DPTimes, ...]:
    """dp_stage_times for every row of `c`; a middle or last stage's only on the rows that use
    them, a pipeline's (ZeRO-2/3's per-micro-batch traffic on the critical path, cost.pipeline_dp;
    ZeRO-0/1's own sync of each stage after its last backward, cost.pipeline_tails), 0 on the
    others. The stages asked for are priced in one batch of rows, each row its own stage
    (cost.dp_calls.priced_rows): at a search chunk's 1,500 to 2,700 shapes the time goes mostly into the
    number of numpy calls, not the rows."""
    n = len(c)
    rows = np.flatnonzero(np.broadcast_to(c.pp, (n,)) > 1)
    parts = [(stage, np.arange(n) if stage == "first" else rows) for stage in which
             if stage == "first" or len(rows)]
    priced: dict[Stage, DPTimes] = {}
    if parts:
        index = np.concatenate([at for _, at in parts])
        stage_code = np.concatenate([np.full(len(at), STAGES.index(stage)) for stage, at in parts])
        times = priced_rows(model, hardware, c.take(index), stages=StageLayers(
                                *(np.broadcast_to(np.asarray(v), (n,))[index] for v in stages)),
                            stage=stage_code, gpus_per_node=gpus_per_node, seq_len=seq_len, states=states,
                            lightest=lightest)
        columns = [np.broadcast_to(np.asarray(v, dtype=np.float64), (len(index),)) for v in times]
        start = 0
        for stage, at in parts:
            part = DPTimes(*(v[start:start + len(at)] for v in columns))
            priced[stage] = part if stage == "first" else DPTimes(*(_spread(v, at, n) for v in part))
            start += len(at)
    return tuple(priced.get(stage) or DPTimes(*(np.zeros(n) for _ in DPTimes._fields)) for stage in which)


def _spread(values, rows: np.ndarray, n: int) -> np.ndarray:
    """`values` at `rows` of n, 0 elsewhere."""
    out = np.zeros(n)
    out[rows] = values
    return out

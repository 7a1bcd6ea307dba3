"""sp-run results as the report reads them, and their predicted-against-measured comparison.

result.json is read as plain JSON into `RunRecord`, a small model of the documented fields of
sp_planner.executor.result.RunResult that ignores the others, so the report keeps reading results
that later versions extend; its parts (errors, bytes, times) are the executor's own (torch-free)
models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from pydantic import ConfigDict, Field

from sp_planner.executor.result import AttentionCommBytes, StepTimes, TensorErrors
from sp_planner.fileio import read_structured, validate_as
from sp_planner.specs.base import FrozenModel
from sp_planner.specs.model import softmax_scale_or_default


class _View(FrozenModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class RunConfigView(_View):
    ulysses: int = Field(ge=1)
    ring: int = Field(ge=1)
    tp: int = Field(default=1, ge=1)
    batch: int = Field(default=1, ge=1)
    seq_len: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    # The model's attention beyond plain softmax (executor.config.RunConfig; absent: plain).
    v_head_dim: int | None = Field(default=None, gt=0)
    softmax_scale: float | None = Field(default=None, gt=0)  # absent (older results): 1/sqrt(head_dim)
    softcap: float | None = Field(default=None, gt=0)
    window: int | None = Field(default=None, gt=0)
    window_kind: str = "sliding"
    causal: bool = False
    # How the ring axis ran (absent in results written before sp-run recorded them: not compared).
    ring_layout: str | None = None
    cp_comm: str | None = None
    dtype: str
    device: str

    @property
    def v_dim(self) -> int:
        """Head dim of V (head_dim unless MLA's differs), as RunConfig.v_dim."""
        return self.v_head_dim or self.head_dim

    @property
    def scale(self) -> float:
        """The softmax scale the run applied, as RunConfig.scale."""
        return softmax_scale_or_default(self.softmax_scale, self.head_dim)


class RunRecord(_View):
    """One attention run (sp-run's result.json): correctness, bytes, time and memory."""

    source: str = ""  # the file it was read from, for the report's table
    passed: bool
    failures: tuple[str, ...] = ()
    config: RunConfigView
    kernel: str
    max_abs_err: TensorErrors
    tolerance: TensorErrors
    comm_bytes_measured: AttentionCommBytes
    comm_bytes_predicted: AttentionCommBytes
    # seconds per attention forward and backward (median of the timed iterations)
    time_s: StepTimes
    peak_memory_bytes: int = Field(ge=0)
    predicted_time_s: float | None = None
    predicted_memory_bytes: int | None = None
    prediction_note: str | None = None

    @property
    def label(self) -> str:
        c = self.config
        return f"u{c.ulysses} r{c.ring} tp{c.tp} S={c.seq_len} {c.dtype} {c.device}"


def read_run_record(path: Path) -> RunRecord:
    """Read one sp-run result.json; a missing or malformed file is one UserInputError line."""
    path = Path(path)
    data = read_structured(path, what="run result")
    if isinstance(data, dict):
        data = {**data, "source": path.name}
    return validate_as(RunRecord, data, what="run result", path=path)


class Comparison(FrozenModel):
    """One predicted-against-measured quantity of one run."""

    run: int  # 1-based position among the runs given
    quantity: str
    unit: str
    predicted: float
    measured: float

    @property
    def error_percent(self) -> float | None:
        """(measured - predicted) / predicted in percent; None when nothing was predicted (0)."""
        if self.predicted == 0:
            return 0.0 if self.measured == 0 else None
        return 100.0 * (self.measured - self.predicted) / self.predicted


def compare_runs(runs: Sequence[RunRecord]) -> list[Comparison]:
    """Every quantity a run both predicted and measured: bytes always, time and memory when given."""
    rows: list[Comparison] = []
    for number, run in enumerate(runs, start=1):
        measured, predicted = run.comm_bytes_measured, run.comm_bytes_predicted
        rows.append(Comparison(run=number, quantity="all-to-all bytes sent per rank", unit="bytes",
                               predicted=predicted.all_to_all, measured=measured.all_to_all))
        rows.append(Comparison(run=number, quantity="ring P2P bytes sent per rank", unit="bytes",
                               predicted=predicted.p2p, measured=measured.p2p))
        # All-gather CP's traffic (cp_comm allgather), where either side has any: its bytes are the run's
        # only ring-axis bytes, and the report compared none of them.
        for quantity, key in (("all-gather CP bytes sent per rank", "all_gather"),
                              ("reduce-scatter CP bytes sent per rank", "reduce_scatter")):
            if getattr(predicted, key) or getattr(measured, key):
                rows.append(Comparison(run=number, quantity=quantity, unit="bytes",
                                       predicted=getattr(predicted, key), measured=getattr(measured, key)))
        if run.predicted_time_s is not None and math.isfinite(run.predicted_time_s):
            rows.append(Comparison(run=number, quantity="attention fwd+bwd time", unit="s",
                                   predicted=run.predicted_time_s,
                                   measured=run.time_s.fwd + run.time_s.bwd))
        if run.predicted_memory_bytes is not None:
            rows.append(Comparison(run=number, quantity="peak memory per rank", unit="bytes",
                                   predicted=run.predicted_memory_bytes, measured=run.peak_memory_bytes))
    return rows


"""Results of an attention run: per rank, and the whole run as written to result.json."""

from __future__ import annotations

import math

from pydantic import Field

from sp_planner.executor.config import RunConfig
from sp_planner.specs.base import FrozenModel


class AttentionCommBytes(FrozenModel):
    """Bytes one rank sends in one attention layer's forward+backward, by collective (the
    planner's per-step, per-collective counts are sp_planner.estimate.CommBytes)."""

    all_to_all: int = Field(ge=0)
    p2p: int = Field(ge=0)
    # all-gather CP (cp_comm allgather): K/V all-gathers, dK/dV reduce-scatters
    all_gather: int = Field(default=0, ge=0)
    reduce_scatter: int = Field(default=0, ge=0)

    @property
    def total(self) -> int:
        return self.all_to_all + self.p2p + self.all_gather + self.reduce_scatter


class TensorErrors(FrozenModel):
    """Max absolute error against the fp32 reference, per tensor (or the tolerance for each)."""

    out: float
    dq: float
    dk: float
    dv: float


class StepTimes(FrozenModel):
    fwd: float = Field(ge=0)
    bwd: float = Field(ge=0)


class GroupRanks(FrozenModel):
    """Global ranks of this rank's Ulysses and Ring groups, as built by the device mesh."""

    ulysses: tuple[int, ...]
    ring: tuple[int, ...]


class RankResult(FrozenModel):
    rank: int
    kernel: str
    kernel_note: str | None = None
    max_abs_err: TensorErrors
    tolerance: TensorErrors
    # RMS error over the rank's shard and its bound (sp_planner.executor.case); absent from results
    # written before stop 42.
    rms_err: TensorErrors | None = None
    rms_tolerance: TensorErrors | None = None
    comm_bytes_measured: AttentionCommBytes
    # seconds, median over the timed iterations (the validated step when iters == 0)
    time_s: StepTimes
    peak_memory_bytes: int
    memory_method: str
    groups: GroupRanks
    host: str | None = None  # the rank's host name (set by the worker)


class Prediction(FrozenModel):
    comm_bytes: AttentionCommBytes
    time_s: float | None = None
    memory_bytes: int | None = None
    note: str | None = None


class RunResult(FrozenModel):
    passed: bool
    failures: tuple[str, ...] = ()
    config: RunConfig
    kernel: str
    kernel_note: str | None = None
    max_abs_err: TensorErrors
    tolerance: TensorErrors
    rms_err: TensorErrors | None = None
    rms_tolerance: TensorErrors | None = None
    comm_bytes_measured: AttentionCommBytes
    comm_bytes_predicted: AttentionCommBytes
    time_s: StepTimes
    peak_memory_bytes: int
    memory_method: str
    predicted_time_s: float | None = None
    predicted_memory_bytes: int | None = None
    prediction_note: str | None = None
    ranks: tuple[RankResult, ...]


def _binding(pairs: list[tuple[TensorErrors, TensorErrors]]) -> tuple[TensorErrors, TensorErrors]:
    """(error, tolerance) per tensor of the rank nearest its bound (largest error over tolerance):
    one rank's pair, so that a failing rank is never shown beside another rank's looser bound."""
    errors, bounds = {}, {}
    for name in TensorErrors.model_fields:
        err, tol = max(pairs, key=lambda pair: _ratio(getattr(pair[0], name), getattr(pair[1], name)))
        errors[name], bounds[name] = getattr(err, name), getattr(tol, name)
    return TensorErrors(**errors), TensorErrors(**bounds)


def _ratio(err: float, tol: float) -> float:
    if math.isnan(err):
        return math.inf
    if tol <= 0:
        return math.inf if err > 0 else 0.0
    return err / tol


def rank_failures(rank: RankResult, predicted: AttentionCommBytes) -> list[str]:
    """Why one rank's result fails: error above tolerance or bytes unequal to the contract."""
    found = []
    for name in TensorErrors.model_fields:
        err, tol = getattr(rank.max_abs_err, name), getattr(rank.tolerance, name)
        if not err <= tol:
            found.append(f"rank {rank.rank}: {name} max abs error {err:.3g} exceeds {tol:.3g}")
        if rank.rms_err is not None and rank.rms_tolerance is not None:
            err, tol = getattr(rank.rms_err, name), getattr(rank.rms_tolerance, name)
            if not err <= tol:
                found.append(f"rank {rank.rank}: {name} RMS error {err:.3g} exceeds {tol:.3g} (twice the "
                             "single-device run's on this rank's shard)")
    if rank.comm_bytes_measured != predicted:
        found.append(
            f"rank {rank.rank}: sent {rank.comm_bytes_measured.model_dump()} bytes, "
            f"cost model predicts {predicted.model_dump()}"
        )
    return found


def summarize(cfg: RunConfig, ranks: list[RankResult], prediction: Prediction) -> RunResult:
    """One RunResult from every rank's: worst error, slowest time, largest memory."""
    ranks = sorted(ranks, key=lambda r: r.rank)
    failures = [f for r in ranks for f in rank_failures(r, prediction.comm_bytes)]
    if len(ranks) != cfg.world_size:
        failures.append(f"got results from {len(ranks)} ranks, expected {cfg.world_size}")
    first = ranks[0]
    binding = _binding([(r.max_abs_err, r.tolerance) for r in ranks])
    with_rms = [(r.rms_err, r.rms_tolerance) for r in ranks if r.rms_err is not None and r.rms_tolerance is not None]
    rms = _binding(with_rms) if len(with_rms) == len(ranks) else (None, None)
    return RunResult(
        passed=not failures,
        failures=tuple(failures),
        config=cfg,
        kernel=first.kernel,
        kernel_note=first.kernel_note,
        max_abs_err=binding[0],
        tolerance=binding[1],
        rms_err=rms[0],
        rms_tolerance=rms[1],
        comm_bytes_measured=max((r.comm_bytes_measured for r in ranks), key=lambda c: c.total),
        comm_bytes_predicted=prediction.comm_bytes,
        time_s=StepTimes(fwd=max(r.time_s.fwd for r in ranks), bwd=max(r.time_s.bwd for r in ranks)),
        peak_memory_bytes=max(r.peak_memory_bytes for r in ranks),
        memory_method=first.memory_method,
        predicted_time_s=prediction.time_s,
        predicted_memory_bytes=prediction.memory_bytes,
        prediction_note=prediction.note,
        ranks=tuple(ranks),
    )

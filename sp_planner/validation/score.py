"""Predict each corpus row with its pinned plan, convert to the published figure, and score.

error_percent = (predicted - measured) / measured x 100 in the published figure's own units;
speed_error_percent has the sign of "predicted faster than measured" for every figure (for a
step time it is measured / predicted - 1), so optimism reads the same across sources.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import Field

from sp_planner.catalog import load_hardware
from sp_planner.cost.mfu_ceiling import bounded_flops_per_step
from sp_planner.estimate import PlanEstimate
from sp_planner.specs.base import FrozenModel
from sp_planner.specs.model import ModelSpec
from sp_planner.units import format_tokens
from sp_planner.validation.corpus import Corpus
from sp_planner.validation.corpus_row import CorpusRow
from sp_planner.validation.row_run import predict_row, row_model, row_workload
from sp_planner.validation.flop_conventions import megatron_2021_flops_per_step, usp_v5_flops_per_step

# Spearman's rank correlation needs at least this many rows to mean anything.
MIN_GROUP_ROWS = 3


class ScoredRow(FrozenModel):
    id: str
    source: str
    table: str
    group: str
    model: str
    hardware: str
    num_gpus: int
    seq_len: int
    figure: str
    convention: str
    predicted: float
    measured: float
    error_percent: float
    speed_error_percent: float
    # Whether the cost model thinks the pinned plan fits in memory (the run did), and its peak.
    fits: bool
    predicted_memory_peak_bytes: int  # whole bytes (the model computes in floats)
    hbm_bytes: int
    fit_reason: str | None = None
    # Settings the source left unstated, taken from the framework's recipe defaults (CorpusRow).
    assumed: str | None = None
    moe: bool = False  # an MoE model: its rows give MoE plans their own band (validation.band)


class SkippedRow(FrozenModel):
    id: str
    source: str
    table: str
    model: str
    hardware: str
    num_gpus: int
    seq_len: int
    figure: str
    convention: str
    measured: float
    reason: str
    # not_expressible: the cost model cannot state the run; regression: the maintainers filed its
    # measurement as a performance regression (CorpusRow.regression), so it is not scored.
    kind: Literal["not_expressible", "regression"] = "not_expressible"


class GroupScore(FrozenModel):
    name: str
    rows: int
    mape_percent: float
    # None with fewer than MIN_GROUP_ROWS rows, or when either side has no spread.
    spearman: float | None


class ValidationResult(FrozenModel):
    rows: tuple[ScoredRow, ...]
    skipped: tuple[SkippedRow, ...]
    mape_percent: float | None = Field(description="mean |error_percent| over the scored rows")
    groups: tuple[GroupScore, ...]


def published_figure(row: CorpusRow, est: PlanEstimate, model: ModelSpec) -> float:
    """The estimate in the row's published figure and FLOP convention (`model`: the row's)."""
    if row.figure == "step_time_s":
        return est.step_time_s
    if row.figure == "tokens_per_s_per_gpu":
        return est.tokens_per_s / row.world_size
    if row.convention == "megatron_full_square":
        tflops = est.model_tflops_per_gpu
    elif row.convention == "megatron_2021_recompute":
        # The source's own count (eq. 3) over the predicted step time, as it divided the measured one.
        flops = megatron_2021_flops_per_step(hidden=model.hidden_size, layers=model.num_layers,
                                             vocab=model.vocab_size, seq_len=row.seq_len,
                                             global_batch=row.global_batch)
        tflops = flops / (est.step_time_s * row.world_size) / 1e12
    elif row.convention == "usp_v5":
        # The source's own count over the predicted step time (as for eq. 3 above).
        flops = usp_v5_flops_per_step(hidden=model.hidden_size, q_size=model.q_size,
                                      ffn=model.intermediate_size, mlp_matrices=model.num_mlp_matrices,
                                      layers=model.num_layers, vocab=model.vocab_size, seq_len=row.seq_len,
                                      global_batch=row.global_batch)
        tflops = flops / (est.step_time_s * row.world_size) / 1e12
    elif row.convention == "causal_model":
        # The model's FLOPs with causal attention as run and no recompute pass (what the MFU
        # ceiling bounds, cost.mfu_ceiling), over the predicted step.
        tflops = bounded_flops_per_step(model, row_workload(row)) / est.step_time_s / row.world_size / 1e12
    else:
        raise ValueError(f"row {row.id}: no conversion to convention {row.convention}")
    if row.figure == "mfu_percent":
        assert row.peak_tflops is not None  # CorpusRow requires it for MFU figures
        return 100.0 * tflops / row.peak_tflops
    return tflops


def group_name(row: CorpusRow) -> str:
    return row.group or f"{row.source} {format_tokens(row.seq_len)}"


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rho with average ranks for ties; None for fewer than 3 pairs or no spread."""
    if len(x) != len(y):
        raise ValueError(f"spearman needs pairs, got {len(x)} and {len(y)} values")
    if len(x) < MIN_GROUP_ROWS:
        return None
    import pandas as pd  # here, not with the module: sp-validate --help and bad input answer without it

    rx = pd.Series(x, dtype=float).rank().to_numpy()
    ry = pd.Series(y, dtype=float).rank().to_numpy()
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def score_row(row: CorpusRow, corpus: Corpus, est: PlanEstimate | None = None) -> ScoredRow:
    """The row scored against `est`, its prediction (predict_row's when not given)."""
    est = predict_row(row, corpus) if est is None else est
    predicted = published_figure(row, est, row_model(row, corpus))
    if row.figure == "step_time_s":
        speed = row.measured / predicted - 1.0
    else:
        speed = predicted / row.measured - 1.0
    return ScoredRow(
        id=row.id, source=row.source, table=row.table, group=group_name(row), model=row.model, hardware=row.hardware,
        num_gpus=row.world_size, seq_len=row.seq_len, figure=row.figure, convention=row.convention,
        predicted=predicted, measured=row.measured,
        error_percent=100.0 * (predicted - row.measured) / row.measured,
        speed_error_percent=100.0 * speed, fits=est.fits, fit_reason=est.reason,
        predicted_memory_peak_bytes=round(est.memory_peak_bytes),
        hbm_bytes=round(load_hardware(row.hardware).hbm_bytes),
        assumed=row.assumed, moe=row_model(row, corpus).moe is not None,
    )


def score_corpus(corpus: Corpus, *, progress: Callable[[int, int], None] = lambda done, total: None,
                 ) -> ValidationResult:
    scored: list[ScoredRow] = []
    skipped: list[SkippedRow] = []
    for index, row in enumerate(corpus.rows):
        progress(index, len(corpus.rows))
        if row.scored:
            scored.append(score_row(row, corpus))
        else:
            reason = row.reason if row.regression is None else row.regression
            assert reason is not None  # CorpusRow requires a reason on rows not expressible
            skipped.append(SkippedRow(
                id=row.id, source=row.source, table=row.table, model=row.model, hardware=row.hardware,
                num_gpus=row.world_size, seq_len=row.seq_len, figure=row.figure, convention=row.convention,
                measured=row.measured, reason=reason,
                kind="not_expressible" if row.regression is None else "regression",
            ))
    progress(len(corpus.rows), len(corpus.rows))
    groups = []
    for name in dict.fromkeys(r.group for r in scored):
        members = [r for r in scored if r.group == name]
        groups.append(GroupScore(
            name=name, rows=len(members), mape_percent=_mape(members),
            spearman=spearman([r.predicted for r in members], [r.measured for r in members]),
        ))
    return ValidationResult(rows=tuple(scored), skipped=tuple(skipped),
                            mape_percent=_mape(scored) if scored else None, groups=tuple(groups))


def _mape(rows: list[ScoredRow]) -> float:
    return float(np.mean([abs(r.error_percent) for r in rows]))

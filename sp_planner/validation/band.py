"""How far apart two predictions must be before the validation corpus says their order is real,
and where a prediction's true step time is likely to lie.

From sp-validate's scored rows (nothing fitted): a row's speed ratio is predicted speed over
measured speed (1 + speed_error_percent / 100), which is also measured step over predicted step.
Within a group (one source at one length, or one model), the error of the *ratio* of two
predictions is |s_i / s_j - 1|: how wrong the model is about how much faster one run is than
another. The ranking band is the median of that over every pair of rows in a group; the absolute
band is the median |speed error| of a single prediction. The model's errors are not symmetric
(it is mostly optimistic), so the step range is taken from the signed ratios instead: their 10th
and 90th percentiles (linear interpolation) scale a predicted step to the range its measured step
fell in for 80% of the corpus. MoE models get the same figures from the MoE rows alone when there
are at least MIN_CLASS_ROWS of them: their errors are of another size than the dense rows'.
"""

from __future__ import annotations

from itertools import combinations
from statistics import median

import numpy as np

from sp_planner.specs.base import FrozenModel
from sp_planner.validation.score import ScoredRow, ValidationResult

RANGE_PERCENTILES = (10.0, 90.0)
MIN_CLASS_ROWS = 3


class StepRange(FrozenModel):
    """Measured step over predicted step, at RANGE_PERCENTILES of the rows it was taken from."""

    low_ratio: float
    high_ratio: float
    rows: int


class PredictionBand(FrozenModel):
    ranking_band_percent: float  # median pairwise ratio error within groups
    absolute_band_percent: float  # median |speed error| of one prediction
    rows: int
    pairs: int
    step_range: StepRange  # every scored row
    moe_step_range: StepRange | None = None  # the MoE rows only (None: fewer than MIN_CLASS_ROWS)


def _step_range(rows: list[ScoredRow]) -> StepRange:
    ratios = [1.0 + r.speed_error_percent / 100.0 for r in rows]
    low, high = np.percentile(ratios, RANGE_PERCENTILES)
    return StepRange(low_ratio=round(float(low), 3), high_ratio=round(float(high), 3), rows=len(rows))


def prediction_band(result: ValidationResult) -> PredictionBand:
    rows = list(result.rows)
    speed = {r.id: 1.0 + r.speed_error_percent / 100.0 for r in rows}
    groups: dict[str, list[str]] = {}
    for r in rows:
        groups.setdefault(r.group, []).append(r.id)
    pair_errors = [abs(speed[a] / speed[b] - 1.0) for ids in groups.values() for a, b in combinations(ids, 2)]
    if not pair_errors:
        raise ValueError("no group has two scored rows: the corpus gives no ranking band")
    moe_rows = [r for r in rows if r.moe]
    return PredictionBand(
        ranking_band_percent=round(100.0 * median(pair_errors), 1),
        absolute_band_percent=round(100.0 * median(abs(r.speed_error_percent) / 100.0 for r in rows), 1),
        rows=len(rows), pairs=len(pair_errors), step_range=_step_range(rows),
        moe_step_range=_step_range(moe_rows) if len(moe_rows) >= MIN_CLASS_ROWS else None,
    )

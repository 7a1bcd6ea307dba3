"""How far apart two predictions must be before the validation corpus says their order is real.

From sp-validate's scored rows (nothing fitted): a row's speed ratio is predicted speed over
measured speed (1 + speed_error_percent / 100). Within a group (one source at one length, or one
model), the error of the *ratio* of two predictions is |s_i / s_j - 1|: how wrong the model is
about how much faster one run is than another. The ranking band is the median of that over every
pair of rows in a group; the absolute band is the median |speed error| of a single prediction.
"""

from __future__ import annotations

from itertools import combinations
from statistics import median

from sp_planner.specs.base import FrozenModel
from sp_planner.validation.score import ValidationResult


class PredictionBand(FrozenModel):
    ranking_band_percent: float  # median pairwise ratio error within groups
    absolute_band_percent: float  # median |speed error| of one prediction
    rows: int
    pairs: int


def prediction_band(result: ValidationResult) -> PredictionBand:
    speed = {r.id: 1.0 + r.speed_error_percent / 100.0 for r in result.rows}
    groups: dict[str, list[str]] = {}
    for r in result.rows:
        groups.setdefault(r.group, []).append(r.id)
    pair_errors = [abs(speed[a] / speed[b] - 1.0) for ids in groups.values() for a, b in combinations(ids, 2)]
    if not pair_errors:
        raise ValueError("no group has two scored rows: the corpus gives no ranking band")
    return PredictionBand(
        ranking_band_percent=round(100.0 * median(pair_errors), 1),
        absolute_band_percent=round(100.0 * median(abs(r.speed_error_percent) / 100.0 for r in result.rows), 1),
        rows=len(result.rows), pairs=len(pair_errors),
    )

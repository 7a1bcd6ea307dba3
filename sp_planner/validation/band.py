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
fell in for 80% of the rows.

The errors differ by class of run, so each figure is also taken over the rows of one class: dense
or MoE models, alone and on one GPU generation (cost.families.gpu_generation; on today's corpus
the dense Ampere rows' median error is a quarter of the Blackwell MoE rows'). A class is kept
when it has at least MIN_CLASS_ROWS rows and MIN_CLASS_PAIRS pairs; a plan takes the narrowest
kept class it belongs to (band_for), else the whole corpus.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from statistics import median

import numpy as np

from sp_planner.cost.families import gpu_generation
from sp_planner.specs.base import FrozenModel
from sp_planner.validation.score import ScoredRow, ValidationResult

RANGE_PERCENTILES = (10.0, 90.0)
MIN_CLASS_ROWS = 5
MIN_CLASS_PAIRS = 10


class StepRange(FrozenModel):
    """Measured step over predicted step, at RANGE_PERCENTILES of the rows it was taken from."""

    low_ratio: float
    high_ratio: float
    rows: int


class ClassBand(FrozenModel):
    """The band of one class of validation rows: those on one GPU generation (None: any) of dense
    or MoE models (None: both)."""

    generation: str | None
    moe: bool | None
    ranking_band_percent: float  # median pairwise ratio error within groups
    absolute_band_percent: float  # median |speed error| of one prediction
    rows: int
    pairs: int
    step_range: StepRange


class PredictionBand(FrozenModel):
    corpus: ClassBand  # every scored row
    classes: tuple[ClassBand, ...]  # (generation, dense/MoE) and (any generation, dense/MoE) kept


def _class_band(rows: Sequence[ScoredRow], *, generation: str | None, moe: bool | None) -> ClassBand | None:
    """The class's band, None when it has no pair of rows in one group."""
    speed = {r.id: 1.0 + r.speed_error_percent / 100.0 for r in rows}
    groups: dict[str, list[str]] = {}
    for r in rows:
        groups.setdefault(r.group, []).append(r.id)
    pair_errors = [abs(speed[a] / speed[b] - 1.0) for ids in groups.values() for a, b in combinations(ids, 2)]
    if not pair_errors:
        return None
    low, high = np.percentile(list(speed.values()), RANGE_PERCENTILES)
    return ClassBand(
        generation=generation, moe=moe,
        ranking_band_percent=round(100.0 * median(pair_errors), 1),
        absolute_band_percent=round(100.0 * median(abs(s - 1.0) for s in speed.values()), 1),
        rows=len(rows), pairs=len(pair_errors),
        step_range=StepRange(low_ratio=round(float(low), 3), high_ratio=round(float(high), 3), rows=len(rows)),
    )


def prediction_band(result: ValidationResult) -> PredictionBand:
    rows = list(result.rows)
    corpus = _class_band(rows, generation=None, moe=None)
    if corpus is None:
        raise ValueError("no group has two scored rows: the corpus gives no ranking band")
    generations = sorted({g for r in rows if (g := gpu_generation(r.hardware)) is not None})
    keys = [(g, moe) for g in generations for moe in (False, True)] + [(None, False), (None, True)]
    classes = []
    for generation, moe in keys:
        members = [r for r in rows if r.moe == moe and (generation is None or gpu_generation(r.hardware) == generation)]
        band = _class_band(members, generation=generation, moe=moe)
        if band is not None and band.rows >= MIN_CLASS_ROWS and band.pairs >= MIN_CLASS_PAIRS:
            classes.append(band)
    return PredictionBand(corpus=corpus, classes=tuple(classes))


def band_for(band: PredictionBand, *, hardware_name: str, moe: bool) -> ClassBand:
    """The band a plan on `hardware_name` (a profile name) of a dense or MoE model takes: its
    generation's class, else the dense or MoE class, else the whole corpus."""
    generation = gpu_generation(hardware_name)
    by_key = {(c.generation, c.moe): c for c in band.classes}
    for key in ((generation, moe), (None, moe)):
        if key in by_key:
            return by_key[key]
    return band.corpus

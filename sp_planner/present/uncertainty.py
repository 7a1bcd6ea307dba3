"""The band each prediction carries, from the validation corpus (sp_planner/data/prediction_band.json,
written from `sp-validate`'s scored rows by validation.band and kept in step by a test)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources

from sp_planner.estimate import PlanEstimate
from sp_planner.validation.band import PredictionBand


@cache
def shipped_band() -> PredictionBand:
    text = (resources.files("sp_planner") / "data" / "prediction_band.json").read_text(encoding="utf-8")
    return PredictionBand.model_validate_json(text)


def ties_with_first(ranked: Sequence[PlanEstimate], band: PredictionBand) -> int:
    """How many plans after the first fit and are slower by less than the ranking band."""
    if not ranked or not ranked[0].fits:
        return 0
    limit = ranked[0].step_time_s * (1.0 + band.ranking_band_percent / 100.0)
    count = 0
    for est in ranked[1:]:
        if not est.fits or est.step_time_s >= limit:
            break
        count += 1
    return count


def band_clause(ranked: Sequence[PlanEstimate], band: PredictionBand, *, moe: bool = False) -> str:
    """A sentence on the first plan's likely step range and the plans it cannot be told apart from
    ("" if none). The range scales the step by the corpus's measured-over-predicted step ratios
    (10th-90th percentile, validation.band), from the MoE rows for an MoE model when there are any."""
    if not ranked or not ranked[0].fits:
        return ""
    first = ranked[0]
    span = band.moe_step_range if moe and band.moe_step_range is not None else band.step_range
    runs = "MoE validation runs" if span is not band.step_range else "validation runs"
    text = (f"Its step may be {first.step_time_s * span.low_ratio:.3g}-{first.step_time_s * span.high_ratio:.3g} s "
            f"(in 80% of {span.rows} {runs} the measured step was {span.low_ratio:.2f}-{span.high_ratio:.2f}x "
            f"the predicted one; the median error of all {band.rows} is {band.absolute_band_percent:g}%).")
    ties = ties_with_first(ranked, band)
    if ties:
        which = "plan 2" if ties == 1 else f"plans 2-{ties + 1}"
        text += (f" {which.capitalize()} {'is' if ties == 1 else 'are'} within {band.ranking_band_percent:g}% of it, "
                 "inside the model's ranking band (the median error of the predicted ratio between two "
                 f"runs of one validation group, over {band.pairs} pairs): treat them as ties; "
                 "`sp-calibrate` on this cluster or `sp-run` of each plan would separate them.")
    return text

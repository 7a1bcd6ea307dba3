"""validation.band: the prediction band from the scored corpus, and the shipped copy kept in step."""

import json
from importlib import resources

import pytest

from sp_planner.validation.band import PredictionBand, StepRange, prediction_band
from sp_planner.validation.score import ScoredRow, ValidationResult


def _row(id_: str, group: str, speed_error_percent: float, moe: bool = False) -> ScoredRow:
    return ScoredRow.model_construct(id=id_, group=group, speed_error_percent=speed_error_percent, moe=moe)


def test_band_by_hand():
    # Group g: speeds 1.10, 1.21, 1.00 -> pair errors |1.1/1.21-1| = 0.0909, |1.1/1-1| = 0.1,
    # |1.21/1-1| = 0.21; median 0.1. Group h has one row (no pair). Single errors 10, 21, 0, 30:
    # median 15.5.
    # Step range: measured/predicted step ratios 0.70, 1.00, 1.10, 1.21; linear percentiles at
    # positions 0.3 and 2.7: 0.70 + 0.3 x 0.30 = 0.79 and 1.10 + 0.7 x 0.11 = 1.177. The MoE rows
    # a-c (1.00, 1.10, 1.21): positions 0.2 and 1.8 give 1.02 and 1.10 + 0.8 x 0.11 = 1.188.
    rows = (_row("a", "g", 10.0, True), _row("b", "g", 21.0, True), _row("c", "g", 0.0, True), _row("d", "h", -30.0))
    result = ValidationResult.model_construct(rows=rows, skipped=(), mape_percent=None, groups=())
    assert prediction_band(result) == PredictionBand(
        ranking_band_percent=10.0, absolute_band_percent=15.5, rows=4, pairs=3,
        step_range=StepRange(low_ratio=0.79, high_ratio=1.177, rows=4),
        moe_step_range=StepRange(low_ratio=1.02, high_ratio=1.188, rows=3))
    one_moe = (rows[0], _row("b", "g", 21.0), rows[3])
    dense = ValidationResult.model_construct(rows=one_moe, skipped=(), mape_percent=None, groups=())
    assert prediction_band(dense).moe_step_range is None  # one MoE row is too few for a range


def test_shipped_band_matches_the_corpus(scored):
    shipped = json.loads((resources.files("sp_planner") / "data" / "prediction_band.json").read_text())
    assert PredictionBand(**shipped) == prediction_band(scored), (
        "sp_planner/data/prediction_band.json is stale: write prediction_band(score_corpus(...)) to it")


def test_no_pairs_is_an_error():
    result = ValidationResult.model_construct(rows=(_row("a", "g", 1.0),), skipped=(), mape_percent=None, groups=())
    with pytest.raises(ValueError, match="no group has two scored rows"):
        prediction_band(result)

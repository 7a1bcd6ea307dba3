"""validation.band: the prediction band from the scored corpus, and the shipped copy kept in step."""

import json
from importlib import resources

import pytest

from sp_planner.validation.band import PredictionBand, prediction_band
from sp_planner.validation.score import ScoredRow, ValidationResult


def _row(id_: str, group: str, speed_error_percent: float) -> ScoredRow:
    return ScoredRow.model_construct(id=id_, group=group, speed_error_percent=speed_error_percent)


def test_band_by_hand():
    # Group g: speeds 1.10, 1.21, 1.00 -> pair errors |1.1/1.21-1| = 0.0909, |1.1/1-1| = 0.1,
    # |1.21/1-1| = 0.21; median 0.1. Group h has one row (no pair). Single errors 10, 21, 0, 30:
    # median 15.5.
    rows = (_row("a", "g", 10.0), _row("b", "g", 21.0), _row("c", "g", 0.0), _row("d", "h", -30.0))
    result = ValidationResult.model_construct(rows=rows, skipped=(), mape_percent=None, groups=())
    assert prediction_band(result) == PredictionBand(ranking_band_percent=10.0, absolute_band_percent=15.5,
                                                     rows=4, pairs=3)


def test_shipped_band_matches_the_corpus(scored):
    shipped = json.loads((resources.files("sp_planner") / "data" / "prediction_band.json").read_text())
    assert PredictionBand(**shipped) == prediction_band(scored), (
        "sp_planner/data/prediction_band.json is stale: write prediction_band(score_corpus(...)) to it")


def test_no_pairs_is_an_error():
    result = ValidationResult.model_construct(rows=(_row("a", "g", 1.0),), skipped=(), mape_percent=None, groups=())
    with pytest.raises(ValueError, match="no group has two scored rows"):
        prediction_band(result)

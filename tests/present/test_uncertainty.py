"""present.uncertainty: plans inside the ranking band of the first are ties, and the text says so."""

from sp_planner.estimate import PlanEstimate
from sp_planner.present.uncertainty import band_clause, ties_with_first
from sp_planner.validation.band import PredictionBand

BAND = PredictionBand(ranking_band_percent=5.0, absolute_band_percent=10.0, rows=64, pairs=186)


def _est(step_s: float, fits: bool = True) -> PlanEstimate:
    return PlanEstimate.model_construct(step_time_s=step_s, fits=fits)


def test_ties_stop_at_the_band_or_the_first_plan_that_does_not_fit():
    assert ties_with_first([_est(100), _est(104.9), _est(105.0), _est(101)], BAND) == 1
    assert ties_with_first([_est(100), _est(101), _est(102, fits=False), _est(103)], BAND) == 1
    assert ties_with_first([_est(100, fits=False), _est(101)], BAND) == 0


def test_clause_gives_the_range_and_names_what_would_separate_ties():
    text = band_clause([_est(100), _est(102), _est(104), _est(200)], BAND)
    assert "may be 90-110 s" in text and "median error of 64 validation runs is 10%" in text
    assert "Plans 2-3 are within 5% of it" in text and "`sp-calibrate`" in text and "`sp-run`" in text
    assert "ties" not in band_clause([_est(100), _est(200)], BAND)

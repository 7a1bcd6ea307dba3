"""present.uncertainty: plans inside the ranking band of the first are ties, and the text says so."""

from sp_planner.estimate import PlanEstimate
from sp_planner.present.uncertainty import band_clause, ties_with_first
from sp_planner.validation.band import PredictionBand, StepRange

BAND = PredictionBand(ranking_band_percent=5.0, absolute_band_percent=10.0, rows=64, pairs=186,
                      step_range=StepRange(low_ratio=0.9, high_ratio=1.3, rows=64),
                      moe_step_range=StepRange(low_ratio=1.2, high_ratio=3.0, rows=5))


def _est(step_s: float, fits: bool = True) -> PlanEstimate:
    return PlanEstimate.model_construct(step_time_s=step_s, fits=fits)


def test_ties_stop_at_the_band_or_the_first_plan_that_does_not_fit():
    assert ties_with_first([_est(100), _est(104.9), _est(105.0), _est(101)], BAND) == 1
    assert ties_with_first([_est(100), _est(101), _est(102, fits=False), _est(103)], BAND) == 1
    assert ties_with_first([_est(100, fits=False), _est(101)], BAND) == 0


def test_clause_gives_the_range_and_names_what_would_separate_ties():
    text = band_clause([_est(100), _est(102), _est(104), _est(200)], BAND)
    # The range is the step scaled by the measured/predicted ratios, not a symmetric +-10%.
    assert "may be 90-130 s" in text and "in 80% of 64 validation runs" in text
    assert "0.90-1.30x the predicted one" in text and "median error of all 64 is 10%" in text
    assert "Plans 2-3 are within 5% of it" in text and "`sp-calibrate`" in text and "`sp-run`" in text
    assert "ties" not in band_clause([_est(100), _est(200)], BAND)


def test_moe_models_take_the_range_of_the_moe_rows():
    text = band_clause([_est(100), _est(200)], BAND, moe=True)
    assert "may be 120-300 s" in text and "in 80% of 5 MoE validation runs" in text
    dense_only = BAND.model_copy(update={"moe_step_range": None})
    assert "may be 90-130 s" in band_clause([_est(100), _est(200)], dense_only, moe=True)

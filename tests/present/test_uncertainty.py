"""present.uncertainty: plans inside the ranking band of the first are ties, and the text says so
and names the class of validation runs the band comes from."""

from sp_planner.estimate import PlanEstimate
from sp_planner.present.uncertainty import band_clause, plan_band, runs_described, shipped_band, ties_with_first
from sp_planner.validation.band import ClassBand, StepRange

BAND = ClassBand(generation="hopper", moe=False, ranking_band_percent=5.0, absolute_band_percent=10.0, rows=64,
                 pairs=186, step_range=StepRange(low_ratio=0.9, high_ratio=1.3, rows=64))


def _est(step_s: float, fits: bool = True) -> PlanEstimate:
    return PlanEstimate.model_construct(step_time_s=step_s, fits=fits)


def test_ties_stop_at_the_band_or_the_first_plan_that_does_not_fit():
    assert ties_with_first([_est(100), _est(104.9), _est(105.0), _est(101)], BAND) == 1
    assert ties_with_first([_est(100), _est(101), _est(102, fits=False), _est(103)], BAND) == 1
    assert ties_with_first([_est(100, fits=False), _est(101)], BAND) == 0


def test_clause_gives_the_range_and_names_what_would_separate_ties():
    text = band_clause([_est(100), _est(102), _est(104), _est(200)], BAND)
    # The range is the step scaled by the measured/predicted ratios, not a symmetric +-10%.
    assert "may be 90-130 s" in text and "in 80% of 64 validation runs of dense models on Hopper GPUs" in text
    assert "was -10% to +30% off the predicted one" in text and "their median error is 10%" in text
    assert "Plans 2-3 are within 5% of it" in text and "over 186 pairs" in text
    assert "`sp-calibrate`" in text and "`sp-run`" in text
    assert "ties" not in band_clause([_est(100), _est(200)], BAND)


def test_classes_are_described_by_what_they_span():
    any_gpu = BAND.model_copy(update={"generation": None, "moe": True})
    assert runs_described(any_gpu) == "64 validation runs of MoE models"
    assert runs_described(BAND.model_copy(update={"generation": None, "moe": None})) == "64 validation runs"
    assert runs_described(BAND.model_copy(update={"generation": "blackwell"})) == (
        "64 validation runs of dense models on Blackwell GPUs")


def test_shipped_classes_reach_plans_by_hardware_and_model_kind():
    # The shipped corpus has dense Ampere and Blackwell MoE classes; the L40S has no generation
    # and takes the dense rows of every GPU.
    assert (plan_band("a800", moe=False).generation, plan_band("a800", moe=False).moe) == ("ampere", False)
    gb200 = plan_band("gb200-nvl72", moe=True)
    assert (gb200.generation, gb200.moe) == ("blackwell", True)
    l40s = plan_band("l40s", moe=False)
    assert (l40s.generation, l40s.moe) == (None, False) and l40s.rows < shipped_band().corpus.rows


def test_a_band_over_every_gpu_says_why_the_plan_has_none_of_its_own():
    every_gpu = BAND.model_copy(update={"generation": None, "moe": True, "rows": 19})
    # Hopper MoE runs are too few for a class (validation.band); the L40S has no generation.
    hopper = band_clause([_est(100), _est(200)], every_gpu, hardware_name="h100-sxm")
    assert ("19 validation runs of MoE models, too few of them on Hopper GPUs for a band of their own, "
            "the measured step") in hopper
    l40s = band_clause([_est(100), _est(200)], every_gpu, hardware_name="L40S")
    assert "19 validation runs of MoE models, none on L40S, the measured step" in l40s
    # A user profile names its GPU apart from its name (cost.families.profile_key).
    mine = band_clause([_est(100), _est(200)], every_gpu, hardware_name="my-h100", gpu_key="h100-sxm")
    assert "too few of them on Hopper GPUs" in mine
    assert "none on my-h100" in band_clause([_est(100), _est(200)], every_gpu, hardware_name="my-h100")
    # Ascend's chips are NPUs, not GPUs.
    ascend = band_clause([_est(100), _est(200)], every_gpu, hardware_name="ascend-910b")
    assert "too few of them on Ascend NPUs for a band of their own" in ascend and "Ascend GPUs" not in ascend
    # A generation's own class needs no note.
    assert "validation runs of dense models on Hopper GPUs the measured step" in band_clause(
        [_est(100), _est(200)], BAND, hardware_name="h100-sxm")


def test_the_range_is_in_the_unit_of_the_step():
    # A 3,000 s step: 2,700-3,900 s (was "2.7e+03-3.9e+03 s"); a 0.5 s step, which why_this_plan
    # gives as 500.0 ms: 450-650 ms (was "0.45-0.65 s").
    assert "Its step may be 2,700-3,900 s (" in band_clause([_est(3000), _est(9000)], BAND)
    assert "Its step may be 450-650 ms (" in band_clause([_est(0.5), _est(9)], BAND)

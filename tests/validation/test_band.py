"""validation.band: the prediction band from the scored corpus, by class of run, and the shipped
copy kept in step."""

import json
from importlib import resources
from pathlib import Path

import pytest

from sp_planner.present.uncertainty import band_table_markdown
from sp_planner.validation.band import ClassBand, PredictionBand, StepRange, band_for, prediction_band
from sp_planner.validation.score import ScoredRow, ValidationResult


def _row(id_: str, group: str, speed_error_percent: float, moe: bool = False, hardware: str = "H100-SXM") -> ScoredRow:
    return ScoredRow.model_construct(id=id_, group=group, speed_error_percent=speed_error_percent, moe=moe,
                                     hardware=hardware)


def _result(rows) -> ValidationResult:
    return ValidationResult.model_construct(rows=tuple(rows), skipped=(), mape_percent=None, groups=())


def test_corpus_band_by_hand():
    # Group g: speeds 1.10, 1.21, 1.00 -> pair errors |1.1/1.21-1| = 0.0909, |1.1/1-1| = 0.1,
    # |1.21/1-1| = 0.21; median 0.1. Group h has one row (no pair). Single errors 10, 21, 0, 30:
    # median 15.5. Step range: measured/predicted step ratios 0.70, 1.00, 1.10, 1.21; linear
    # percentiles at positions 0.3 and 2.7: 0.70 + 0.3 x 0.30 = 0.79 and 1.10 + 0.7 x 0.11 = 1.177.
    rows = (_row("a", "g", 10.0, True), _row("b", "g", 21.0, True), _row("c", "g", 0.0, True), _row("d", "h", -30.0))
    band = prediction_band(_result(rows))
    assert band.corpus == ClassBand(generation=None, moe=None, ranking_band_percent=10.0, absolute_band_percent=15.5,
                                    rows=4, pairs=3, step_range=StepRange(low_ratio=0.79, high_ratio=1.177, rows=4))
    assert band.classes == ()  # three MoE rows with three pairs and one dense row: no class is kept


def _class_rows():
    # Six dense A800 rows in one group (15 pairs), speed errors 0..5%; six dense H100 rows in one
    # group, 0..25% in steps of 5; six MoE H100 rows in two groups of three (6 pairs: too few).
    a800 = [_row(f"a{i}", "ga", float(i), hardware="A800") for i in range(6)]
    h100 = [_row(f"h{i}", "gh", 5.0 * i) for i in range(6)]
    moe = [_row(f"m{i}", f"gm{i % 2}", 40.0 + i, moe=True) for i in range(6)]
    return a800, h100, moe


def test_classes_by_hand():
    a800, h100, moe = _class_rows()
    band = prediction_band(_result(a800 + h100 + moe))
    keys = [(c.generation, c.moe) for c in band.classes]
    # Ampere and Hopper dense, and every dense row; the MoE rows have 6 pairs (< MIN_CLASS_PAIRS).
    assert keys == [("ampere", False), ("hopper", False), (None, False)]
    ampere = band.classes[0]
    # Speeds 1.00..1.05: median |s - 1| = (0.02 + 0.03) / 2 = 2.5%; percentiles at positions 0.5
    # and 4.5: 1.005 and 1.045. Pair errors |s_a / s_b - 1| = (s_b - s_a) / s_b for a before b:
    # five steps of 0.01 (0.95-0.99%), then four of 0.02 (0.02 / 1.05, / 1.04, / 1.03, / 1.02);
    # the median of 15 is the 8th smallest, 0.02 / 1.03 = 1.94% -> 1.9.
    assert (ampere.rows, ampere.pairs, ampere.absolute_band_percent) == (6, 15, 2.5)
    assert ampere.step_range == StepRange(low_ratio=1.005, high_ratio=1.045, rows=6)
    assert ampere.ranking_band_percent == 1.9
    hopper = band.classes[1]
    # Speeds 1.00..1.25 by 0.05: median error (10 + 15) / 2 = 12.5%; percentiles 1.025 and 1.225.
    assert hopper.absolute_band_percent == 12.5
    assert hopper.step_range == StepRange(low_ratio=1.025, high_ratio=1.225, rows=6)


def test_a_plan_takes_its_narrowest_kept_class():
    a800, h100, moe = _class_rows()
    band = prediction_band(_result(a800 + h100 + moe))
    assert band_for(band, hardware_name="a800", moe=False).generation == "ampere"
    assert band_for(band, hardware_name="A100-80GB", moe=False).generation == "ampere"  # the same generation
    # No Blackwell row: the dense class; an unknown profile likewise.
    b200 = band_for(band, hardware_name="b200", moe=False)
    assert (b200.generation, b200.moe) == (None, False)
    assert band_for(band, hardware_name="my-cluster", moe=False).rows == 12
    # No MoE class was kept: the whole corpus.
    assert band_for(band, hardware_name="h100-sxm", moe=True) == band.corpus


def test_shipped_band_matches_the_corpus(scored):
    shipped = json.loads((resources.files("sp_planner") / "data" / "prediction_band.json").read_text())
    assert PredictionBand(**shipped) == prediction_band(scored), (
        "sp_planner/data/prediction_band.json is stale: run scripts/regen_validation.py")


def test_no_pairs_is_an_error():
    with pytest.raises(ValueError, match="no group has two scored rows"):
        prediction_band(_result((_row("a", "g", 1.0),)))


def test_docs_table_matches_the_corpus(scored):
    docs = (Path(__file__).resolve().parents[2] / "docs" / "cost-model.md").read_text(encoding="utf-8")
    table = docs.split("<!-- prediction-band:begin -->\n", 1)[1].split("<!-- prediction-band:end -->", 1)[0]
    assert table.rstrip("\n") == band_table_markdown(prediction_band(scored)), (
        "docs/cost-model.md's prediction-band table is stale: run scripts/regen_validation.py")

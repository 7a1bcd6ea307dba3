"""The comparison with a built-in profile uses the cost model's own predictions."""

from __future__ import annotations

import pytest
from rich.console import Console

from sp_planner.calibration.fit import calibration_data
from sp_planner.calibration.summary import compute_rows, print_summary
from sp_planner.catalog import load_hardware

H100 = load_hardware("H100-SXM")


def test_predictions_are_the_cost_model_figures(make_measurements):
    rows = {figure: (measured, predicted) for figure, measured, predicted in
            compute_rows(calibration_data(make_measurements()), H100)}
    assert rows["GEMM, layer shapes (bfloat16)"] == pytest.approx((700e12, 989e12 * 0.803))
    assert rows["attention fwd full @ 8K"][1] == pytest.approx(989e12 * 0.653)  # FA3 curve point at 8192
    # causal, in the half-FLOP convention: peak x eff x FA3's causal/non-causal forward ratio at 8K
    # (FA3 paper Fig. 5, d 128: 602 / 646 TFLOPS)
    assert rows["attention fwd causal @ 8K"][1] == pytest.approx(989e12 * 0.653 * round(602 / 646, 3))
    assert rows["attention bwd full @ 1K"][1] == pytest.approx(989e12 * 0.429)
    assert rows["memory copy (read + write)"] == pytest.approx((2.8e12, 3.35e12))


def test_summary_without_a_base_says_so(make_measurements):
    data = calibration_data(make_measurements(device_name="cpu"))
    assert all(predicted is None for *_, predicted in compute_rows(data, None))
    console = Console(width=200, record=True)
    print_summary(data, None, console)
    text = console.export_text()
    assert "No built-in profile matches 'cpu'; pass --base NAME to compare." in text
    assert "predicted" not in text


def test_summary_with_a_base_shows_ratios(make_measurements):
    console = Console(width=200, record=True)
    print_summary(calibration_data(make_measurements()), H100, console)
    text = console.export_text()
    assert "H100-SXM predicts" in text
    # GEMM 700 of a predicted 794.2 TFLOP/s; all_gather on 8 ranks 327 GB/s of 0.82 x 450 = 369 GB/s
    assert "0.881" in text and "327 GB/s" in text and "369 GB/s" in text

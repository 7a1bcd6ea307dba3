from __future__ import annotations

import json

import pytest

from sp_planner.errors import UserInputError
from sp_planner.report.runs import Comparison, compare_runs, read_run_record


def _write(tmp_path, data, name="result.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_read_run_record_keeps_the_documented_fields_and_the_file_name(result_json, tmp_path):
    run = read_run_record(_write(tmp_path, result_json()))
    assert run.source == "result.json" and run.passed
    assert run.config.ulysses == 2 and run.config.ring == 2
    assert run.comm_bytes_measured.all_to_all == 1000
    assert run.label == "u2 r2 tp1 S=4096 float32 cpu"


def test_comparisons_give_the_signed_error_in_percent(result_json, tmp_path):
    run = read_run_record(_write(tmp_path, result_json()))
    rows = {c.quantity: c for c in compare_runs([run])}
    assert rows["all-to-all bytes sent per rank"].error_percent == 0.0
    assert rows["ring P2P bytes sent per rank"].error_percent == 0.0  # 0 predicted, 0 sent
    time = rows["attention fwd+bwd time"]
    assert time.measured == pytest.approx(0.6) and time.error_percent == pytest.approx(20.0)
    assert rows["peak memory per rank"].error_percent == pytest.approx(25.0)  # (1000 - 800) / 800


def test_quantities_without_a_prediction_are_left_out_or_have_no_error(result_json, tmp_path):
    run = read_run_record(_write(tmp_path, result_json(predicted_time_s=None, predicted_memory_bytes=None)))
    assert [c.quantity for c in compare_runs([run])] == [
        "all-to-all bytes sent per rank", "ring P2P bytes sent per rank"]
    unexpected = Comparison(run=1, quantity="q", unit="bytes", predicted=0, measured=5)
    assert unexpected.error_percent is None


def test_a_malformed_or_incomplete_result_is_one_user_error(result_json, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(UserInputError, match="broken.json is malformed"):
        read_run_record(broken)
    data = result_json()
    del data["comm_bytes_measured"]
    with pytest.raises(UserInputError, match="comm_bytes_measured"):
        read_run_record(_write(tmp_path, data, "partial.json"))
    with pytest.raises(UserInputError, match="does not exist"):
        read_run_record(tmp_path / "missing.json")


def test_all_gather_cp_bytes_are_compared(result_json, tmp_path):
    # An all-gather CP run sends its ring-axis bytes in all-gathers and reduce-scatters, not P2P:
    # the report compared only all-to-all and P2P bytes, 0 against 0, and none of the run's traffic.
    sent = {"all_to_all": 0, "p2p": 0, "all_gather": 524288, "reduce_scatter": 524288}
    run = read_run_record(_write(tmp_path, result_json(comm_bytes_measured=sent, comm_bytes_predicted={
        **sent, "reduce_scatter": 262144})))
    rows = {c.quantity: c for c in compare_runs([run])}
    assert rows["all-gather CP bytes sent per rank"].measured == 524288
    assert rows["all-gather CP bytes sent per rank"].error_percent == 0.0
    assert rows["reduce-scatter CP bytes sent per rank"].error_percent == pytest.approx(100.0)
    # A P2P run lists no all-gather CP rows.
    assert not any("CP bytes" in c.quantity for c in compare_runs([read_run_record(_write(tmp_path, result_json()))]))

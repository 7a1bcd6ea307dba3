"""sp-calibrate --measurements given a plan file (both are sp-planner JSON): one line naming the
mix-up and the file it takes, not pydantic's list of every plan field as an extra input."""

from __future__ import annotations

import json

from sp_planner.cli import calibrate_cmd


def test_a_plan_file_is_named_as_one(run_main, plan_json, tmp_path):
    out = tmp_path / "refit.yaml"
    result = run_main(calibrate_cmd, "--measurements", plan_json, "--out", out)
    assert result.exit_code == 2
    assert result.stderr == (f"error: {plan_json} is a plan file (sp-plan --out); --measurements takes the raw "
                             "measurements that sp-calibrate --save-measurements wrote\n")
    assert result.stdout == "" and list(tmp_path.iterdir()) == []


def test_a_plan_file_of_another_schema_version_too(run_main, plan_json, tmp_path):
    other = tmp_path / "plan-v2.json"
    other.write_text(json.dumps({**json.loads(plan_json.read_text()), "schema_version": "sp-planner.plan/2"}))
    result = run_main(calibrate_cmd, "--measurements", other, "--out", tmp_path / "refit.yaml")
    assert (result.exit_code, result.stderr.split(";")[0]) == (2, f"error: {other} is a plan file (sp-plan --out)")


def test_other_invalid_measurements_still_name_their_fields(run_main, tmp_path):
    path = tmp_path / "raw.json"
    path.write_text(json.dumps({"environment": 1, "schema_version": 3}))
    result = run_main(calibrate_cmd, "--measurements", path, "--out", tmp_path / "refit.yaml")
    assert result.exit_code == 2
    assert result.stderr == (f"error: measurements file {path} is invalid: environment: expected a mapping, got 1; "
                             "schema_version: Extra inputs are not permitted\n")


def test_options_that_shape_a_measurement_are_refused_with_saved_measurements(run_main, tmp_path):
    # --measurements measures nothing: --device cuda, --quick, --model, --nproc-per-node and --timeout were
    # accepted and ignored without a word.
    raw = tmp_path / "raw.json"
    raw.write_text("{}")
    out = tmp_path / "refit.yaml"
    result = run_main(calibrate_cmd, "--measurements", raw, "--device", "cuda", "--quick", "--out", out)
    assert result.exit_code == 2
    assert result.stderr == (f"error: --device, --quick: --measurements {raw} measures nothing (it refits saved "
                             "measurements), so these options would do nothing; drop --device and --quick, or drop "
                             "--measurements to measure again\n")
    for option in (["--model", "llama3-8b"], ["--nproc-per-node", "4"], ["--timeout", "30"]):
        result = run_main(calibrate_cmd, "--measurements", raw, *option, "--out", out)
        assert result.exit_code == 2 and result.stderr.startswith(f"error: {option[0]}: --measurements"), result.stderr
    assert not out.exists()

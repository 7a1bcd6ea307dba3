"""A hand-edited plan file whose value pydantic's lax mode would coerce (tp 2.0, a bool "yes") is
refused by every tool that reads it, in one line naming the field, before it writes anything."""

from __future__ import annotations

import json

import pytest

from sp_planner.cli import report_cmd, run_cmd, run_modes, simulate_cmd
from tests.cli.conftest import assert_one_line_error


@pytest.fixture
def edited(plan_json, tmp_path):
    """edited(field, value) -> the path of plan_json with plan.<field> set to `value`."""
    def edit(field: str, value: object):
        doc = json.loads(plan_json.read_text())
        doc["plan"][field] = value
        path = tmp_path / "plan.json"
        path.write_text(json.dumps(doc))
        return path
    return edit


@pytest.mark.parametrize("field, value, said", [
    ("tp", 2.0, "plan.tp: expected a whole number, got 2.0"),
    ("tp", "2", 'plan.tp: expected a whole number, got "2"'),
    ("reshard_after_forward", "yes", 'plan.reshard_after_forward: expected true or false, got "yes"'),
])
@pytest.mark.parametrize("tool", ["sp-run", "sp-simulate", "sp-report"])
def test_a_coercible_value_is_refused_by_every_reader(run_main, edited, tmp_path, monkeypatch, tool, field, value,
                                                       said):
    monkeypatch.setattr(run_modes, "run_local", lambda *a, **k: pytest.fail("launched a refused plan"))
    path = edited(field, value)
    out = tmp_path / "out"
    args = {"sp-run": (run_cmd, "--plan", path, "--out", out / "result.json"),
            "sp-simulate": (simulate_cmd, path, "--out-dir", out),
            "sp-report": (report_cmd, path, "--out", out)}[tool]
    assert_one_line_error(run_main(*args), f"error: plan file {path} is invalid: {said}\n")
    assert not out.exists()


def test_the_plan_sp_plan_wrote_still_reads(run_main, plan_json, tmp_path):
    # Strict reading takes every value as sp-plan writes it (tuples as lists, byte counts as whole numbers).
    for args in ((simulate_cmd, plan_json, "--out-dir", tmp_path / "sim"),
                 (report_cmd, plan_json, "--out", tmp_path / "rep")):
        result = run_main(*args)
        assert result.exit_code == 0, result.stderr

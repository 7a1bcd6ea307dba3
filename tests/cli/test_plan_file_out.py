"""cli.plan_file_out: the framework plan.json names under --framework all, and the time it holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sp_planner.cli import report_cmd, simulate_cmd
from sp_planner.cost.runtime import DEEPSPEED_RUNTIME, MEGATRON_RUNTIME
from sp_planner.planfile import read_plan_file
from sp_planner.search import evaluate
from tests.cli.conftest import README_QUESTION, notes_unwrapped


def _written(sp_plan, tmp_path, *pins: str):
    """(plan file, sp-plan's notes) for the README's question under --framework all with `pins`,
    written as plan.json in the working directory `tmp_path` (a short path: the notes name it, and a
    long temporary folder's name would not fit 80 columns on one line)."""
    assert Path.cwd() == tmp_path
    out = Path("plan.json")
    result = sp_plan(*README_QUESTION, *pins, "--framework", "all", "--top", "2", "--out", out)
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines(keepends=True) if line != f"wrote {out}\n"]
    return read_plan_file(out), " ".join(notes_unwrapped("".join(lines)))


def test_a_plan_only_deepspeed_runs_is_written_as_deepspeeds_and_timed_so(sp_plan, tmp_path, monkeypatch):
    # Llama-3-8B (32 query, 8 KV heads) at 128K on 2 x 8 A800 with ulysses 16: plan 1 is ZeRO-2, which
    # Megatron's a2a cannot split (8 KV heads over 16) nor MindSpeed express; DeepSpeed-Ulysses runs it. The
    # file named megatron; it names deepspeed and holds the plan as DeepSpeed's runtime times it (221.40 s,
    # where Megatron's runtime ranked it at 220.02 s), as sp-simulate and sp-report time it again.
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.chdir(tmp_path)
    pf, notes = _written(sp_plan, tmp_path, "--tp", "1", "--ulysses", "16")
    assert (pf.plan.ulysses, pf.plan.zero, pf.framework, pf.runtime) == (16, 2, "deepspeed", DEEPSPEED_RUNTIME)
    where = dict(num_nodes=2, gpus_per_node=8)
    deepspeed = evaluate(pf.model, pf.hardware, pf.workload, pf.plan, **where, runtime=DEEPSPEED_RUNTIME)
    megatron = evaluate(pf.model, pf.hardware, pf.workload, pf.plan, **where, runtime=MEGATRON_RUNTIME)
    assert pf.estimate == deepspeed and round(deepspeed.step_time_s, 2) == 221.40
    assert round(megatron.step_time_s, 2) == 220.02
    assert ("note: plan.json names deepspeed, the first framework whose flags run plan 1, and holds "
            "its time as deepspeed runs it, 221.40 s per step (Megatron's runtime ranked it at 220.02 s)") in notes


def test_a_plan_no_framework_runs_names_none(sp_plan, run_main, tmp_path, monkeypatch):
    # tp 4 x ulysses 4 on A800s: Megatron's a2a cannot split 2 KV heads per TP rank over 4, DeepSpeed-Ulysses
    # and yunchang take no TP with it, torchtitan no Ulysses, and MindSpeed's flags (which express it) are
    # for Ascend NPUs. The file named megatron; it names none, timed as --framework all timed it.
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.chdir(tmp_path)
    pf, notes = _written(sp_plan, tmp_path, "--tp", "4", "--ulysses", "4")
    assert (pf.plan.tp, pf.plan.ulysses, pf.framework, pf.runtime) == (4, 4, None, MEGATRON_RUNTIME)
    assert "names no framework (framework null): no framework's flags run plan 1" in notes
    plan_file = tmp_path / "plan.json"
    simulated = run_main(simulate_cmd, plan_file, "--out-dir", tmp_path / "sim")
    assert simulated.exit_code == 0, simulated.stderr
    timeline = json.loads((tmp_path / "sim" / "timeline.json").read_text())
    assert pf.estimate is not None and timeline["analytic_step_time_s"] == pf.estimate.step_time_s
    # sp-report reads it as sp-plan --framework all's answer: every plan ranked, none framework's own.
    reported = run_main(report_cmd, plan_file, "--out", tmp_path / "report")
    assert reported.exit_code == 0, reported.stderr
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["framework"] == "all" and summary["framework_plans"] == summary["plans"]


@pytest.mark.parametrize("pins", [(), ("--ulysses", "2", "--ring", "4")])
def test_a_plan_megatron_runs_is_written_as_before(sp_plan, tmp_path, monkeypatch, pins):
    # Megatron's flags express the README's plan 1 (and a2a+p2p USP): the file names megatron, with the
    # estimate the table ranks, and sp-plan says nothing more.
    monkeypatch.chdir(tmp_path)
    pf, notes = _written(sp_plan, tmp_path, *pins)
    assert pf.framework == "megatron" and pf.runtime == MEGATRON_RUNTIME and "names" not in notes
    assert pf.estimate == evaluate(pf.model, pf.hardware, pf.workload, pf.plan, num_nodes=2, gpus_per_node=8)

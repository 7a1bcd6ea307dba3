"""sp-report through its console entry point: a report for a plan file, and one-line errors."""

from __future__ import annotations

import json

import pytest

from sp_planner.cli import report_cmd
from sp_planner.layout import rank_groups
from sp_planner.planfile import PlanFile, write_plan_file
from tests.sim.test_simulate_cmd import REFUSED, edited_plan_file


def sp_report(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        report_cmd.main([str(a) for a in args])
    captured = capsys.readouterr()
    return done.value.code, captured.out, captured.err


@pytest.fixture
def plan_path(question, tmp_path):
    """A plan file holding the search's third plan, as sp-plan --out would write it."""
    chosen = question.result.ranked[2]
    path = tmp_path / "plan.json"
    write_plan_file(path, PlanFile(
        model=question.model, hardware=question.hardware, workload=question.workload,
        num_nodes=question.num_nodes, gpus_per_node=question.gpus_per_node, plan=chosen.plan, estimate=chosen,
        rank_groups=rank_groups(chosen.plan),
    ))
    return path


def _run_of(question, plan, result_json, **changes) -> dict:
    """An sp-run result.json of `plan`'s attention group (as sp-run --plan runs it), with `changes`."""
    config = {**result_json()["config"], "ulysses": plan.ulysses, "ring": plan.ring, "tp": plan.tp,
              "batch": plan.micro_batch, "seq_len": question.workload.seq_len,
              "num_heads": question.model.num_heads, "num_kv_heads": question.model.num_kv_heads,
              "head_dim": question.model.head_dim, "causal": True, "dtype": "bfloat16", "device": "cuda"}
    return result_json(config={**config, **changes})


def test_sp_report_writes_a_report_for_the_plan_file_with_runs(capsys, question, plan_path, result_json, tmp_path):
    run = tmp_path / "result.json"
    run.write_text(json.dumps(_run_of(question, question.result.ranked[2].plan, result_json)))
    code, out, err = sp_report(capsys, plan_path, "--run", run, "--out", tmp_path / "rep")
    assert (code, err) == (0, "")
    assert out.strip() == str(tmp_path / "rep" / "index.html")
    html = (tmp_path / "rep" / "index.html").read_text()
    assert '<section id="runs">' in html and '<figure id="fig-runs">' in html
    # The plan file's plan is the one recommended, and the report says the search ranks another first.
    assert "This is the plan of the plan file" in html
    # Compared with the plan ranked after it, which is slower (never a negative "slower").
    assert "Against the next slower plan" in html and ") is -" not in html
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert summary["plans"][0]["tp"] == question.result.ranked[0].plan.tp
    assert summary["candidates_evaluated"] == question.result.candidates_evaluated


@pytest.mark.parametrize("problem, expected", [
    ("missing_plan", "plan file {tmp}/nope.json does not exist"),
    ("bad_run", "run result file {tmp}/bad.json is malformed"),
    ("foreign_out", "report folder {tmp}/mine holds files that are not part of a report (notes.txt)"),
])
def test_sp_report_bad_input_is_one_line_and_exit_2(capsys, plan_path, tmp_path, problem, expected):
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    args = {
        "missing_plan": [tmp_path / "nope.json", "--out", tmp_path / "rep"],
        "bad_run": [plan_path, "--run", tmp_path / "bad.json", "--out", tmp_path / "rep"],
        "foreign_out": [plan_path, "--out", tmp_path / "mine"],
    }[problem]
    code, out, err = sp_report(capsys, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert expected.format(tmp=tmp_path) in err
    assert not (tmp_path / "rep").exists()


def test_sp_report_refuses_a_run_of_another_configuration_saying_what_differs(capsys, question, plan_path,
                                                                               result_json, tmp_path):
    plan = question.result.ranked[2].plan
    run = tmp_path / "result.json"
    run.write_text(json.dumps(_run_of(question, plan, result_json, seq_len=4096, device="cpu")))
    code, out, err = sp_report(capsys, plan_path, "--run", run, "--out", tmp_path / "rep")
    assert code == 2 and out == ""
    assert err == (f"error: run result {run} is not a run of this plan: seq_len 4096 (plan: 131072); "
                   f"device cpu (plan: cuda); run it with sp-run --plan {plan_path} --device cuda on the GPUs "
                   "it plans for, or plan for this CPU with a profile from sp-calibrate --device cpu\n")
    assert not (tmp_path / "rep").exists()


def test_sp_report_refuses_one_run_given_twice(capsys, question, plan_path, result_json, tmp_path):
    """The same result by two paths was two rows of "Measured runs", two of each prediction."""
    run = tmp_path / "result.json"
    run.write_text(json.dumps(_run_of(question, question.result.ranked[2].plan, result_json)))
    again = tmp_path / "sub" / ".." / "result.json"
    (tmp_path / "sub").mkdir()
    code, out, err = sp_report(capsys, plan_path, "--run", run, "--run", again, "--out", tmp_path / "rep")
    assert (code, out) == (2, "")
    assert err == (f"error: --run {again} is given twice (as --run {run}): the report would list one run as two; "
                   "give each result once\n")
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("hardware, edits, message", REFUSED)
def test_a_plan_that_cannot_run_is_refused_before_any_work(capsys, tmp_path, hardware, edits, message):
    # As sp-simulate refuses it (the same check, planfile_checks.check_plan_file_runs), not reported on.
    plan_file = edited_plan_file(tmp_path / "plan.json", hardware, edits)
    code, out, err = sp_report(capsys, plan_file, "--out", tmp_path / "rep")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]  # no report, no staging folder


def test_an_older_torchtitan_fp8_plan_is_reported_as_the_default_release_with_a_note(capsys, tmp_path, monkeypatch):
    # A torchtitan FP8 plan at tp 2 from before plan files recorded the release: timed as 0.3.0
    # (what sp-report timed it as then), with the note saying so (planfile_unrecorded.unrecorded_release).
    from sp_planner.catalog import load_hardware, load_model
    from sp_planner.plan import ParallelPlan
    from sp_planner.planfile import load_plan_file
    from sp_planner.specs.workload import Workload
    from tests.cli.conftest import notes_unwrapped

    monkeypatch.chdir(tmp_path)  # a short path: the note's lines fit the 80 columns
    monkeypatch.setenv("COLUMNS", "80")
    write_plan_file(tmp_path / "plan.json", PlanFile(
        model=load_model("llama3-8b"), hardware=load_hardware("h100-sxm"), workload=Workload(seq_len=32768,
        global_batch=8), num_nodes=1, gpus_per_node=8, framework="torchtitan", framework_version="0.2.2",
        plan=ParallelPlan(dp=2, tp=2, ring=2, precision="fp8")))
    doc = json.loads((tmp_path / "plan.json").read_text())
    del doc["framework_version"]
    (tmp_path / "plan.json").write_text(json.dumps(doc))
    code, out, err = sp_report(capsys, "plan.json", "--out", "r")
    assert code == 0 and out == "r/index.html\n"
    assert notes_unwrapped(err) == [f"note: {load_plan_file('plan.json').release_note}"]
    # 0.3.0's flags: it ships no FP8 config function for Llama-3-8B (0.2.x's TOML would have it).
    titan = json.loads((tmp_path / "r" / "summary.json").read_text())["plans"][0]["flags"]["torchtitan"]
    assert not titan["supported"] and "--framework-version 0.2.2" in titan["reason"]


def test_a_top_past_sys_maxsize_is_one_line_exit_2(capsys, tmp_path):
    # itertools.islice refused it after the search, a traceback (fuzzing, stop 57); bounded as sp-plan's.
    plan_file = edited_plan_file(tmp_path / "plan.json", "a800", {})
    code, out, err = sp_report(capsys, plan_file, "--out", tmp_path / "rep", "--top", str(2**64))
    assert (code, out) == (2, "")
    assert err == "error: Invalid value for '--top': Input should be less than or equal to 10000\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def test_a_question_too_large_to_search_names_the_fix_sp_report_has(capsys, tmp_path):
    # The search's refusal told sp-report's user to pin a degree or take fewer nodes, which sp-report
    # cannot (fuzzing, stop 57: sp-plan --tp 8 wrote the plan file, sp-report refused it).
    from sp_planner.catalog import load_hardware, load_model
    from sp_planner.plan import ParallelPlan
    from sp_planner.specs.workload import Workload

    plan_file = tmp_path / "plan.json"
    write_plan_file(plan_file, PlanFile(
        model=load_model("mixtral-8x7b"), hardware=load_hardware("a800"),
        workload=Workload(seq_len=4096, global_batch=8192), num_nodes=1024, gpus_per_node=8,
        plan=ParallelPlan(tp=8, dp=1024, ep=8, zero=1),
    ))
    code, out, err = sp_report(capsys, plan_file, "--out", tmp_path / "rep")
    assert (code, out) == (2, "")
    assert err == ("error: the plan file's question is too large for sp-report, which searches its whole space: "
                   "1024 nodes x 8 GPUs give 4,337,696 candidate plans, more than the 4,000,000 one search takes "
                   "on (about 30 s); write the report with sp-plan --report and a pinned degree (e.g. --tp 8), "
                   "which searches only what is pinned\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def test_sp_report_costs_every_candidate_once(capsys, question, plan_path, tmp_path, monkeypatch):
    # The report reads every candidate's row (plans.csv, the figures): the search keeps each as it
    # costs it (every_row), as sp-plan --report's does, instead of two more passes for the frame.
    from sp_planner.report import from_plan

    asked = []
    real = from_plan.search
    monkeypatch.setattr(from_plan, "search", lambda *a, **k: asked.append(k["every_row"]) or real(*a, **k))
    code, _, err = sp_report(capsys, plan_path, "--out", tmp_path / "rep")
    assert (code, err, asked) == (0, "", [True])
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert summary["candidates_evaluated"] == question.result.candidates_evaluated


def test_an_older_plan_whose_window_cannot_be_told_is_refused_and_writes_nothing(capsys, tmp_path):
    # The report searched it again as full attention (82.0 s a step for Mistral-7B-v0.1 at 128K on
    # 2 x 8 H100 against 27.6 s with its 4K window) and said nothing; sp-run refused it.
    from tests.catalog.hf_configs import MISTRAL_7B
    from tests.test_planfile_unrecorded import BEFORE_MLA, _hf_model, _older_file

    plan_file = _older_file(tmp_path, _hf_model(tmp_path, MISTRAL_7B), **BEFORE_MLA)
    code, out, err = sp_report(capsys, plan_file, "--out", tmp_path / "rep")
    assert code == 2 and out == "" and not (tmp_path / "rep").exists()
    assert err.startswith(f"error: plan file {plan_file} was written before plan files recorded the attention "
                          "window") and err.count("\n") == 1

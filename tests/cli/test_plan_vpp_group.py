"""sp-plan --vpp-group N: the interleaved schedule's micro-batch group pinned (Megatron's
--microbatch-group-size-per-virtual-pipeline-stage, which takes pp <= N <= m with m % N zero or at
least pp: schedules.py lines 1160-1180 at d98e8a6). Llama-3-8B at 8K on 2 x 8 H100, tp 2 x pp 4 x
vpp 2 x dp 2, 24 sequences of one: m 12, which Megatron runs in groups of 4 (its default), 6, 7, 8
or 12."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from sp_planner.cli import simulate_cmd
from sp_planner.plan import ParallelPlan
from sp_planner.planfile import read_plan_file
from sp_planner.search import evaluate
from tests.cli.conftest import assert_one_line_error

QUESTION = ["--model", "llama3-8b", "--hardware", "h100", "--nodes", "2", "--seq-len", "8k", "--global-batch", "24"]
PINNED = [*QUESTION, "--pp", "4", "--vpp", "2", "--tp", "2", "--dp", "2", "--ulysses", "1", "--ring", "1",
          "--micro-batch", "1", "--zero", "1", "--recompute", "none"]
FLAG = "--microbatch-group-size-per-virtual-pipeline-stage"


@pytest.mark.parametrize(("args", "expected"), [
    (["--vpp-group", "6"], "--vpp-group 6 sets the interleaved schedule's micro-batch group: it needs --vpp 2 or more"),
    (["--vpp", "1", "--vpp-group", "6"], "it needs --vpp 2 or more (not --vpp 1), or drop --vpp-group"),
    (["--pp", "4", "--vpp", "2", "--vpp-group", "2"], "--vpp-group 2 is below --pp 4: Megatron's micro-batch group "
                                                      "lies in [pp, m] (schedules.py); use --vpp-group 4 or more"),
    (["--vpp", "2", "--vpp-group", "0"], "Invalid value for '--vpp-group'"),
    (["--vpp", "2", "--vpp-group", "six"], "Invalid value for '--vpp-group'"),
    # Every degree and the micro-batch pinned: m 12, whose last group of 5 would be 2 < pp.
    ([*PINNED[len(QUESTION):], "--vpp-group", "5"],
     "the pinned plan breaks the vpp rule: vpp_group 5 with pp 4 and m 12: Megatron refuses it (schedules.py: "
     "pp <= N <= m, and m % N zero or at least pp); use one of 4, 6, 7, 8, 12, or leave it out"),
])
def test_a_group_no_plan_runs_is_refused_in_one_line(sp_plan, args, expected):
    assert_one_line_error(sp_plan(*QUESTION, *args), expected)


def test_a_group_that_leaves_no_plan_says_why(sp_plan):
    # N 25 above any plan's m (at most 24 micro-batches of one sequence): the vpp rule refuses all.
    result = sp_plan(*QUESTION, "--pp", "4", "--vpp", "2", "--vpp-group", "25")
    assert result.exit_code == 1
    text = " ".join(result.stdout.split())
    assert "breaks the vpp rule: vpp_group 25 with pp 4 and m " in text
    # The fix, checked by searching again: the group sp-plan picks.
    assert "without --vpp-group: letting sp-plan choose the micro-batch group; best plan" in text


@pytest.mark.parametrize("group", [6, 7, 8])
def test_the_pinned_group_is_priced_flagged_and_carried(sp_plan, group, tmp_path):
    plan_file = tmp_path / "plan.json"
    doc = json.loads(sp_plan(*PINNED, "--vpp-group", str(group), "--format", "json", "--out", plan_file).stdout)
    best = doc["plans"][0]
    assert best["vpp_group"] == group
    # The estimate is the plan with that group priced directly, on the question sp-plan asked (the
    # plan file's: its attention kernel and runtime).
    question = read_plan_file(plan_file)
    plan = ParallelPlan(dp=2, pp=4, vpp=2, tp=2, zero=1, vpp_group=group)
    assert question.plan == plan
    direct = evaluate(question.model, question.hardware, question.workload, plan, num_nodes=2, gpus_per_node=8,
                      runtime=question.runtime)
    assert best["step_time_s"] == direct.step_time_s and best["memory_peak_bytes"] == round(direct.memory_peak_bytes)
    unpinned = evaluate(question.model, question.hardware, question.workload,
                        plan.model_copy(update={"vpp_group": None}), num_nodes=2, gpus_per_node=8,
                        runtime=question.runtime)
    assert f"{FLAG} {group}\n" in best["flags"]["megatron"]["text"]
    # Megatron-LM's flag only: the others cannot run the group (pp divides m, so without it they could).
    assert not best["flags"]["torchtitan"]["supported"]
    assert best["flags"]["torchtitan"]["reason"].endswith("use --framework megatron or no --vpp-group")
    # Megatron's default, 4, unflagged; N = 6 to 8 run (vpp - 1)(N - pp) = 2 to 4 chunk forwards more
    # before the first backward, whose activations the first stage holds.
    default = json.loads(sp_plan(*PINNED, "--format", "json").stdout)["plans"][0]
    assert default["vpp_group"] == 4 and FLAG not in default["flags"]["megatron"]["text"]
    assert default["step_time_s"] == unpinned.step_time_s
    assert best["memory_peak_bytes"] > default["memory_peak_bytes"]
    table = pd.read_csv(io.StringIO(sp_plan(*PINNED, "--vpp-group", str(group), "--format", "csv").stdout))
    assert table["vpp_group"].tolist()[0] == group


def test_a_plan_file_with_a_pinned_group_round_trips(sp_plan, run_main, tmp_path):
    plan_file = tmp_path / "plan.json"
    planned = sp_plan(*PINNED, "--vpp-group", "6", "--format", "json", "--out", plan_file)
    assert planned.exit_code == 0, planned.stderr
    doc = json.loads(plan_file.read_text())
    assert doc["plan"]["vpp_group"] == 6
    assert doc["estimate"]["step_time_s"] == json.loads(planned.stdout)["plans"][0]["step_time_s"]
    result = run_main(simulate_cmd, plan_file, "--out-dir", tmp_path / "sim")
    assert result.exit_code == 0, result.stderr
    timeline = json.loads((tmp_path / "sim" / "timeline.json").read_text())
    assert timeline["analytic_step_time_s"] == doc["estimate"]["step_time_s"]
    # The simulator runs Megatron's order in groups of 6 (tests/sim/test_micro_batch_group_agreement.py).
    assert timeline["step_time_s"] == pytest.approx(doc["estimate"]["step_time_s"], rel=0.003)


def test_the_ranked_table_shows_a_pinned_group_in_the_pp_cell(sp_plan):
    # JSON, CSV and the flags carried --vpp-group 6, the table read 4v2 as for Megatron's default 4.
    args = [*QUESTION, "--pp", "4", "--vpp", "2", "--framework", "megatron"]

    def rows_and_legend(stdout: str) -> tuple[list[str], list[str]]:
        lines = stdout.splitlines()
        rule = next(i for i, line in enumerate(lines) if set(line.strip()) == {"─"})
        rows = lines[rule + 1:rule + 11]
        assert max(len(line) for line in lines[rule - 1:rule + 12]) <= 80  # header, rows, first legend
        return [row.split()[2] for row in rows], lines[rule + 11:rule + 13]

    pinned = sp_plan(*args, "--vpp-group", "6")
    assert pinned.exit_code == 0, pinned.stderr
    cells, legend = rows_and_legend(pinned.stdout)
    assert cells == ["4v2g6"] * 10
    assert legend[0].rstrip() == "pp 4v2g6: micro-batch groups of 6 (--vpp-group)"
    cells, legend = rows_and_legend(sp_plan(*args).stdout)
    assert cells == ["4v2"] * 10 and not legend[0].startswith("pp ")


def test_the_why_text_and_the_report_name_a_pinned_group(sp_plan, tmp_path):
    # The brief's command: --explain's "Why this plan" and the report's headline and recommendation
    # name the plan with its group, as the ranked table's pp cell does; unpinned they do not.
    args = [*QUESTION, "--pp", "4", "--vpp", "2", "--framework", "megatron", "--explain"]
    named = "micro batch 1, 2 virtual stages per rank in micro-batch groups of 6 takes"
    pinned = sp_plan(*args, "--vpp-group", "6", "--report", tmp_path / "pinned")
    assert pinned.exit_code == 0, pinned.stderr
    assert f"Why this plan. tp 1 x ulysses 1 x ring 2 x dp 2 x pp 4, ZeRO-1, no recompute, {named}" in " ".join(
        pinned.stdout.split())
    html = (tmp_path / "pinned" / "index.html").read_text()
    assert ("<strong>tp 1 x ulysses 1 x ring 2 x dp 2 x pp 4, ZeRO-1, no recompute, micro batch 1, 2 virtual "
            "stages per rank in micro-batch groups of 6</strong>") in html
    assert f"<p>tp 1 x ulysses 1 x ring 2 x dp 2 x pp 4, ZeRO-1, no recompute, {named}" in html
    plain = sp_plan(*args, "--report", tmp_path / "plain")
    assert "micro-batch groups of" not in plain.stdout
    assert "micro-batch groups of" not in (tmp_path / "plain" / "index.html").read_text()

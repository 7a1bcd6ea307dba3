"""The report's simulated timeline: the recommended plan run through the event simulator."""

from __future__ import annotations

import json
import re

from sp_planner.catalog import load_model
from sp_planner.plan import ParallelPlan
from sp_planner.report import render_index
from sp_planner.report.sections import top_plans_section
from sp_planner.report.simulation import KIND_LABELS, simulate_chosen, simulation_section
from sp_planner.search import evaluate
from sp_planner.sim import simulate
from sp_planner.sim.result import CRITICAL_PATH_KINDS
from sp_planner.units import format_seconds


def _page(q, **extra):
    args = {k: v for k, v in q.report_args().items() if k != "summary"}
    return render_index(**args, runs=(), framework="megatron", chosen=q.result.ranked[0], from_plan_file=False,
                        **extra)


def _section(q, chosen, **changes) -> str:
    args = dict(model=q.model, hardware=q.hardware, workload=q.workload, num_nodes=q.num_nodes,
                gpus_per_node=q.gpus_per_node)
    return simulation_section(**{**args, **changes}, chosen=chosen)


def test_section_shows_the_chart_and_the_simulators_numbers(question, report_dir):
    html = (report_dir / "index.html").read_text(encoding="utf-8")
    start = html.index('<section id="simulation">')
    part = html[start:html.index("</section>", start)]
    best = question.result.ranked[0]
    sim = simulate(question.model, question.hardware, question.workload, best.plan,
                   num_nodes=question.num_nodes, gpus_per_node=question.gpus_per_node)
    figure = re.search(r'<figure id="fig-gantt">(.*?)</figure>', part, re.DOTALL)
    assert figure and figure.group(1).count("<svg") == 1 and "<path" in figure.group(1)
    assert f"<dd>{format_seconds(sim.step_time_s)} ({sim.tokens_per_s:,.0f} tokens/s)</dd>" in part
    shift = sim.step_time_s / sim.analytic_step_time_s - 1.0
    assert f"<dd>{format_seconds(sim.analytic_step_time_s)}; the simulated step is {shift:+.1%}" in part
    # The analytic step the simulator reports is the search's estimate of the same plan.
    assert sim.analytic_step_time_s == best.step_time_s
    # Critical path: one row per kind, longest first, then the total (= the step).
    tables = re.findall(r"<table>(.*?)</table>", part, re.DOTALL)
    rows = re.findall(r"<tr><td>([^<]+)</td><td>[^<]*</td><td class=\"num\">([^<]+)</td>", tables[0])
    expected = sorted(((k, s) for k, s in sim.critical_path_by_kind_s.items() if s > 0), key=lambda kv: (-kv[1], kv[0]))
    assert rows == [(k, format_seconds(s)) for k, s in expected] + [("total", format_seconds(sim.step_time_s))]
    assert any(s == 0 for s in sim.critical_path_by_kind_s.values())  # zero kinds are left out of the table
    assert set(KIND_LABELS) == set(CRITICAL_PATH_KINDS)
    # Streams: one row per stage with busy and idle of each stream.
    cells = re.findall(r'<td class="num">([^<]+)</td>', tables[1])
    usage = {(u.stage, u.stream): u for u in sim.streams}
    assert len(cells) == 11 * best.plan.pp
    assert cells[2:5] == [format_seconds(usage[(0, "compute")].busy_s), format_seconds(usage[(0, "compute")].idle_s),
                          f"{usage[(0, 'compute')].busy_s / sim.step_time_s:.1%}"]
    assert html.index('id="figures"') < start < html.index('id="assumptions"')


def test_a_pipelined_plan_gets_a_row_per_stage(question):
    chosen = evaluate(question.model, question.hardware, question.workload,
                      ParallelPlan(dp=1, pp=2, ulysses=4, ring=2, recompute="full"), num_nodes=2, gpus_per_node=8)
    assert chosen.fits
    part = _section(question, chosen)
    streams = re.findall(r"<table>(.*?)</table>", part, re.DOTALL)[1]
    stages = re.findall(r'<tr><td class="num">(\d+)</td><td class="num">(\d+)</td>', streams)
    assert stages == [("0", "0"), ("1", "8")]


def test_a_plan_that_does_not_fit_gets_the_reason_instead_of_a_chart(asker):
    # 405B parameters on 8 x 40 GiB: no plan fits (as in test_sections).
    q = asker(load_model("llama3.1-405b"), "a100-40gb", num_nodes=1)
    closest = q.result.ranked[0]
    assert not closest.fits
    html = _page(q)
    start = html.index('<section id="simulation">')
    part = html[start:html.index("</section>", start)]
    assert "does not fit in memory" in part and closest.reason.split(":")[0] in part
    assert "<svg" not in part and 'id="fig-gantt"' not in html


def test_a_plan_the_simulator_rejects_gets_its_message(question):
    # The plan spans 16 GPUs; a cluster of one node has 8.
    best = question.result.ranked[0]
    outcome = simulate_chosen(question.model, question.hardware, question.workload, best, num_nodes=1,
                              gpus_per_node=8)
    assert isinstance(outcome, str) and outcome.startswith("The simulator cannot run the recommended plan: ")
    assert "16 GPUs but the cluster has 1 node x 8 = 8" in outcome
    part = _section(question, best, num_nodes=1)
    assert 'class="warn"' in part and "<svg" not in part


def test_top_plans_show_a_simulated_column_only_when_plans_carry_one(question):
    ranked = list(question.result.ranked)
    plain = top_plans_section(ranked, chosen=ranked[0], hardware=question.hardware)
    assert "simulated step" not in plain and "Ranked by predicted step time" in plain
    # As sp-plan --simulate 1 leaves them: the first plan simulated, the others not.
    marked = [ranked[0].model_copy(update={"simulated_step_time_s": 1.234}), *ranked[1:]]
    html = top_plans_section(marked, chosen=marked[0], hardware=question.hardware)
    headers = re.findall(r"<th>([^<]+)</th>", html)
    # after "ring layout": ring K/V, virtual stages, first/last stage layers, precision
    assert headers[14:16] == ["step time", "simulated step"] and len(headers) == 23
    first = re.search(r'<tr class="chosen">(.*?)</tr>', html).group(1)
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", first)
    assert cells[14:16] == [format_seconds(ranked[0].step_time_s), "1.23 s"]
    second = re.findall(r"<tr>(<td>2</td>.*?)</tr>", html)[0]
    assert re.findall(r"<td[^>]*>([^<]*)</td>", second)[15] == "-"  # not simulated
    assert "Ranked by simulated step time" in html


TORCHTITAN_0_2_FP8 = ("--model", "llama3-8b", "--hardware", "h100-sxm", "--nodes", "1", "--seq-len", "32k",
                      "--precision", "fp8", "--framework", "torchtitan", "--framework-version", "0.2.2")


def _simulated(html: str) -> tuple[str, str]:
    """The simulation section's (simulated step, analytic step) figures."""
    start = html.index('<section id="simulation">')
    part = html[start:html.index("</section>", start)]
    return tuple(re.search(rf"<dt>{name} step</dt><dd>([^<;(]+)", part).group(1).strip()
                 for name in ("simulated", "analytic"))


def test_sp_plans_report_simulates_with_the_runtime_it_timed_plans_with(tmp_path, run_main):
    # torchtitan 0.2.x gathers tensorwise float8 TP inputs in FP8 (cost.tp_gathers): the report's
    # simulation of the recommended plan (FP8 at tp 2) ran as 0.3.x's bf16 gathers.
    from sp_planner.cli import plan_cmd

    printed = run_main(plan_cmd, *TORCHTITAN_0_2_FP8, "--format", "json", "--report", tmp_path / "r")
    assert printed.exit_code == 0, printed.stderr
    # The plan the report recommends: the best torchtitan expresses, as sp-plan answers.
    best = json.loads(printed.stdout)["framework_plans"][0]
    assert (best["tp"], best["precision"]) == (2, "fp8")
    simulated, analytic = _simulated((tmp_path / "r" / "index.html").read_text(encoding="utf-8"))
    assert analytic == format_seconds(best["step_time_s"])


def test_sp_report_times_a_torchtitan_0_2_plan_as_sp_plan_did(tmp_path, run_main):
    # summary.json is the document sp-plan --format json prints for the plan file's framework at its
    # release (0.2.x timing and TOML flags); the simulation section is sp-simulate's figures.
    from sp_planner.cli import plan_cmd, report_cmd, simulate_cmd

    plan = tmp_path / "plan.json"
    printed = run_main(plan_cmd, *TORCHTITAN_0_2_FP8, "--format", "json", "--out", plan)
    assert printed.exit_code == 0, printed.stderr
    reported = run_main(report_cmd, plan, "--out", tmp_path / "r")
    assert reported.exit_code == 0 and reported.stderr == "", reported.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary == json.loads(printed.stdout)
    chosen = summary["framework_plans"][0]
    assert chosen["tp"] == 2 and "[parallelism]" in chosen["flags"]["torchtitan"]["text"]
    assert run_main(simulate_cmd, plan, "--out-dir", tmp_path / "sim").exit_code == 0
    timeline = json.loads((tmp_path / "sim" / "timeline.json").read_text())
    assert timeline["analytic_step_time_s"] == chosen["step_time_s"]
    html = (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    assert _simulated(html) == (format_seconds(timeline["step_time_s"]), format_seconds(chosen["step_time_s"]))

import json

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cli.simulate_cmd import app
from sp_planner.cli.common import run_app
from sp_planner.plan import ParallelPlan
from sp_planner.planfile import PlanFile, write_plan_file
from sp_planner.specs.workload import Workload


def _run(argv):
    with pytest.raises(SystemExit) as done:
        run_app(app, argv=argv, prog_name="sp-simulate")
    return done.value.code


def test_sp_simulate_prints_breakdown_and_writes_timeline_and_gantt(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    plan_file = tmp_path / "plan.json"
    write_plan_file(plan_file, PlanFile(
        model=load_model("llama3-8b"), hardware=load_hardware("a800"),
        workload=Workload(seq_len=65536, global_batch=4), num_nodes=2, gpus_per_node=8,
        plan=ParallelPlan(dp=1, pp=2, ulysses=4, ring=2),
    ))
    out = tmp_path / "sim"
    assert _run([str(plan_file), "--out-dir", str(out), "--gantt", "svg"]) == 0
    printed = capsys.readouterr().out
    assert "simulated step" in printed and "analytic" in printed and "critical path" in printed
    timeline = json.loads((out / "timeline.json").read_text())
    assert timeline["plan"]["ring"] == 2 and timeline["step_time_s"] > 0
    assert (out / "gantt.svg").read_text().lstrip().startswith("<?xml")


def test_sp_simulate_bad_plan_file_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "plan.json"
    bad.write_text("{not json")
    assert _run([str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1

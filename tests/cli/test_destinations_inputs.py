"""Outputs never land on what a run reads or on what the user keeps beside a report, files the user
named are written even when stdout is gone, and a path the system cannot take is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sp_planner.cli import plan_cmd, plan_solve, run_cmd, run_modes, simulate_cmd
from tests.cli.conftest import README_QUESTION, assert_one_line_error

QUESTION = README_QUESTION
LONG = "a" * 300  # over NAME_MAX (255)


def _no_search(monkeypatch):
    monkeypatch.setattr(plan_solve, "search", lambda *a, **k: pytest.fail("searched before checking"))


def test_a_folder_bearing_a_report_file_name_is_not_an_earlier_report(run_main, tmp_path, monkeypatch):
    _no_search(monkeypatch)
    (tmp_path / "index.html").mkdir()
    (tmp_path / "index.html" / "mywork.txt").write_text("precious")
    assert_one_line_error(run_main(plan_cmd, *QUESTION, "--report", tmp_path),
                          "holds files that are not part of a report (index.html/)")
    assert (tmp_path / "index.html" / "mywork.txt").read_text() == "precious"


def test_a_link_bearing_a_report_file_name_is_not_an_earlier_report(run_main, tmp_path, monkeypatch):
    """The report's files move aside and are deleted when it is replaced: a link the user keeps there
    (to their own summary.json) would be deleted with them."""
    _no_search(monkeypatch)
    kept = tmp_path / "mine.json"
    kept.write_text("precious")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "summary.json").symlink_to(kept)
    assert_one_line_error(run_main(plan_cmd, *QUESTION, "--report", tmp_path / "r"),
                          "report folder", "holds files that are not part of a report (summary.json (a link))")
    assert (tmp_path / "r" / "summary.json").is_symlink() and kept.read_text() == "precious"


@pytest.mark.parametrize("name, text", [("index.html", "<html><title>My notes</title></html>"),
                                        ("summary.json", '{"mine": 1}'), ("plans.csv", "a,b\n1,2\n")])
def test_a_file_of_the_users_bearing_a_report_file_name_is_not_replaced(run_main, tmp_path, monkeypatch, name, text):
    """A regular file named like a report's but not holding what a report's holds at its head (its
    title, its CSV's first columns, its summary's schema) is the user's: it was replaced before."""
    _no_search(monkeypatch)
    (tmp_path / name).write_text(text)
    assert_one_line_error(run_main(plan_cmd, *QUESTION, "--report", tmp_path),
                          f"holds files that are not part of a report ({name})")
    assert (tmp_path / name).read_text() == text


def test_an_earlier_report_is_recognised_by_its_content_and_replaced(tmp_path):
    from sp_planner.fileio import check_output_folder
    from sp_planner.report.writer import REPORT_FILES, REPORT_SIGNATURES, check_report_target

    example = Path(__file__).resolve().parents[2] / "reports" / "example"
    for name in REPORT_FILES:
        (tmp_path / name).write_bytes((example / name).read_bytes())
    check_report_target(tmp_path)  # the committed example report is an earlier report
    (tmp_path / "plans.csv").write_text("rank,dp\n")
    with pytest.raises(Exception, match=r"holds files that are not part of a report \(plans.csv\)"):
        check_output_folder(tmp_path, allowed=REPORT_FILES, label="report folder", kind="a report",
                            signatures=REPORT_SIGNATURES)


def test_the_plan_file_cannot_go_inside_the_report_folder(run_main, tmp_path, monkeypatch):
    _no_search(monkeypatch)
    (tmp_path / "r").mkdir()
    result = run_main(plan_cmd, *QUESTION, "--out", tmp_path / "r" / "index.html", "--report", tmp_path / "r")
    assert_one_line_error(result, "lies inside the --report folder")
    assert list((tmp_path / "r").iterdir()) == []


@pytest.mark.parametrize("option", ["--model", "--hardware"])
def test_sp_plan_out_is_not_the_model_or_profile_it_reads(run_main, tmp_path, monkeypatch, option):
    _no_search(monkeypatch)
    if option == "--model":
        source = tmp_path / "config.json"
        source.write_text(json.dumps({
            "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256}))
    else:
        source = tmp_path / "a800.yaml"
        source.write_text(Path("hardware_profiles/a800.yaml").read_text())
    kept = source.read_text()
    args = [*QUESTION]
    args[args.index(option) + 1] = str(source)
    assert_one_line_error(run_main(plan_cmd, *args, "--out", source), f"is the {option} file this run reads")
    assert source.read_text() == kept


def test_sp_run_out_is_not_its_plan(run_main, plan_json, monkeypatch):
    monkeypatch.setattr(run_modes, "run_local", lambda *a, **k: pytest.fail("launched before checking --out"))
    before = plan_json.read_text()
    assert_one_line_error(run_main(run_cmd, "--plan", plan_json, "--out", plan_json),
                          "is the --plan file this run reads")
    assert plan_json.read_text() == before


def test_sp_simulate_does_not_write_its_timeline_over_its_plan(run_main, plan_json, tmp_path, monkeypatch):
    monkeypatch.setattr(simulate_cmd, "simulate", lambda *a, **k: pytest.fail("simulated before checking"))
    timeline = tmp_path / "timeline.json"
    timeline.write_text(plan_json.read_text())
    assert_one_line_error(run_main(simulate_cmd, timeline, "--out-dir", tmp_path), "is the plan file this run reads")
    assert timeline.read_text() == plan_json.read_text()


def test_a_closed_stdout_still_gets_the_named_files_written(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    code = "import sys; from sp_planner.cli.plan_cmd import main; main(sys.argv[1:])"
    proc = subprocess.Popen([sys.executable, "-c", code, *QUESTION, "--out", tmp_path / "p.json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    proc.stdout.close()  # as `| head -0` does
    err = proc.stderr.read()
    assert proc.wait(120) == 2
    assert "broken pipe" in err and f"wrote {tmp_path / 'p.json'}" in err
    assert json.loads((tmp_path / "p.json").read_text())["plan"]["ulysses"] >= 1


def test_names_too_long_are_one_line(run_main, plan_json, tmp_path, monkeypatch):
    _no_search(monkeypatch)
    assert_one_line_error(run_main(plan_cmd, *QUESTION, "--out", tmp_path / f"{LONG}.json"), "File name too long")
    assert_one_line_error(run_main(plan_cmd, *QUESTION, "--report", tmp_path / LONG), "File name too long")
    model = [*QUESTION]
    model[1] = str(tmp_path / f"{LONG}.json")
    assert_one_line_error(run_main(plan_cmd, *model), "cannot read model config file")
    assert_one_line_error(run_main(simulate_cmd, plan_json, "--out-dir", tmp_path / LONG), "File name too long")


def test_a_plan_file_naming_an_unknown_framework_is_refused_in_one_line(run_main, plan_json, tmp_path):
    data = json.loads(plan_json.read_text())
    data["framework"] = "bogus"
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    assert_one_line_error(run_main(simulate_cmd, edited, "--out-dir", tmp_path),
                          "framework: Input should be 'megatron'")


def test_a_process_started_with_stdout_closed_writes_its_files_and_says_so(tmp_path):
    # `sp-plan ... --out p.json >&-`: file descriptor 1 closed from the start (Python's sys.stdout
    # is None), not a traceback.
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    code = "import sys; from sp_planner.cli.plan_cmd import main; main(sys.argv[1:])"
    done = subprocess.run(["bash", "-c", 'exec "$@" >&-', "_", sys.executable, "-c", code, *QUESTION,
                           "--out", str(tmp_path / "p.json")], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert done.stderr.endswith("error: cannot write to standard output: it is closed\n")
    assert "Traceback" not in done.stderr
    assert (tmp_path / "p.json").exists()

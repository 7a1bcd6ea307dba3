"""Every command that writes checks its destinations before any work and never harms what is there:
sp-plan --out/--report, sp-simulate --out-dir, sp-run --out, sp-calibrate --out, sp-report --out.
Standard output that cannot be written is answered in one line (real processes: fds matter)."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys

import pytest

from sp_planner.cli import (calibrate_cmd, plan_cmd, plan_solve, report_cmd, run_cmd, run_modes, simulate_cmd,
                            validate_cmd)
from sp_planner.fileio import SIGNATURE_HEAD_BYTES
from sp_planner.planfile import load_plan_file
from sp_planner.sim import simulate
from sp_planner.sim.gantt import gantt_figure
from tests.cli.conftest import README_QUESTION, assert_one_line_error

QUESTION = README_QUESTION


def test_sp_plan_out_through_a_symlink_writes_the_target(run_main, tmp_path):
    target, link = tmp_path / "real.json", tmp_path / "link.json"
    target.write_text("old")
    link.symlink_to(target)
    assert run_main(plan_cmd, *QUESTION, "--out", link).exit_code == 0
    assert link.is_symlink() and target.read_text().startswith("{")


def test_sp_plan_out_on_a_device_writes_through(run_main):
    assert run_main(plan_cmd, *QUESTION, "--out", "/dev/null").exit_code == 0
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_sp_plan_out_on_dev_full_keeps_the_plan_and_says_where(run_main, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    result = run_main(plan_cmd, *QUESTION, "--out", "/dev/full")
    assert_one_line_error(result, "could not write /dev/full: No space left on device; the plan is kept at ")
    kept = result.stderr.split()[-1]
    assert '"schema_version": "sp-planner.plan/1"' in open(kept).read()
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


@pytest.mark.parametrize("option", ["--out", "--report"])
def test_sp_plan_unusable_destination_is_refused_before_the_search(run_main, tmp_path, monkeypatch, option):
    monkeypatch.setattr(plan_solve, "search", lambda *a, **k: pytest.fail("searched before checking"))
    (tmp_path / "file").write_text("x")
    result = run_main(plan_cmd, *QUESTION, option, tmp_path / "file" / "sub")
    assert_one_line_error(result, f"{option} {tmp_path}/file/sub", "is not a folder")
    assert result.stdout == ""


@pytest.mark.parametrize("command,args", [
    (plan_cmd, [*QUESTION, "--out"]),
    (run_cmd, ["--plan", "plan.json", "--out"]),
    (calibrate_cmd, ["--out"]),
    (calibrate_cmd, ["--out", "cpu.yaml", "--save-measurements"]),
])
def test_a_file_option_ending_in_a_slash_is_refused_not_written_without_it(run_main, tmp_path, monkeypatch,
                                                                           command, args):
    # Path("x/") is "x": `--out x/` wrote a file named x where a folder was meant.
    monkeypatch.chdir(tmp_path)
    result = run_main(command, *args, "x/")
    assert_one_line_error(result, "x/ ends in a slash, which names a folder; give a file name inside it")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command,args,raw,message", [
    (plan_cmd, [*QUESTION, "--out"], ".json", ".json is an extension alone, with no file name before .json"),
    (run_cmd, ["--plan", "plan.json", "--out"], ".json", ".json is an extension alone"),
    (calibrate_cmd, ["--out"], ".yml", ".yml is an extension alone, with no file name before .yml"),
    (calibrate_cmd, ["--out", "cpu.yaml", "--save-measurements"], ".json", ".json is an extension alone"),
    (plan_cmd, [*QUESTION, "--out"], "x/.", "x/. ends in /., which names a folder"),
    (plan_cmd, [*QUESTION, "--report"], "report.html", "report.html ends in .html, a file's extension, and no "
     "such folder exists: this option names a folder to write into; give a folder name, e.g. report"),
    (report_cmd, ["plan.json", "--out"], "x.YAML", "x.YAML ends in .YAML, a file's extension"),
    (simulate_cmd, ["plan.json", "--out-dir"], "timeline.json", "timeline.json ends in .json, a file's extension"),
    (validate_cmd, ["--report"], ".csv", ".csv ends in .csv, a file's extension"),
])
def test_a_destination_that_is_an_extension_or_a_file_name_for_a_folder_is_refused(
        run_main, tmp_path, monkeypatch, command, args, raw, message):
    # `--out .yaml` ("$NAME.yaml" with NAME unset) wrote a hidden file, and sp-calibrate said the name
    # must end in .yaml; `--out x/.` wrote a file x; `--out report.html` made a folder report.html.
    monkeypatch.chdir(tmp_path)
    result = run_main(command, *args, raw)
    assert_one_line_error(result, f"Invalid value for '{args[-1]}': {message}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command,args,message", [
    (plan_cmd, [*QUESTION, "--out"], "Invalid value for '--out': the name is empty; give a file name"),
    (run_cmd, ["--plan", "plan.json", "--out"], "Invalid value for '--out': the name is empty; give a file name"),
    (calibrate_cmd, ["--out"], "Invalid value for '--out': the name is empty; give a file name"),
    (plan_cmd, [*QUESTION, "--report"], "Invalid value for '--report': the name is empty; give a folder name"),
    (report_cmd, ["plan.json", "--out"], "Invalid value for '--out': the name is empty; give a folder name"),
    (simulate_cmd, ["plan.json", "--out-dir"], "Invalid value for '--out-dir': the name is empty; give a folder"),
    (validate_cmd, ["--report"], "Invalid value for '--report': the name is empty; give a folder name"),
])
def test_an_empty_destination_is_refused_not_read_as_the_current_folder(run_main, tmp_path, monkeypatch, command,
                                                                         args, message):
    # Path("") is ".": `--report "$DIR"` with DIR unset wrote the report into the current folder.
    monkeypatch.chdir(tmp_path)
    result = run_main(command, *args, "")
    assert_one_line_error(result, message)
    assert list(tmp_path.iterdir()) == []


def test_sp_plan_out_and_report_on_one_path_leave_nothing(run_main, tmp_path):
    same = tmp_path / "x"
    result = run_main(plan_cmd, *QUESTION, "--out", same, "--report", same)
    assert_one_line_error(result, f"--out and --report both name {same}")
    assert list(tmp_path.iterdir()) == []


def test_sp_simulate_out_dir_that_is_a_file_is_refused_before_simulating(run_main, plan_json, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(simulate_cmd, "simulate", lambda *a, **k: pytest.fail("simulated before checking"))
    (tmp_path / "file").write_text("x")
    assert_one_line_error(run_main(simulate_cmd, plan_json, "--out-dir", tmp_path / "file"),
                          f"--out-dir {tmp_path}/file exists and is not a folder")
    assert_one_line_error(run_main(simulate_cmd, plan_json, "--out-dir", tmp_path / "no" / "sim"),
                          f"folder {tmp_path}/no does not exist")
    assert (tmp_path / "file").read_text() == "x" and not (tmp_path / "no").exists()


def test_sp_simulate_writes_with_the_umask_into_the_named_folder(run_main, plan_json, tmp_path):
    old = os.umask(0o022)
    try:
        result = run_main(simulate_cmd, plan_json, "--out-dir", tmp_path / "sim", "--gantt", "svg")
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.stderr
    for name in ("timeline.json", "gantt.svg"):
        assert stat.S_IMODE((tmp_path / "sim" / name).stat().st_mode) == 0o644


def test_sp_run_out_is_checked_before_the_launch(run_main, tmp_path, monkeypatch):
    monkeypatch.setattr(run_modes, "run_local", lambda *a, **k: pytest.fail("launched before checking --out"))
    result = run_main(run_cmd, "--ulysses", "2", "--seq-len", "64", "--heads", "2", "--head-dim", "8",
                      "--out", tmp_path / "missing" / "result.json")
    assert_one_line_error(result, f"--out {tmp_path}/missing/result.json: folder {tmp_path}/missing does not exist")


def test_sp_calibrate_out_is_checked_before_measuring(run_main, tmp_path, monkeypatch):
    monkeypatch.setattr(calibrate_cmd, "_measure_locally", lambda *a, **k: pytest.fail("measured before checking"))
    assert_one_line_error(run_main(calibrate_cmd, "--device", "cpu", "--out", "/proc/cpu.yaml"),
                          "--out /proc/cpu.yaml: cannot write in folder /proc")
    (tmp_path / "d.yaml").mkdir()
    assert_one_line_error(run_main(calibrate_cmd, "--device", "cpu", "--out", tmp_path / "d.yaml"), "is a folder")


def test_sp_calibrate_refuses_one_file_for_the_profile_and_the_measurements(run_main, tmp_path, monkeypatch):
    monkeypatch.setattr(calibrate_cmd, "_measure_locally", lambda *a, **k: pytest.fail("measured before checking"))
    out = tmp_path / "same.yaml"
    (tmp_path / "link.yaml").symlink_to(out)
    assert_one_line_error(run_main(calibrate_cmd, "--device", "cpu", "--out", out, "--save-measurements",
                             tmp_path / "link.yaml"), f"--out and --save-measurements both name {out}")
    out.write_text("{}")
    assert_one_line_error(run_main(calibrate_cmd, "--out", out, "--measurements", tmp_path / "." / "same.yaml"),
                          "--out and --measurements both name")
    assert out.read_text() == "{}"


def test_sp_calibrate_never_writes_over_a_file_it_reads(run_main, tmp_path, monkeypatch):
    # --base my.yaml --out my.yaml replaced the user's base profile with the new one, and
    # --save-measurements raw.yaml --measurements raw.yaml rewrote a YAML file as JSON.
    monkeypatch.setattr(calibrate_cmd, "_measure_locally", lambda *a, **k: pytest.fail("measured before checking"))
    base = tmp_path / "my.yaml"
    base.write_text("name: mine\n")
    assert_one_line_error(run_main(calibrate_cmd, "--device", "cpu", "--base", base, "--out", base),
                          f"--out {base} is the --base file this run reads, which the output would replace")
    assert_one_line_error(run_main(calibrate_cmd, "--device", "cpu", "--base", base, "--out", tmp_path / "p.yaml",
                                   "--save-measurements", base),
                          f"--save-measurements {base} is the --base file this run reads")
    raw = tmp_path / "raw.yaml"
    raw.write_text("environment: {}\n")
    assert_one_line_error(run_main(calibrate_cmd, "--measurements", raw, "--out", tmp_path / "p.yaml",
                                   "--save-measurements", raw),
                          f"--save-measurements {raw} is the --measurements file this run reads")
    assert (base.read_text(), raw.read_text()) == ("name: mine\n", "environment: {}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my.yaml", "raw.yaml"]


def test_sp_simulate_names_a_blocked_file_of_its_own(run_main, plan_json, tmp_path):
    (tmp_path / "timeline.json").mkdir()
    assert_one_line_error(run_main(simulate_cmd, plan_json, "--out-dir", tmp_path),
                          f"{tmp_path}/timeline.json (in --out-dir) is a folder; remove it or choose another --out-dir")


@pytest.mark.parametrize("existing", ["timeline.json", "gantt.png"])
def test_sp_simulate_without_out_dir_keeps_a_file_already_in_the_current_folder(run_main, plan_json, tmp_path,
                                                                              monkeypatch, existing):
    """The user named no destination: their own timeline.json (or gantt.png) in the current folder is
    not replaced, and nothing is simulated or written."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(simulate_cmd, "simulate", lambda *a, **k: pytest.fail("simulated before checking"))
    (tmp_path / existing).write_text("mine")
    result = run_main(simulate_cmd, plan_json)
    assert result.stdout == ""
    assert_one_line_error(result, f"error: {existing} already exists in the current folder; sp-simulate replaces "
                          "files only in a folder you name: give --out-dir . to replace it, or another --out-dir")
    assert [p.name for p in tmp_path.iterdir()] == [existing] and (tmp_path / existing).read_text() == "mine"


def test_sp_simulate_replaces_its_files_in_a_folder_named_even_the_current_one(run_main, plan_json, tmp_path,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_main(simulate_cmd, plan_json).exit_code == 0  # a new file in the current folder
    # An earlier run's files, cut short: their heads still say whose they are.
    for name in ("timeline.json", "gantt.png"):
        (tmp_path / name).write_bytes((tmp_path / name).read_bytes()[:SIGNATURE_HEAD_BYTES])
    assert run_main(simulate_cmd, plan_json).exit_code == 2
    result = run_main(simulate_cmd, plan_json, "--out-dir", ".")
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "timeline.json").read_text())["plan"]["ulysses"] == 8
    assert (tmp_path / "gantt.png").stat().st_size > SIGNATURE_HEAD_BYTES


@pytest.fixture(scope="module")
def unmarked_gantts(plan_json):
    """The plan's Gantt chart as sp-simulate drew it before it marked its files (matplotlib's own
    creator in the head), by format."""
    plan = load_plan_file(plan_json).plan_file
    result = simulate(plan.model, plan.hardware, plan.workload, plan.plan, num_nodes=plan.num_nodes,
                      gpus_per_node=plan.gpus_per_node)
    charts = {}
    for fmt in ("png", "svg"):
        buffer = io.BytesIO()
        gantt_figure(result).savefig(buffer, format=fmt, dpi=110)
        charts[fmt] = buffer.getvalue()
    return charts


@pytest.mark.parametrize("name,fmt,what,mine", [
    ("timeline.json", "png", "timeline", b'{\n "plan": "my notes"\n}\n'),
    ("timeline.json", "svg", "timeline", b'{"plan": {"dp": 2}}\n'),  # a result re-dumped, not sp-simulate's
    ("gantt.png", "png", "Gantt chart", b"\x89PNG\r\n\x1a\n my photo"),
    ("gantt.png", "png", "Gantt chart", "unmarked"),
    ("gantt.svg", "svg", "Gantt chart", "unmarked"),
])
def test_sp_simulate_keeps_a_file_of_that_name_not_its_own_in_the_named_folder(run_main, plan_json, tmp_path,
                                                                              monkeypatch, unmarked_gantts, name,
                                                                              fmt, what, mine):
    """--out-dir names the folder, not the files: a timeline.json or gantt.png there that does not
    carry sp-simulate's mark (the user's, or a chart from before the mark) is refused, byte for byte
    as it was, before any simulation."""
    mine = unmarked_gantts[fmt] if mine == "unmarked" else mine
    (tmp_path / name).write_bytes(mine)
    monkeypatch.setattr(simulate_cmd, "simulate", lambda *a, **k: pytest.fail("simulated before checking"))
    result = run_main(simulate_cmd, plan_json, "--out-dir", tmp_path, "--gantt", fmt)
    assert result.stdout == ""
    assert_one_line_error(result, f"error: {tmp_path}/{name} (in --out-dir) does not carry sp-simulate's {what} "
                          "mark (a file of yours, or one written before sp-planner marked its own), so it is kept; "
                          "remove it or give another --out-dir")
    assert [p.name for p in tmp_path.iterdir()] == [name] and (tmp_path / name).read_bytes() == mine


def test_sp_simulate_refuses_a_link_or_fifo_of_its_file_names_in_the_named_folder(run_main, plan_json, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setattr(simulate_cmd, "simulate", lambda *a, **k: pytest.fail("simulated before checking"))
    out, kept = tmp_path / "sim", tmp_path / "notes.json"
    out.mkdir()
    kept.write_text("keep")
    (out / "timeline.json").symlink_to(kept)
    assert_one_line_error(run_main(simulate_cmd, plan_json, "--out-dir", out),
                          f"error: {out}/timeline.json (in --out-dir) is a link, which sp-simulate does not write "
                          "through; remove it or give another --out-dir")
    assert kept.read_text() == "keep" and (out / "timeline.json").is_symlink()
    (out / "timeline.json").unlink()
    os.mkfifo(out / "gantt.svg")
    assert_one_line_error(run_main(simulate_cmd, plan_json, "--out-dir", out, "--gantt", "svg"),
                          f"error: {out}/gantt.svg (in --out-dir) is a device or FIFO, which sp-simulate does not "
                          "write into; remove it or give another --out-dir")
    assert [p.name for p in out.iterdir()] == ["gantt.svg"] and stat.S_ISFIFO(os.lstat(out / "gantt.svg").st_mode)


def test_sp_simulate_refuses_nics_that_do_not_divide_the_node(run_main, plan_json, tmp_path):
    assert_one_line_error(run_main(simulate_cmd, plan_json, "--out-dir", tmp_path, "--nics-per-node", "3"),
                          "--nics-per-node 3 must divide the plan's 8 GPUs per node: give one of 1, 2, 4, 8")
    assert list(tmp_path.iterdir()) == []


def test_sp_report_out_under_a_file_is_refused(run_main, plan_json, tmp_path):
    (tmp_path / "file").write_text("x")
    assert_one_line_error(run_main(report_cmd, plan_json, "--out", tmp_path / "file" / "rep"), "is not a folder")


def test_sp_report_through_a_link_to_a_report_folder_keeps_the_link(run_main, plan_json, tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert run_main(report_cmd, plan_json, "--out", tmp_path / "link").exit_code == 0
    assert (tmp_path / "link").is_symlink() and (tmp_path / "real" / "index.html").is_file()


SP_PLAN = [sys.executable, "-c", "import sys; from sp_planner.cli.plan_cmd import main; main(sys.argv[1:])"]


def test_stdout_on_dev_full_is_one_line():
    with open("/dev/full", "w") as full:
        done = subprocess.run([*SP_PLAN, *QUESTION], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 2
    assert done.stderr == "error: cannot write to standard output: No space left on device\n"


def test_stdout_closed_early_is_one_line():
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([*SP_PLAN, *QUESTION, "--explain", "--framework", "all"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    proc.stdout.close()  # as `| head -0` does
    err = proc.stderr.read()
    assert proc.wait(120) == 2
    assert err == "error: standard output was closed before all output was written (broken pipe)\n"


def test_ascii_only_stdout_still_gets_the_answer(plan_json, tmp_path):
    # The simulator's tables hold "µs", which an ASCII stream cannot encode.
    done = subprocess.run(
        [sys.executable, "-c", "from sp_planner.cli.simulate_cmd import main; main()", plan_json,
         "--out-dir", tmp_path],
        capture_output=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.getcwd(), "PYTHONIOENCODING": "ascii", "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b"" and b"simulated step" in done.stdout
    text = done.stdout.decode("ascii")  # nothing but ASCII reached the stream
    # Microseconds spelt "us", not "?s" (cli.common.ASCII_SPELLINGS).
    assert "?s" not in text and " us" in text

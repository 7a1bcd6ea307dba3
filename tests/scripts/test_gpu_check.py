"""scripts/gpu_check.py's own logic: a failing or hanging step is recorded and the next runs;
missing packages come from the wheels folder with no index; results are never replaced.
(`make gpu-check DEVICE=cpu` runs the real steps in CI.)"""

from __future__ import annotations

import importlib.util
import json
import subprocess as sp
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from .conftest import run_cpu_step

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def gpu_check(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_steps(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "steps.py"
    script.write_text("import json, sys, time\nname, out = sys.argv[1], sys.argv[5]\n" + body)
    return script


def _args(tmp_path: Path) -> SimpleNamespace:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return SimpleNamespace(out=out, device="cpu")


def test_a_step_that_writes_its_result(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "STEPS_SCRIPT", _fake_steps(tmp_path, (
        "open(f'{out}/{name}.json', 'w').write(json.dumps({'step': name, 'status': 'passed', 'lines': ['ok']}))\n")))
    result = gpu_check._run_step("kernels", 30, _args(tmp_path), {})
    assert result["status"] == "passed" and result["lines"] == ["ok"] and result["log"] == "kernels.log"


def test_a_crashing_step_is_recorded_with_its_last_lines(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "STEPS_SCRIPT", _fake_steps(tmp_path, "print('boom'); sys.exit(3)\n"))
    result = gpu_check._run_step("sp_run", 30, _args(tmp_path), {})
    assert result["status"] == "failed"
    assert result["lines"] == ["exited with code 3; see sp_run.log", "boom"]


def test_a_hanging_step_is_killed_at_its_limit(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "STEPS_SCRIPT", _fake_steps(tmp_path, "print('waiting', flush=True)\n"
                                                                          "time.sleep(60)\n"))
    result = gpu_check._run_step("calibrate", 2, _args(tmp_path), {})
    assert result["status"] == "failed" and result["lines"][0] == "timed out after 2 s; see calibrate.log"
    assert result["seconds"] < 10


def _wheel(folder: Path, name: str) -> None:
    folder.mkdir(exist_ok=True)
    info = f"{name}-1.0.dist-info"
    with zipfile.ZipFile(folder / f"{name}-1.0-py3-none-any.whl", "w") as whl:
        whl.writestr(f"{name}/__init__.py", "VALUE = 7\n")
        whl.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{info}/RECORD", "")


def test_missing_packages_come_from_the_wheels_folder(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "REQUIRED", {"spgpucheckdep": "spgpucheckdep"})
    monkeypatch.setattr(gpu_check, "OPTIONAL", {})
    assert "no wheels in" in gpu_check.install(tmp_path / "none", tmp_path / "site")
    _wheel(tmp_path / "wheels", "spgpucheckdep")
    line = gpu_check.install(tmp_path / "wheels", tmp_path / "site")
    assert line.startswith("dependencies: installed spgpucheckdep") or "unpacked every wheel" in line
    assert (tmp_path / "site" / "spgpucheckdep" / "__init__.py").read_text() == "VALUE = 7\n"


def test_present_packages_are_not_installed(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "REQUIRED", {"json": "json"})
    monkeypatch.setattr(gpu_check, "OPTIONAL", {})
    assert gpu_check.install(tmp_path / "none", tmp_path / "site") == "dependencies: all present, nothing installed"
    assert not (tmp_path / "site").exists()


def test_an_existing_results_folder_is_refused(gpu_check, tmp_path, monkeypatch, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "summary.json").write_text("{}")
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--device", "cpu", "--out", str(tmp_path / "out")])
    assert gpu_check.main() == 2
    assert "already holds files" in capsys.readouterr().err
    assert (tmp_path / "out" / "summary.json").read_text() == "{}"


def test_summary_text_fits_80_columns(gpu_check):
    summary = {"device": "cuda", "started": "2026-01-01T00:00:00Z", "seconds": 300, "dependencies": "dependencies: x",
               "environment": {"device_name": "NVIDIA H200", "torch": "2.11", "cuda": "13.0", "nccl": "2.27",
                               "commit": "abc"},
               "steps": [{"step": "kernels", "status": "passed", "seconds": 20, "lines": ["word " * 40]},
                         {"step": "sp_run", "status": "skipped", "lines": ["no CUDA device visible here"]}],
               "not_proven": ["NCCL between ranks " * 6]}
    text = gpu_check._summary_text(summary)
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "[passed] kernels (20 s)" in text and "[skipped] sp_run (0 s)" in text
    assert json.dumps(summary)  # the JSON form is the same dict


def test_ring_blocks_keeps_its_rows_beside_its_result(tmp_path):
    result, rows = run_cpu_step("ring_blocks", tmp_path)
    assert result["status"] == "passed"
    assert {(r["causal"], r["layout"]) for r in rows} == {(False, "contiguous"), (True, "contiguous"),
                                                          (True, "zigzag")}
    assert all(r["efficiency"] > 0 for r in rows)


def test_the_commit_names_tracked_files_that_differ_from_it(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check_steps", REPO / "scripts" / "gpu_check_steps.py")
    steps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(steps)
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    sp.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "a.py").write_text("1\n")
    sp.run([*git, "add", "a.py"], cwd=tmp_path, check=True)
    sp.run([*git, "commit", "-qm", "a"], cwd=tmp_path, check=True)
    head = sp.run(["git", "rev-parse", "--short", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert steps.tree_commit(tmp_path) == head
    (tmp_path / "a.py").write_text("2\n")
    (tmp_path / "b.py").write_text("untracked\n")
    assert steps.tree_commit(tmp_path) == f"{head} + 1 changed tracked file"

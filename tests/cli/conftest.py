"""Run sp-plan's real entry point (run_app: exit codes, one-line errors) with captured streams."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sp_planner.cli import calibrate_cmd, plan_cmd, run_modes
from tests.cli.launch_stub import launch_stub


@pytest.fixture
def sp_plan(run_main) -> Callable[..., object]:
    """sp_plan(*args) -> CliResult, through sp-plan's main() as the console script calls it."""
    return lambda *args: run_main(plan_cmd, *args)


# The README's question, shared by the destination tests.
README_QUESTION = ["--model", "llama3-8b", "--hardware", "a800", "--nodes", "2", "--seq-len", "128k"]


def assert_one_line_error(result, *parts: str) -> None:
    """Exit 2, one 'error: ' line on stderr naming every part."""
    assert result.exit_code == 2, result
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for part in parts:
        assert part in result.stderr


@pytest.fixture(scope="module")
def plan_json(tmp_path_factory):
    """A plan.json of the README's question, written once per module."""
    from tests.conftest import run_cli_main

    path = tmp_path_factory.mktemp("plan") / "plan.json"
    assert run_cli_main(plan_cmd, *README_QUESTION, "--out", path).exit_code == 0
    return path


def notes_unwrapped(stderr: str) -> list[str]:
    """The 'note: ' paragraphs of `stderr`, each checked to fit 80 columns with its continuation
    lines indented under its text, and joined back into one line."""
    notes: list[str] = []
    for line in stderr.splitlines():
        assert len(line) <= 80, line
        if line.startswith("note: "):
            notes.append(line)
        else:
            assert line.startswith(" " * 6) and notes, stderr
            notes[-1] += " " + line.strip()
    return notes


@pytest.fixture
def no_launches(monkeypatch):
    """sp-run and sp-calibrate stop where they would start ranks (raising Launched), as no rank
    of a torchrun or SLURM launch."""
    for name in ("run_local", "run_node", "run_worker"):
        monkeypatch.setattr(run_modes, name, launch_stub)
    monkeypatch.setattr(calibrate_cmd, "_measure_locally", launch_stub)
    for variable in ("RANK", "WORLD_SIZE", "SLURM_NTASKS", "SLURM_PROCID", "LOCAL_RANK"):
        monkeypatch.delenv(variable, raising=False)

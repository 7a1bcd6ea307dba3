"""Run sp-plan's real entry point (run_app: exit codes, one-line errors) with captured streams."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from sp_planner.cli import plan_cmd


@dataclass(frozen=True)
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def run_sp_plan(*args: object) -> CliResult:
    """sp-plan's main() as the console script calls it, with stdout and stderr captured apart."""
    runner = CliRunner()
    with runner.isolation() as (out, err, _mixed):
        try:
            plan_cmd.main([str(a) for a in args])
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
        sys.stdout.flush()
        sys.stderr.flush()
        return CliResult(code, out.getvalue().decode(), err.getvalue().decode())


@pytest.fixture
def sp_plan() -> Callable[..., CliResult]:
    """sp_plan(*args) -> CliResult, through sp-plan's main() as the console script calls it."""
    return run_sp_plan

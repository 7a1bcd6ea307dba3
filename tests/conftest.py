"""Shared pytest fixtures."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType
from typing import NamedTuple

import pytest
from typer.testing import CliRunner


class CliResult(NamedTuple):
    exit_code: int
    stdout: str
    stderr: str


def run_cli_main(module: ModuleType, *args: object) -> CliResult:
    """A CLI module's main() as its console script calls it (run_app: exit codes, one-line errors),
    with stdout and stderr captured apart."""
    runner = CliRunner()
    with runner.isolation() as (out, err, _mixed):
        try:
            module.main([str(a) for a in args])
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
        sys.stdout.flush()
        sys.stderr.flush()
        return CliResult(code, out.getvalue().decode(), err.getvalue().decode())


@pytest.fixture
def run_main() -> Callable[..., CliResult]:
    """run_main(cli_module, *args) -> CliResult, through the module's main()."""
    return run_cli_main


@pytest.fixture(autouse=True)
def _pin_rich_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich reads COLUMNS and TERM: pin them so CLI output does not depend on the terminal."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("LINES", "50")
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.delenv("FORCE_COLOR", raising=False)

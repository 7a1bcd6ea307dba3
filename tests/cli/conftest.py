"""Run sp-plan's real entry point (run_app: exit codes, one-line errors) with captured streams."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sp_planner.cli import plan_cmd


@pytest.fixture
def sp_plan(run_main) -> Callable[..., object]:
    """sp_plan(*args) -> CliResult, through sp-plan's main() as the console script calls it."""
    return lambda *args: run_main(plan_cmd, *args)

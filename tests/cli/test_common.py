"""run_app: a pydantic ValidationError raised inside a command is bad input, not a crash."""

from __future__ import annotations

import pytest
import typer

from sp_planner.cli.common import run_app
from sp_planner.specs import Workload


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def build(seq_len: int, global_batch: int) -> None:
        Workload(seq_len=seq_len, global_batch=global_batch)

    return app


def test_validation_error_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as done:
        run_app(_app(), ["0", "--", "-3"])
    assert done.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("error: invalid Workload: seq_len: Input should be greater than 0; "
                            "global_batch: Input should be greater than 0\n")


def test_valid_input_exits_0():
    with pytest.raises(SystemExit) as done:
        run_app(_app(), ["8", "2"])
    assert done.value.code == 0

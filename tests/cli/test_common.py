"""run_app: a pydantic ValidationError raised inside a command is bad input, not a crash."""

from __future__ import annotations

import pytest
import typer

from sp_planner.cli.common import check_finite_seconds, run_app
from sp_planner.errors import UserInputError
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


def test_seconds_past_what_torch_distributed_holds_are_refused():
    # sp-run --timeout 1e10 timed every rank's store connection out at once (int64 nanoseconds
    # overflow past 9.2e9 s); 1e14 raised an OverflowError in the ranks.
    check_finite_seconds("--timeout", 1e9)
    check_finite_seconds("--timeout", None)
    with pytest.raises(UserInputError) as refused:
        check_finite_seconds("--timeout", 1e10)
    assert str(refused.value) == ("--timeout 1e+10: must be at most 1e+09 seconds (31 years; torch.distributed "
                                  "holds a timeout in int64 nanoseconds)")
    with pytest.raises(UserInputError, match="--join-timeout inf: must be a finite number of seconds"):
        check_finite_seconds("--join-timeout", float("inf"))

"""run_app: a pydantic ValidationError raised inside a command is bad input, not a crash."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from sp_planner.cli.common import check_finite_seconds, file_name, folder_name, run_app
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


@pytest.mark.parametrize("raw, message", [
    # Path(".yaml").suffix is "": sp-calibrate --out .yaml said the name "must end in .yaml or .yml".
    (".yaml", '.yaml is an extension alone, with no file name before .yaml ("$NAME.yaml" with NAME unset?); '
              "give a name before it, e.g. out.yaml"),
    ("runs/.JSON", 'runs/.JSON is an extension alone, with no file name before .JSON ("$NAME.JSON" with NAME '
                   "unset?); give a name before it, e.g. runs/out.JSON"),
    ("x/", "x/ ends in a slash, which names a folder; give a file name inside it"),
    # Path("x/.") is "x": `--out x/.` wrote a file x, as `--out x/` did.
    ("x/.", "x/. ends in /., which names a folder; give a file name inside it"),
    ("x/..", "x/.. ends in /.., which names a folder; give a file name inside it"),
])
def test_a_file_name_that_names_no_file_is_refused_saying_why(raw, message):
    with pytest.raises(typer.BadParameter) as refused:
        file_name(raw)
    assert refused.value.message == message


@pytest.mark.parametrize("raw", ["x.YAML", "p.yml", ".hidden.json", "out", ".", "/dev/stdout"])
def test_a_file_name_with_a_name_is_taken(raw):
    assert file_name(raw) == Path(raw)


def test_a_new_folder_named_as_a_file_is_refused_an_existing_folder_taken(tmp_path, monkeypatch):
    # `sp-report plan.json --out report.html` made a folder report.html holding index.html.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(typer.BadParameter) as refused:
        folder_name("report.HTML")
    assert refused.value.message == ("report.HTML ends in .HTML, a file's extension, and no such folder exists: "
                                     "this option names a folder to write into; give a folder name, e.g. report")
    with pytest.raises(typer.BadParameter, match=r"^sim/\.json ends in \.json, .* e\.g\. sim/out$"):
        folder_name("sim/.json")
    (tmp_path / "runs.json").mkdir()
    (tmp_path / "plan.json").write_text("{}")  # an existing file: check_folder_destination says what it is
    assert [folder_name(raw) for raw in ("runs.json", "plan.json", "sim", "sim.v2")] == [
        Path("runs.json"), Path("plan.json"), Path("sim"), Path("sim.v2")]

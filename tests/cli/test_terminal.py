"""The terminal's width and wrapping at spaces (sp_planner.cli.terminal)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from sp_planner.cli.terminal import pack_words, stdout_console, terminal_columns, wrap_at_spaces, wrote_lines


@pytest.mark.parametrize(("columns", "expected"), [("1", 20), ("19", 20), ("20", 20), ("30", 30), ("80", 80),
                                                    ("200", 80)])
def test_the_width_is_columns_from_20_up_to_80(monkeypatch, columns, expected):
    monkeypatch.setenv("COLUMNS", columns)
    assert terminal_columns() == expected


def test_a_one_column_terminal_gets_the_answer_not_a_traceback(run_main, monkeypatch):
    # COLUMNS=1 (a broken environment): Rich failed an assertion laying out the ranked table (fuzzing,
    # stop 57); the answer is laid out for 20 columns, as COLUMNS=20 lays it out.
    from sp_planner.cli import plan_cmd

    question = ["--model", "llama3-8b", "--hardware", "a800", "--nodes", "1", "--seq-len", "4k"]
    monkeypatch.setenv("COLUMNS", "1")
    assert stdout_console().width == 20
    one = run_main(plan_cmd, *question)
    assert one.exit_code == 0 and one.stderr == "", one
    monkeypatch.setenv("COLUMNS", "20")
    assert one.stdout == run_main(plan_cmd, *question).stdout


def test_a_pipe_gets_80_columns(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)

    def no_terminal(fd=None):
        raise OSError("not a terminal")

    monkeypatch.setattr(os, "get_terminal_size", no_terminal)
    assert terminal_columns() == 80


def test_text_breaks_at_its_spaces_only():
    # A hyphenated flag and a path wider than the line each keep a line of their own, whole.
    text = "sp-plan --cpu-offloading-num-layers /a/path/wider/than/the/line ok"
    assert wrap_at_spaces(text, 20, indent="- ", hang="  ") == [
        "- sp-plan", "  --cpu-offloading-num-layers", "  /a/path/wider/than/the/line", "  ok"]
    # Without a hang the indent leads every line.
    assert wrap_at_spaces("one two three", 9, indent="> ") == ["> one two", "> three"]


def test_rich_on_a_redirected_stdout_gets_80_columns_whatever_stdin_is(monkeypatch):
    # `sp-plan ... > answer.txt` in a 200-column terminal: stdin and stderr are that terminal, stdout
    # a file. Rich alone took stdin's 200 columns (a why-paragraph of one 398-column line).
    monkeypatch.delenv("COLUMNS", raising=False)
    stdout = sys.__stdout__.fileno()

    def only_stdin_and_stderr(fd=stdout):
        if fd == stdout:
            raise OSError("not a terminal")
        return os.terminal_size((200, 50))

    monkeypatch.setattr(os, "get_terminal_size", only_stdin_and_stderr)
    assert stdout_console().width == 80
    # A terminal on stdout keeps its own width (sp-plan lays its tables out to 120 columns).
    monkeypatch.setattr(os, "get_terminal_size", lambda fd=stdout: os.terminal_size((120, 50)))
    assert stdout_console().width == 120 and terminal_columns() == 80


def test_words_pack_whole_even_with_spaces_inside():
    assert pack_words(["wrote", "my dir/a b.png", "and", "c.csv"], 20) == ["wrote my dir/a b.png", "and c.csv"]
    assert pack_words(["wrote", "x" * 30, "ok"], 20) == ["wrote", "x" * 30, "ok"]


def test_files_of_one_folder_name_the_folder_once():
    long = Path("/data/" + "a-folder-with-a-long-name-" * 3)
    assert wrote_lines([long / "predicted_vs_measured.png", long / "validation.csv"], 80) == [
        "wrote predicted_vs_measured.png and validation.csv in", str(long)]
    assert wrote_lines([Path("out/a.png"), Path("out/b.csv"), Path("out/c.json")], 80) == [
        "wrote a.png, b.csv and c.json in out"]
    # The current folder is not named; files of several folders keep their paths.
    assert wrote_lines([Path("timeline.json"), Path("gantt.png")], 80) == ["wrote timeline.json and gantt.png"]
    assert wrote_lines([Path("x/a"), Path("y/b")], 80) == ["wrote x/a and y/b"]
    assert wrote_lines([Path("out/plan.json")], 80) == ["wrote out/plan.json"]

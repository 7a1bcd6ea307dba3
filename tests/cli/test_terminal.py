"""The terminal's width and wrapping at spaces (sp_planner.cli.terminal)."""

from __future__ import annotations

import os

import pytest

from sp_planner.cli.terminal import terminal_columns, wrap_at_spaces


@pytest.mark.parametrize(("columns", "expected"), [("30", 30), ("80", 80), ("200", 80)])
def test_the_width_is_columns_up_to_80(monkeypatch, columns, expected):
    monkeypatch.setenv("COLUMNS", columns)
    assert terminal_columns() == expected


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

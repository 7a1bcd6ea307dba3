"""The progress bar appears on a terminal only once the work passes half a second."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from sp_planner.cli import progress
from sp_planner.cli.progress import delayed_progress

SHOW_AFTER_S = 0.1


@pytest.fixture(autouse=True)
def _fast_interactive_term(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")  # conftest pins TERM=dumb, which Rich treats as not interactive
    monkeypatch.setattr(progress, "SHOW_AFTER_S", SHOW_AFTER_S)  # 0.5 s in use; shorter keeps the test quick


def _terminal() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=80), buffer


def test_quick_work_shows_nothing():
    console, buffer = _terminal()
    with delayed_progress("searching plans", console=console) as update:
        update(1, 2)
    assert buffer.getvalue() == ""


def test_slow_work_shows_the_bar():
    console, buffer = _terminal()
    with delayed_progress("searching plans", console=console) as update:
        update(3, 10)
        time.sleep(SHOW_AFTER_S * 5)
    assert "searching plans" in buffer.getvalue()
    assert "3/10" in buffer.getvalue()


@pytest.mark.parametrize(("force_terminal", "term"), [(False, "xterm"), (True, "dumb")])
def test_no_bar_off_an_interactive_terminal_however_long(monkeypatch, force_terminal, term):
    monkeypatch.setenv("TERM", term)
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=force_terminal)
    with delayed_progress("searching plans", console=console):
        time.sleep(SHOW_AFTER_S * 3)
    assert buffer.getvalue() == ""

"""Shared pytest fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _pin_rich_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich reads COLUMNS and TERM: pin them so CLI output does not depend on the terminal."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("LINES", "50")
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.delenv("FORCE_COLOR", raising=False)

"""Checks shared by the tests of tables laid out for a console: every line fits, nothing is cut."""

from __future__ import annotations

from sp_planner.present.fit import FitTable

WIDTHS = [40, 45, 50, 55, 60, 66, 72, 76, 79, 80, 100, 140, 200]


def words(text: str) -> list[str]:
    """The words a reader sees, box-drawing characters aside."""
    return "".join(" " if "\u2500" <= ch <= "\u257f" else ch for ch in text).split()


def assert_whole(text: str, spec: FitTable, width: int) -> None:
    """Every line within `width`, nothing cut to "…", every figure on one line whole, every word
    of a prose cell, a header and the title whole, and every row's first cell shown."""
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width, [line for line in lines if len(line) > width]
    assert "…" not in text
    seen = words(text)
    for row in spec.rows:
        for column, cell in zip(spec.columns, row):
            if column.prose:
                assert all(word in seen for word in cell.split()), (cell, width)
            else:
                assert any(cell in line for line in lines), (cell, width)
    for word in (*spec.title.split(), *(w for c in spec.columns for w in c.name.split())):
        assert word in seen, (word, width)

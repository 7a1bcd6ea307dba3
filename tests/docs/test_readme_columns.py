"""README.md's "Reports" table documents every column plans.csv and `sp-plan --format csv` write."""

from __future__ import annotations

import re
from pathlib import Path

from sp_planner.estimate import CommBytes, CommLinks, MemoryBreakdown, TimeBreakdown
from sp_planner.plan import RULES
from sp_planner.report.csv import PLAN_CSV_COLUMNS

README = Path(__file__).resolve().parents[2] / "README.md"


def _column_table() -> dict[str, str]:
    """First cell (the column names, as written) -> the meaning cell."""
    text = README.read_text(encoding="utf-8")
    start = text.index("`plans.csv` columns")
    rows = {}
    for line in text[start:text.index("\n## ", start)].splitlines():
        if line.startswith("| `"):
            _, names, meaning, _ = line.split("|", 3)
            rows[names.strip()] = meaning
    return rows


def _names(cell: str) -> set[str]:
    return set(re.findall(r"`([a-z0-9_<>]+)`", cell))


def test_every_csv_column_is_documented():
    rows = _column_table()
    documented = set().union(*(_names(names) for names in rows))
    kinds = _names(rows["`comm_<kind>_bytes`"])
    parts = {
        "comm_": {f"comm_{kind}_bytes" for kind in kinds},
        "link_": {f"link_{kind}" for kind in kinds},
        "mem_": {f"mem_{part}_bytes" for part in _names(rows["`mem_<part>_bytes`"])},
        "time_": {f"time_{part}_s" for part in _names(rows["`time_<part>_s`"])},
    }
    expanded = documented.union(*parts.values())
    # sp-plan --format csv's columns: plans.csv's and `expressible`.
    assert [column for column in PLAN_CSV_COLUMNS if column not in expanded] == []
    # The breakdowns' parts are the estimate's, every one of them.
    assert {f"comm_{kind}_bytes" for kind in CommBytes.model_fields} <= parts["comm_"]
    assert {f"link_{kind}" for kind in CommLinks.model_fields} <= parts["link_"]
    assert {f"mem_{name}" for name in MemoryBreakdown.model_fields} <= parts["mem_"]
    assert {f"time_{name}" for name in TimeBreakdown.model_fields} <= parts["time_"]


def test_every_rule_a_reason_can_name_is_listed():
    listed = _names(_column_table()["`reason`"])
    assert set(RULES) | {"oom"} <= listed

"""The README's accuracy table is `sp-validate --format markdown`, regenerated, never hand-edited."""

from __future__ import annotations

import re
from pathlib import Path

from sp_planner.cli import validate_cmd

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_accuracy_table_matches_sp_validate(run_main):
    block = re.search(r"<!-- sp-validate:begin -->\n(.*?)\n<!-- sp-validate:end -->", README.read_text(), re.DOTALL)
    assert block, "README lacks the sp-validate block"
    result = run_main(validate_cmd, "--format", "markdown")
    assert result.exit_code == 0, result.stderr
    assert block.group(1) == result.stdout.rstrip("\n"), (
        "README accuracy table is stale: paste `sp-validate --format markdown` between the markers")


def test_readme_prose_figures_match_the_scored_corpus(scored):
    # The prose under the table quotes figures the markdown block does not hold: keep them in step.
    text = " ".join(README.read_text().split())
    head = re.search(r"corpus MAPE ([\d.]+)% over (\d+) runs; ([\d.]+)% without the (\d+) MoE runs", text)
    optimistic = re.search(r"is optimistic in (\d+) runs of (\d+)", text)
    assert head and optimistic, "README lost the accuracy prose this test checks"
    rows = scored.rows
    dense = [r for r in rows if not r.moe]
    dense_mape = sum(abs(r.error_percent) for r in dense) / len(dense)
    assert head.groups() == (f"{scored.mape_percent:.1f}", str(len(rows)), f"{dense_mape:.1f}",
                             str(len(rows) - len(dense)))
    # Optimistic: predicted faster than measured, whatever figure the source published (a step
    # time's error has the opposite sign of a throughput's).
    assert optimistic.groups() == (str(sum(r.speed_error_percent > 0 for r in rows)), str(len(rows)))

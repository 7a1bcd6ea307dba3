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

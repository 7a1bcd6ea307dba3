"""Rewrite what is generated from the validation corpus after a cost-model change: the README
accuracy table (`sp-validate --format markdown` between its markers),
sp_planner/data/prediction_band.json and its table in docs/cost-model.md (between its markers).
tests/validation/test_readme.py and test_band.py fail until this has been run. Usage: python scripts/regen_validation.py
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from sp_planner.present.uncertainty import band_table_markdown
from sp_planner.validation.band import prediction_band
from sp_planner.validation.corpus import default_corpus_path, load_corpus
from sp_planner.validation.score import score_corpus

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    band = prediction_band(score_corpus(load_corpus(default_corpus_path())))
    band_path = ROOT / "sp_planner" / "data" / "prediction_band.json"
    band_path.write_text(json.dumps(band.model_dump(), indent=2) + "\n", encoding="utf-8")
    table = subprocess.run([sys.executable, "-m", "sp_planner.cli.validate_cmd", "--format", "markdown"],
                           check=True, capture_output=True, text=True).stdout.rstrip("\n")
    _replace_between(ROOT / "README.md", "sp-validate", table)
    _replace_between(ROOT / "docs" / "cost-model.md", "prediction-band", band_table_markdown(band))
    print(f"wrote {band_path.relative_to(ROOT)}, its table in docs/cost-model.md and the README accuracy table")


def _replace_between(path: Path, marker: str, body: str) -> None:
    text, count = re.subn(rf"(<!-- {marker}:begin -->\n).*?(<!-- {marker}:end -->)",
                          lambda m: m.group(1) + body + "\n" + m.group(2), path.read_text(encoding="utf-8"),
                          flags=re.DOTALL)
    if count != 1:
        raise SystemExit(f"{path.name} lacks the {marker} markers")
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()

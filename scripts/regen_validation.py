"""Rewrite the two files generated from the validation corpus after a cost-model change:
the README accuracy table (`sp-validate --format markdown` between its markers) and
sp_planner/data/prediction_band.json. tests/validation/test_readme.py and test_band.py fail
until this has been run. Usage: python scripts/regen_validation.py
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

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
    readme = ROOT / "README.md"
    text, count = re.subn(r"(<!-- sp-validate:begin -->\n).*?(\n<!-- sp-validate:end -->)",
                          lambda m: m.group(1) + table + m.group(2), readme.read_text(encoding="utf-8"),
                          flags=re.DOTALL)
    if count != 1:
        raise SystemExit("README.md lacks the sp-validate markers")
    readme.write_text(text, encoding="utf-8")
    print(f"wrote {band_path.relative_to(ROOT)} and the README accuracy table")


if __name__ == "__main__":
    main()

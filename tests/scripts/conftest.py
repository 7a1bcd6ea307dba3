"""Shared by the tests of scripts/: run one gpu-check step on CPU and read its two JSON files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_cpu_step(step: str, out: Path) -> tuple[dict, list[dict]]:
    """(the step's result, its benchmark's rows) from `gpu_check_steps.py STEP --device cpu`: the
    result in STEP.json, the rows in STEP_rows.json beside it (a first H200 run lost ring_blocks'
    rows when they shared the result's name)."""
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check_steps.py"), step, "--device", "cpu",
                           "--out", str(out)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    result = json.loads((out / f"{step}.json").read_text())
    assert result["step"] == step
    return result, json.loads((out / f"{step}_rows.json").read_text())

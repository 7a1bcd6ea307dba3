"""How long sp-plan takes to start: the wall time of four kinds of command, each in a fresh process
(best of 5, after one untimed run that writes the bytecode caches).

- help: `sp-plan --help` (typer's own page, no planner work)
- usage error: an option the parser refuses (`--nodes 0`), before the command body runs
- input error: `--model nosuch`, refused by the command's first check (exit 2)
- plan: a small search (LLAMA3-8B at 32K tokens on one node of 8 H100s), table to stdout

sp-plan has no --version. The first three kinds do no search; what they spend is imports.

Run: .venv/bin/python benchmarks/startup.py   (this checkout's sp_planner, whatever is installed)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENTRY = "from sp_planner.cli.launch import plan; plan()"
QUESTION = ["--model", "llama3-8b", "--hardware", "h100", "--nodes", "1", "--seq-len", "32k"]
KINDS = {
    "help": (["--help"], 0),
    "usage error": ([*QUESTION[:4], "--nodes", "0", *QUESTION[6:]], 2),
    "input error": (["--model", "nosuch", *QUESTION[2:]], 2),
    "plan": (QUESTION, 0),
}
RUNS = 5


def wall_s(args: list[str], expected_rc: int) -> float:
    """Seconds one `sp-plan ARGS` takes from spawn to exit; its exit code checked."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", ENTRY, *args], env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != expected_rc:
        raise SystemExit(f"sp-plan {' '.join(args)} exited {done.returncode}, not {expected_rc}:\n"
                         f"{done.stderr.decode()}")
    return elapsed


def main() -> None:
    bare = min(wall_s_python() for _ in range(RUNS))
    print(f"{'command':<12} {'best s':>7} {'median s':>9}   (python -c pass: {bare:.3f} s)")
    for kind, (args, expected_rc) in KINDS.items():
        wall_s(args, expected_rc)  # bytecode caches
        times = sorted(wall_s(args, expected_rc) for _ in range(RUNS))
        print(f"{kind:<12} {times[0]:>7.3f} {times[RUNS // 2]:>9.3f}")


def wall_s_python() -> float:
    """The interpreter's own start-up, the floor under every command."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()

"""How long sp-plan takes to start: the wall and CPU time of four kinds of command, each in a fresh
process (best and median of 5, after one untimed run that writes the bytecode caches; CPU seconds
are the steadier figure on a loaded machine).

- help: `sp-plan --help` (typer's own page, no planner work)
- usage error: an option the parser refuses (`--nodes 0`), before the command body runs
- input error: `--model nosuch`, refused by the command's first check (exit 2)
- plan: a small search (LLAMA3-8B at 32K tokens on one node of 8 H100s), table to stdout

sp-plan has no --version. The first three kinds do no search; what they spend is imports.

Run: .venv/bin/python benchmarks/startup.py   (this checkout's sp_planner, whatever is installed)
"""

from __future__ import annotations

import os
import resource
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


def timed_s(command: list[str], expected_rc: int = 0) -> tuple[float, float]:
    """(wall, CPU) seconds `command` takes from spawn to exit; its exit code checked."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != expected_rc:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}, not {expected_rc}:\n{done.stderr.decode()}")
    return elapsed, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def _row(name: str, command: list[str], expected_rc: int = 0) -> str:
    timed_s(command, expected_rc)  # bytecode caches
    wall, cpu = (sorted(column) for column in zip(*(timed_s(command, expected_rc) for _ in range(RUNS))))
    return f"{name:<12} {wall[0]:>7.3f} {wall[RUNS // 2]:>7.3f} {cpu[0]:>7.3f} {cpu[RUNS // 2]:>7.3f}"


def main() -> None:
    print(f"{'command':<12} {'wall s':>15} {'CPU s':>15}")
    print(f"{'':<12} {'best':>7} {'median':>7} {'best':>7} {'median':>7}")
    print(_row("python", [sys.executable, "-c", "pass"]))  # the interpreter alone: the floor
    for kind, (args, expected_rc) in KINDS.items():
        print(_row(kind, [sys.executable, "-c", ENTRY, *args], expected_rc))


if __name__ == "__main__":
    main()

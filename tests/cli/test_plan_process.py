"""sp-plan in a fresh process: no torch import, stderr and exit codes as a shell sees them."""

from __future__ import annotations

import json
import subprocess
import sys

RUN_MAIN = """
import sys
from sp_planner.cli import plan_cmd
try:
    plan_cmd.main(sys.argv[1:])
finally:
    sys.stderr.write("torch imported\\n" if "torch" in sys.modules else "")
"""


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {"COLUMNS": "200", "TERM": "dumb", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", RUN_MAIN, *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_search_runs_without_importing_torch():
    done = _run("--model", "llama3-8b", "--hardware", "a800", "--nodes", "2", "--seq-len", "128k",
                "--format", "json", "--top", "2")
    assert done.returncode == 0, done.stderr
    assert "torch imported" not in done.stderr
    assert done.stderr == ""
    assert len(json.loads(done.stdout)["plans"]) == 2


def test_bad_input_in_a_real_process_is_one_line_and_exit_2():
    done = _run("--model", "llama3-8b", "--hardware", "a800", "--nodes", "2", "--seq-len", "lots")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == "error: --seq-len 'lots' is not a token count; use an integer or a suffix k/M, e.g. 128k\n"

"""Test-only fault injection: kill one rank with SIGKILL at a named point of the step.

SP_RUN_FAULT="RANK@POINT" (e.g. "3@ring-backward-1") makes global rank RANK kill itself when it
reaches POINT, so the launcher's handling of a rank that dies without a word can be tested in
the middle of real communication. Points: "ring-backward-<step>" (sp_planner.executor.ring).
Hidden: not a CLI option, and a no-op unless the variable is set. SP_RUN_FAULT_MARK names a file
that gets the wall-clock time of the kill (benchmarks/fault_latency.py measures from it).
"""

from __future__ import annotations

import os
import signal
import time

FAULT_ENV = "SP_RUN_FAULT"
MARK_ENV = "SP_RUN_FAULT_MARK"


def fault_spec(rank: int, point: str) -> str:
    """The SP_RUN_FAULT value that kills `rank` at `point`."""
    return f"{rank}@{point}"


def fault_point(point: str) -> None:
    """SIGKILL this process if SP_RUN_FAULT names this rank and `point`."""
    spec = os.environ.get(FAULT_ENV)
    if spec and spec == fault_spec(int(os.environ.get("RANK", "-1")), point):
        mark = os.environ.get(MARK_ENV)
        if mark:
            with open(mark, "w") as f:
                f.write(repr(time.time()))
        os.kill(os.getpid(), signal.SIGKILL)

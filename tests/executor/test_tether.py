"""torchrun ends with the process that started it (sp_planner.executor.tether): a SIGKILLed sp-run
leaves no launch behind. The launch is shaped as torchrun's: an agent in a session of its own
starts its rank in another session and, on SIGTERM, stops the rank and leaves (torch's elastic
agent: SignalException -> _shutdown)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sp_planner.executor.tether import TETHER_MODULE, tethered

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")

_AGENT = """
import signal, subprocess, sys, time
rank = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True)
def stop(*_):
    rank.kill(); rank.wait(); sys.exit(143)
signal.signal(signal.SIGTERM, stop)
open(sys.argv[1], 'w').write(f'{rank.pid}')
time.sleep(600)
"""
# The starter: sp-run's run_local (tethered), or the same launch started plainly (the control).
_STARTER = """
import subprocess, sys
from pathlib import Path
from sp_planner.executor.launch import run_local
command = [sys.executable, '-c', sys.argv[1], sys.argv[2]]
if sys.argv[3] == 'run_local':
    run_local(command, result_dir=Path(sys.argv[2]).parent, world_size=1, timeout_s=600)
else:
    subprocess.Popen(command, start_new_session=True).wait()
"""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _agent_pid(rank_pid: int) -> int:
    """The rank's parent (the agent: re-parented only once the agent is gone)."""
    return int(Path(f"/proc/{rank_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_the_command_is_run_through_the_tether_with_this_pid():
    assert tethered(["torchrun", "-m", "x"]) == [sys.executable, "-m", TETHER_MODULE, str(os.getpid()), "--",
                                                 "torchrun", "-m", "x"]


@pytest.mark.parametrize("start, survives", [("run_local", False), ("plain", True)])
def test_a_sigkilled_starter_leaves_no_launch_when_tethered(tmp_path, start, survives):
    pid_file = tmp_path / "rank.pid"
    starter = subprocess.Popen([sys.executable, "-c", _STARTER, _AGENT, str(pid_file), start])
    deadline = time.monotonic() + 30.0
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and starter.poll() is None, "the launch did not start"
        time.sleep(0.05)
    rank_pid = int(pid_file.read_text())
    agent_pid = _agent_pid(rank_pid)
    try:
        starter.kill()  # SIGKILL: the starter runs no code of its own
        starter.wait()
        deadline = time.monotonic() + (2.0 if survives else 10.0)  # the control: long enough to have ended
        while (_alive(rank_pid) or _alive(agent_pid)) and time.monotonic() < deadline:  # agent exits last
            time.sleep(0.05)
        assert _alive(rank_pid) is survives
        assert _alive(agent_pid) is survives
    finally:
        for pid in (rank_pid, agent_pid):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_parent_gone_before_the_tether_is_set_ends_it(tmp_path):
    done = subprocess.run([sys.executable, "-m", TETHER_MODULE, "1", "--", "true"], capture_output=True)
    assert done.returncode == 128 + signal.SIGTERM  # our parent is not pid 1: nobody would stop it

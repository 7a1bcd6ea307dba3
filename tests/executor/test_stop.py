"""Stopping a launch (sp_planner.executor.stop): every process that carries the launch's marker
ends, in whatever session it runs and whoever its parent is now."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sp_planner.executor.stop import (LAUNCH_ENV, _follow, _running, marked_pids, new_marker, signal_handlers,
                                      signals_noted, stop_launch, survivors_note)

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")

# An "agent" shaped as torchrun's: it starts its "rank" in a session of its own (as
# SubprocessHandler does), the rank ignores SIGTERM (a rank inside a long kernel), and the agent
# dies of SIGTERM at once, so the rank is orphaned, out of the agent's process group.
_RANK = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); time.sleep(600)"
_AGENT = (f"import subprocess, sys; r = subprocess.Popen([sys.executable, '-c', {_RANK!r}], start_new_session=True, "
          "stdout=subprocess.PIPE); r.stdout.readline(); print(r.pid, flush=True); r.wait()")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def launch():
    marker = new_marker()
    agent = subprocess.Popen([sys.executable, "-c", _AGENT], start_new_session=True, stdout=subprocess.PIPE,
                             text=True, env=dict(os.environ, **{LAUNCH_ENV: marker}))
    rank_pid = int(agent.stdout.readline())
    yield agent, marker, rank_pid
    for pid in (rank_pid, agent.pid):  # only if a test failed: leave nothing behind
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    agent.wait()


def test_marked_processes_are_found_in_any_session(launch):
    agent, marker, rank_pid = launch
    assert os.getsid(rank_pid) != os.getsid(agent.pid)  # killpg on the agent would miss it
    assert marked_pids(marker) == sorted([agent.pid, rank_pid])
    assert marked_pids(new_marker()) == []


def test_a_rank_deaf_to_sigterm_is_killed_after_the_grace_and_waited_for(launch):
    agent, marker, rank_pid = launch
    start = time.monotonic()
    assert stop_launch(agent, marker, grace_s=1.0, kill_wait_s=5.0) == []
    took_s = time.monotonic() - start
    assert agent.returncode == -signal.SIGTERM  # the agent went at once; its rank held on until SIGKILL
    assert not _alive(rank_pid)
    assert 1.0 <= took_s < 5.0


def test_a_followed_process_runs_until_it_is_a_zombie_and_a_reused_pid_is_not_it():
    # An exiting rank stops showing its environment (its mark) before it has ended: stop_launch
    # follows each marked pid by its start time until the process is a zombie or gone.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        seen: dict[int, str] = {}
        _follow([proc.pid], seen)
        assert _running(proc.pid, seen[proc.pid])
        assert not _running(proc.pid, str(int(seen[proc.pid]) + 1))  # a later process on the same pid
        proc.kill()
        deadline = time.monotonic() + 5.0
        while _alive(proc.pid) and time.monotonic() < deadline:  # killed, not yet reaped: a zombie
            time.sleep(0.01)
        assert Path(f"/proc/{proc.pid}").exists() and not _running(proc.pid, seen[proc.pid])
    finally:
        proc.kill()
        proc.wait()
    assert not _running(proc.pid, seen[proc.pid])


def test_a_finished_launch_is_left_as_it_is():
    proc = subprocess.Popen([sys.executable, "-c", "pass"], env=dict(os.environ, **{LAUNCH_ENV: new_marker()}))
    proc.wait()
    assert stop_launch(proc, "unused", grace_s=0.0) == []
    assert proc.returncode == 0


def test_survivors_are_named_and_none_says_nothing():
    assert survivors_note([]) == ""
    assert survivors_note([41]).startswith("1 rank process still running after SIGKILL (pid 41; ")
    assert survivors_note([41, 42]).startswith("2 rank processes still running after SIGKILL (pid 41, 42; ")


def test_handlers_are_set_in_the_main_thread_and_put_back():
    def mine(signum, frame):
        pass

    def other(signum, frame):
        pass

    before = signal.getsignal(signal.SIGUSR1)
    elsewhere = []
    with signal_handlers({signal.SIGUSR1: mine}):
        assert signal.getsignal(signal.SIGUSR1) is mine

        def in_a_thread():  # signal.signal would raise ValueError here: the handler is left as it is
            with signal_handlers({signal.SIGUSR1: other}):
                elsewhere.append(signal.getsignal(signal.SIGUSR1))

        thread = threading.Thread(target=in_a_thread)
        thread.start()
        thread.join()
        assert elsewhere == [mine]
    assert signal.getsignal(signal.SIGUSR1) == before


def test_a_second_stop_signal_during_the_stop_is_noted_not_raised():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with signals_noted() as noted:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handlers run between bytecodes
    assert noted == ["Ctrl-C", "SIGTERM"]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before

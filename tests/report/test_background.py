from __future__ import annotations

import os
import time

import pytest

from sp_planner.report import background
from sp_planner.report.background import Background

pytestmark = pytest.mark.skipif(not background.can_fork(), reason="writes in a forked child only on Linux")

CHANGED_IN_CHILD: list[int] = []


def test_the_write_runs_in_a_child_and_wait_returns_when_it_is_done(tmp_path):
    target = tmp_path / "out.txt"

    def write():
        CHANGED_IN_CHILD.append(os.getpid())
        target.write_text(f"written by {os.getpid()}")

    job = Background.start(write)
    assert job is not None
    job.wait()
    writer_pid = int(target.read_text().split()[-1])
    assert writer_pid != os.getpid()
    assert CHANGED_IN_CHILD == []  # the child's memory is its own


@pytest.mark.parametrize("error, line", [
    (OSError(28, "No space left on device"), "No space left on device"),
    (ValueError("two\nlines"), "two lines"),
    (KeyboardInterrupt(), "KeyboardInterrupt"),
])
def test_a_failure_in_the_child_is_one_line_raised_by_wait(error, line):
    def write():
        raise error

    job = Background.start(write)
    assert job is not None
    with pytest.raises(OSError) as failed:
        job.wait()
    assert str(failed.value) == line


def test_stop_ends_a_child_still_writing_and_reaps_it():
    job = Background.start(lambda: time.sleep(60))
    assert job is not None
    pid = job._pid
    started = time.monotonic()
    job.stop()
    assert time.monotonic() - started < 10
    with pytest.raises(ChildProcessError):  # reaped: no zombie left
        os.waitpid(pid, os.WNOHANG)
    job.stop()  # twice is harmless


def test_no_fork_outside_linux(monkeypatch):
    monkeypatch.setattr(background.sys, "platform", "darwin")
    assert Background.start(lambda: None) is None


def test_a_failed_fork_leaves_the_write_to_the_caller(monkeypatch):
    def no_fork():
        raise BlockingIOError(11, "Resource temporarily unavailable")

    before = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(background.os, "fork", no_fork)
    assert Background.start(lambda: None) is None
    assert len(os.listdir("/proc/self/fd")) == before  # the pipe is closed again

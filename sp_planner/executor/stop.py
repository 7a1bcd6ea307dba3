"""Stopping a launch: torchrun and every rank it started, with none left running (torch-free).

torchrun's agent starts each worker in a session of its own (start_new_session=True in
torch/distributed/elastic/multiprocessing/subprocess_handler/subprocess_handler.py, torch 2.13),
so signalling the agent's process group misses the ranks; and when the agent is SIGKILLed before
its workers exit (it gives them 30 s, elastic/multiprocessing/api.py `_close`), they are
re-parented to init and run on. A rank inside a long kernel or a blocking C++ call (gloo's
rendezvous, a collective) runs its Python SIGTERM handler only when that call returns.

So every process of a launch carries a marker in its environment, which torchrun's workers
inherit (SubprocessHandler copies os.environ), and the stop finds them by it in /proc, whatever
their session or parent: SIGTERM to all, then SIGKILL to whatever is left after a grace period,
then wait until they are gone. Without /proc (macOS) only the agent's process group is signalled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

LAUNCH_ENV = "SP_RUN_LAUNCH"
# Seconds a rank gets to write its error file and leave after SIGTERM before SIGKILL (the ranks'
# own handler writes one small file); then how long SIGKILLed processes get to disappear.
GRACE_S = 5.0
KILL_WAIT_S = 5.0
_POLL_S = 0.1


def new_marker() -> str:
    """A value for LAUNCH_ENV unique to one launch."""
    return uuid.uuid4().hex


def marked_pids(marker: str, proc_dir: Path = Path("/proc")) -> list[int]:
    """Live processes whose environment holds LAUNCH_ENV=marker (a zombie's environ reads empty)."""
    entry = f"{LAUNCH_ENV}={marker}".encode()
    found = []
    try:
        entries = list(proc_dir.iterdir())
    except OSError:  # no /proc
        return []
    for path in entries:
        if not path.name.isdigit() or int(path.name) == os.getpid():
            continue
        try:
            if entry in (path / "environ").read_bytes().split(b"\0"):
                found.append(int(path.name))
        except OSError:  # gone meanwhile, or another user's
            continue
    return sorted(found)


def _signal_all(proc: subprocess.Popen, pids: list[int], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)  # torchrun (its own session: start_new_session in run_local)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            continue


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (state first, start time 20th), or None
    where the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _follow(pids: list[int], seen: dict[int, str]) -> None:
    """Note each newly marked pid with its start time, which tells the process from a later one
    that reuses its pid."""
    for pid in pids:
        if pid not in seen and (fields := _stat_fields(pid)) is not None:
            seen[pid] = fields[19]


def _running(pid: int, start: str) -> bool:
    """Whether the process `pid` that started at `start` has not yet exited (a zombie, state Z
    or X, has)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[19] == start and fields[0] not in ("Z", "X")


def _gone_by(proc: subprocess.Popen, marker: str, deadline: float, seen: dict[int, str]) -> list[int]:
    """Wait until torchrun has exited and no marked process is left, or the deadline; the marked
    processes still alive. A process is followed from the first scan that finds it marked (`seen`,
    pid -> start time, updated) until it is a zombie or gone: an exiting one stops showing its
    environment (and so its mark) before it has ended."""
    while True:
        proc.poll()  # reap torchrun
        _follow(marked_pids(marker), seen)
        left = [pid for pid, start in sorted(seen.items()) if _running(pid, start)]
        if proc.returncode is not None and not left:
            return []
        if time.monotonic() >= deadline:
            return left
        time.sleep(_POLL_S)


def stop_launch(proc: subprocess.Popen, marker: str, grace_s: float = GRACE_S,
                kill_wait_s: float = KILL_WAIT_S) -> list[int]:
    """SIGTERM torchrun and every process of its launch, SIGKILL whatever is left after `grace_s`,
    and wait for them; returns the pids still alive after that (a process stuck in the kernel,
    which even SIGKILL cannot end at once)."""
    pids = marked_pids(marker)
    if proc.poll() is not None and not pids:
        return []
    _signal_all(proc, pids, signal.SIGTERM)
    seen: dict[int, str] = {}
    _follow(pids, seen)
    left = _gone_by(proc, marker, time.monotonic() + grace_s, seen)
    if proc.returncode is None or left:
        _signal_all(proc, left, signal.SIGKILL)
        left = _gone_by(proc, marker, time.monotonic() + kill_wait_s, seen)
    return left


def survivors_note(pids: list[int]) -> str:
    """'' when every rank process ended, else what is still running (the message must not say
    that every rank was stopped)."""
    if not pids:
        return ""
    return (f"{len(pids)} rank process{'es' if len(pids) > 1 else ''} still running after SIGKILL "
            f"(pid {', '.join(map(str, pids))}; most likely stuck in the kernel on a device or network call)")


@contextmanager
def signal_handlers(handlers: Mapping[signal.Signals, Callable[[int, FrameType | None], Any]]) -> Iterator[None]:
    """`handlers` in place while the block runs, the previous ones back after it (main thread only:
    signal.signal refuses any other, where the handlers stay as they are)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def signals_noted() -> Iterator[list[str]]:
    """While a stop runs, a further Ctrl-C or SIGTERM (pressed twice, a scheduler's repeat) is
    noted in the yielded list instead of raising, so it cannot cut the stop short and leave ranks
    running (main thread only; elsewhere the handlers stay as they are)."""
    noted: list[str] = []
    names = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}

    def note(signum, frame):
        noted.append(names[signum])

    with signal_handlers(dict.fromkeys(names, note)):
        yield noted

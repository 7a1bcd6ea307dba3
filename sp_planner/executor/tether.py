"""torchrun ends with the sp-run (or sp-calibrate) that started it, however that one ends (torch-free).

A stop, a timeout or Ctrl-C reaches the ranks through executor.stop; a SIGKILLed sp-run runs no
code at all, and torchrun, in a session of its own, would then hold the GPUs until its ranks
finish, or forever if they wait on a rendezvous. So torchrun is started through this module: it
asks Linux to send it SIGTERM when its parent dies (prctl PR_SET_PDEATHSIG, prctl(2); the setting
survives the exec of torchrun, which it keeps unless the program is set-user-ID), then execs
torchrun in its place. torchrun's agent answers SIGTERM by stopping its workers: SIGTERM, then
SIGKILL after its shutdown timeout (torch 2.13 distributed/elastic/agent/server/api.py `run`:
SignalException -> _shutdown; multiprocessing/api.py `close`).

Run: python -m sp_planner.executor.tether PARENT_PID -- COMMAND... (PARENT_PID: the starter's pid,
to catch a parent that died before the setting was made). Outside Linux the command runs as given.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h
TETHER_MODULE = "sp_planner.executor.tether"


def tethered(command: list[str]) -> list[str]:
    """command, started so that it gets SIGTERM when the calling process dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return command
    return [sys.executable, "-m", TETHER_MODULE, str(os.getpid()), "--", *command]


def main(argv: list[str]) -> None:
    parent_pid, separator, *command = argv
    if separator != "--" or not command:
        raise SystemExit(f"usage: python -m {TETHER_MODULE} PARENT_PID -- COMMAND...")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != int(parent_pid):  # the parent died before the setting was made: nobody waits
        raise SystemExit(128 + signal.SIGTERM)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])

"""A file written by a forked child process while this one goes on (the report's plans.csv).

At 4096 GPUs plans.csv takes about 1.5 s of CPU and the rest of the report (search, page and
figures) about 3.2 s, both in Python (one core each under the GIL; README, Performance): on a
machine with a second core the child writes the CSV while the parent draws, and the report takes
the longer of the two instead of their sum.

The child shares the parent's memory at the fork (the search frame is not copied or pickled), does
nothing but the write, and leaves by os._exit, so it never runs the parent's exit handlers or
flushes its buffers. Any failure in it becomes one line the parent raises as OSError from `wait`;
the caller owns the file and removes it (the writer writes into its staging folder, which it
removes on any failure). Where there is no fork (Windows) or fork is unsafe (macOS, whose system
libraries may hold locks across it), `start` returns None and the caller writes the file itself.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings
from collections.abc import Callable

from sp_planner.interrupts import held_interrupts

# The child's error message, at most this many bytes (one line).
_MESSAGE_BYTES = 2000


def can_fork() -> bool:
    return hasattr(os, "fork") and sys.platform.startswith("linux")


class Background:
    """A forked child running one write; `wait` for its outcome, or `stop` it."""

    def __init__(self, pid: int, message_fd: int) -> None:
        self._pid: int | None = pid
        self._message_fd = message_fd

    @classmethod
    def start(cls, write: Callable[[], None]) -> Background | None:
        """Run `write()` in a forked child; None where this platform does not fork (see module doc)
        or the fork fails."""
        if not can_fork():
            return None
        read_fd, write_fd = os.pipe()
        try:
            # Ctrl-C is the parent's to answer: held across the fork (an interrupt inside the fork's
            # handlers is printed and lost, and the report then finished as if none came), and
            # ignored by the child, which the parent stops when it is interrupted.
            with held_interrupts(), warnings.catch_warnings():
                # Python >= 3.12 warns on fork in a process with threads (numpy's BLAS pool here, idle;
                # the child touches neither it nor any lock a thread may hold: no BLAS, no output).
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
                if pid == 0:
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
        except OSError:  # no process to spare (EAGAIN, ENOMEM): the caller writes the file itself
            os.close(read_fd)
            os.close(write_fd)
            return None
        if pid == 0:  # the child: write, report, leave
            status = 1
            try:
                os.close(read_fd)
                write()
                status = 0
            except BaseException as err:  # every failure, even an interrupt, becomes the parent's one line
                os.write(write_fd, _one_line(err).encode("utf-8", "replace")[:_MESSAGE_BYTES])
            finally:
                os._exit(status)
        os.close(write_fd)
        return cls(pid, read_fd)

    def wait(self) -> None:
        """Block until the child is done; OSError with its message when it failed."""
        assert self._pid is not None, "waited for twice"
        try:
            chunks = []
            while chunk := os.read(self._message_fd, 4096):
                chunks.append(chunk)
            _, status = os.waitpid(self._pid, 0)
        except BaseException:  # interrupted while waiting: the child (which ignores Ctrl-C) ends too
            self.stop()
            raise
        self._close()
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            message = b"".join(chunks).decode("utf-8", "replace")
            raise OSError(message or f"the writing process ended with status {code}")

    def stop(self) -> None:
        """End the child (the parent failed): killed and reaped, so it writes nothing more."""
        if self._pid is None:
            return
        try:
            os.kill(self._pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(self._pid, 0)
        except ChildProcessError:
            pass
        self._close()

    def _close(self) -> None:
        self._pid = None
        os.close(self._message_fd)


def _one_line(err: BaseException) -> str:
    text = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return " ".join((text or type(err).__name__).split())

"""Ctrl-C that a finalizer swallowed is still an interrupt.

Python raises KeyboardInterrupt wherever the main thread is when SIGINT arrives; inside a weakref
callback or a __del__ (matplotlib's figure clean-up, a fork's handlers) it is printed as "Exception
ignored" and lost, and the command would then go on to finish as if no one had asked it to stop.
The handler installed here also remembers the signal, and a step that must not begin after an
interrupt (moving a report into place) calls `check` first; a step that must not stop halfway (a
fork, the move itself) holds the signal back with `held_interrupts`.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_seen = False


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _seen
    _seen = True
    raise KeyboardInterrupt


def install() -> None:
    """Answer SIGINT with KeyboardInterrupt, as Python's default does, and remember it (the main
    thread only; a command's entry point calls this)."""
    global _seen
    _seen = False
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)


def check() -> None:
    """KeyboardInterrupt if SIGINT arrived since `install`, even where it was swallowed."""
    if _seen:
        raise KeyboardInterrupt


@contextmanager
def held_interrupts() -> Iterator[None]:
    """SIGINT held back (blocked, not lost) inside the block and delivered at its end: a short step
    that must not stop halfway (a fork, moving the report's files into place)."""
    if not hasattr(signal, "pthread_sigmask"):  # no signal masks (Windows): as before
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)

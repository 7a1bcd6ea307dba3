"""A transient progress bar on stderr, shown only once the work takes over half a second.

It is shown only on an interactive terminal (not TERM=dumb), so pipes, CI logs and
--format json/csv on stdout never see it. The bar pulses until the work reports (done, total)
through the yielded callback, which also takes a new description (what the work is doing now).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

SHOW_AFTER_S = 0.5

Update = Callable[..., None]  # update(done, total, description=None)


@contextmanager
def delayed_progress(description: str, *, console: Console | None = None) -> Iterator[Update]:
    console = console or Console(stderr=True)
    if not console.is_interactive:
        yield lambda done, total, description=None: None
        return
    progress = Progress(
        TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    )
    task = progress.add_task(description, total=None)
    timer = threading.Timer(SHOW_AFTER_S, progress.start)
    timer.daemon = True
    timer.start()
    try:
        def update(done: int, total: int | None, description: str | None = None) -> None:
            progress.update(task, completed=done, total=total, description=description)

        yield update
    finally:
        timer.cancel()
        if timer.is_alive():
            timer.join()  # a start already under way finishes before the stop
        if progress.live.is_started:
            progress.stop()

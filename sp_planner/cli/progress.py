"""A transient progress bar on stderr, shown only once the work takes over half a second.

It is shown only on an interactive terminal (not TERM=dumb), so pipes, CI logs and
--format json/csv on stdout never see it. The bar pulses until the work reports (done, total)
through the yielded callback.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

SHOW_AFTER_S = 0.5

Update = Callable[[int, int], None]


@contextmanager
def delayed_progress(description: str, *, console: Console | None = None) -> Iterator[Update]:
    console = console or Console(stderr=True)
    if not console.is_interactive:
        yield lambda done, total: None
        return
    progress = Progress(
        TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    )
    task = progress.add_task(description, total=None)
    timer = threading.Timer(SHOW_AFTER_S, progress.start)
    timer.daemon = True
    timer.start()
    try:
        yield lambda done, total: progress.update(task, completed=done, total=total)
    finally:
        timer.cancel()
        if timer.is_alive():
            timer.join()  # a start already under way finishes before the stop
        if progress.live.is_started:
            progress.stop()

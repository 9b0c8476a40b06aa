"""Rich progress bars for long stages: a live bar on a terminal, else one line when it ends."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


@contextlib.contextmanager
def stage_progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """Yields `update(done, total)`; draws one bar for the stage (a log line off a terminal)."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    started = time.monotonic()
    with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
        task_id = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task_id, completed=done, total=total)

        yield update
    if not console.is_terminal:  # logs and CI get the stage's outcome, not a redrawn bar
        task = progress.tasks[0]
        counted = f"{task.completed:.0f}/{task.total:.0f} " if task.total is not None else ""
        console.print(f"{description}: {counted}done in {time.monotonic() - started:.1f} s",
                      markup=False, highlight=False, soft_wrap=True)

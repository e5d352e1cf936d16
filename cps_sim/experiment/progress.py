"""Progress display: a bar on a terminal, silent under CI=true, --quiet or without a TTY."""

from __future__ import annotations

import os
import sys
from contextlib import AbstractContextManager


def progress_enabled(quiet: bool) -> bool:
    if quiet:
        return False
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return False
    return sys.stderr.isatty()


class TickProgress(AbstractContextManager):
    """Updates a rich progress bar at most every ``every`` ticks (cheap on the hot path)."""

    def __init__(self, total: int, description: str, enabled: bool):
        self.total = total
        self.enabled = enabled
        self.every = max(1, total // 200)
        self._progress = None
        self._task = None
        self.description = description

    def __enter__(self) -> TickProgress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total)
        return self

    def update(self, done: int) -> None:
        if self._progress is not None and (done % self.every == 0 or done == self.total):
            self._progress.update(self._task, completed=done)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

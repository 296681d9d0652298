"""Rich-based terminal output shared by the commands: progress on stderr, data on stdout.

rich is imported when something is first drawn (``stdout_console`` / ``stderr_console`` are made on first use):
``-q`` with ``--format json`` never imports it, which keeps ``evaluate`` in a CI job from paying for it.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@functools.cache
def _console(name: str):
    from rich.console import Console

    if name == "stdout_console":
        # Off a terminal (pipes, CI logs, files) rich would wrap tables at 80 columns; let them have their
        # natural width.
        return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
    # soft_wrap: status lines are never hard-wrapped (logs stay greppable when stderr is not a terminal).
    return Console(stderr=True, soft_wrap=True)


def __getattr__(name: str):
    """``stdout_console`` and ``stderr_console``, made on first use."""
    if name in ("stdout_console", "stderr_console"):
        return _console(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _RichTask:
    def __init__(self, progress, task_id) -> None:
        self._progress = progress
        self._task_id = task_id

    def advance(self, amount: int = 1) -> None:
        self._progress.advance(self._task_id, amount)

    def update(self, description: str | None = None, total: int | None = None) -> None:
        kwargs = {}
        if description is not None:
            kwargs["description"] = description
        if total is not None:
            kwargs["total"] = total
        self._progress.update(self._task_id, **kwargs)


class RichProgress:
    """Progress bars and messages on stderr; ``quiet`` keeps only warnings.

    One rich display is shared by nested tasks (converting > calibrating); bars are drawn only on a terminal,
    so logs and CI output get the messages without control characters.
    """

    def __init__(self, quiet: bool = False, strict: bool = False) -> None:
        self.strict = strict
        self.quiet = quiet
        self.warnings: list[str] = []
        self._display = None
        self._open_tasks = 0

    @property
    def console(self):
        return _console("stderr_console")

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator:
        from tflite_opt.progress import _NullTask

        if self.quiet or not self.console.is_terminal:
            yield _NullTask()
            return
        if self._display is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._display = Progress(
                SpinnerColumn(),
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._display.start()
        task_id = self._display.add_task(description, total=total)
        self._open_tasks += 1
        try:
            yield _RichTask(self._display, task_id)
        finally:
            self._display.remove_task(task_id)
            self._open_tasks -= 1
            if self._open_tasks == 0:
                self._display.stop()
                self._display = None

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, highlight=False)

    def warn(self, message: str) -> None:
        """Print a warning (once: the same words again are not repeated); with ``--strict`` a warning is an error
        (exit 1), for CI."""
        if message in self.warnings:
            return
        self.warnings.append(message)
        if self.strict:
            from tflite_opt.errors import StrictWarning

            raise StrictWarning(f"{message} (a warning, and --strict makes warnings errors)")
        self.console.print(f"[yellow]warning:[/yellow] {message}", highlight=False)

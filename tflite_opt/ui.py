"""Rich-based terminal output shared by the commands: progress on stderr, data on stdout."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.console import Console

stdout_console = Console(soft_wrap=True)
stderr_console = Console(stderr=True)


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
    """Progress bars and messages on stderr; ``quiet`` keeps only warnings."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.console = stderr_console
        self.warnings: list[str] = []

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator:
        if self.quiet:
            from tflite_opt.progress import _NullTask

            yield _NullTask()
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        ) as progress:
            task_id = progress.add_task(description, total=total)
            yield _RichTask(progress, task_id)

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, highlight=False)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.console.print(f"[yellow]warning:[/yellow] {message}", highlight=False)

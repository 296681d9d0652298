"""How library code reports progress without printing: it calls a ``Progress`` the command hands it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Task(Protocol):
    def advance(self, amount: int = 1) -> None: ...

    def update(self, description: str | None = None, total: int | None = None) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: int | None = None): ...  # context manager yielding a Task

    def info(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...


class _NullTask:
    def advance(self, amount: int = 1) -> None:
        pass

    def update(self, description: str | None = None, total: int | None = None) -> None:
        pass


class NullProgress:
    """Reports nothing (library default, and ``--quiet``) — except warnings, which it collects."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.messages: list[str] = []

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[_NullTask]:
        yield _NullTask()

    def info(self, message: str) -> None:
        self.messages.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def ensure(progress: Progress | None) -> Progress:
    return progress if progress is not None else NullProgress()

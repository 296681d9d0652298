"""A table as plain data: what every command shows as a table is built as a :class:`TextTable` by the module that
owns the result (report, debugging, distillation, training), and drawn by the one renderer in ``render``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Note:
    """A line under a table; ``style`` is ``dim``, ``bold``, ``ok``, ``error`` or ``None``."""

    text: str
    style: str | None = None


@dataclass
class TextTable:
    """Headers, rows of display strings, and the lines that go under the table.

    Attributes:
        headers: column names.
        rows: one tuple of display strings per row.
        right: indexes of the right-aligned (numeric) columns.
        wrap: indexes of the columns that may wrap (the others never do).
        error_rows: indexes of the rows to show as failed.
        notes: the lines under the table.
        title: shown above the table when set.
        drop_order: columns that may be hidden when the terminal is too narrow, least important first.
        spill: when the table cannot fit even with its ``wrap`` columns wrapped, those columns become lines
            under the table (``row label: header: text``) instead (the first column must label the rows).
    """

    headers: Sequence[str]
    rows: Sequence[Sequence[str]]
    right: frozenset[int] = frozenset()
    wrap: frozenset[int] = frozenset()
    error_rows: frozenset[int] = frozenset()
    notes: list[Note] = field(default_factory=list)
    title: str | None = None
    drop_order: Sequence[int] = ()
    spill: bool = False

    def without(self, hidden: Sequence[int]) -> "TextTable":
        """The same table with the columns ``hidden`` left out."""
        keep = [i for i in range(len(self.headers)) if i not in hidden]
        position = {old: new for new, old in enumerate(keep)}
        return TextTable(
            headers=[self.headers[i] for i in keep],
            rows=[tuple(row[i] for i in keep) for row in self.rows],
            right=frozenset(position[i] for i in self.right if i in position),
            wrap=frozenset(position[i] for i in self.wrap if i in position),
            error_rows=self.error_rows,
            notes=list(self.notes),
            title=self.title,
        )

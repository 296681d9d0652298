"""The one renderer that draws tables with rich: every command's table goes through :func:`to_rich`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tflite_opt.reporting.tables import TextTable

STYLES = {"dim": "dim", "bold": "bold", "ok": "green", "error": "red", None: None}


def to_rich(tables: TextTable | Sequence[TextTable], width: int | None = None) -> Any:
    """A rich renderable of one table (or several, one under the other) with their notes.

    With ``width`` (the terminal's columns), a table too wide for it hides its ``drop_order`` columns one at a
    time, least important first, and says which; cells are never cut: a table that is still too wide is
    drawn at its own width.
    """
    from rich.console import Group
    from rich.text import Text

    parts: list[Any] = []
    for table in [tables] if isinstance(tables, TextTable) else tables:
        drawn, hidden = _fit(table, width)
        parts.append(drawn)
        parts.extend(Text(note.text, style=STYLES[note.style]) for note in table.notes)
        if hidden:
            names = ", ".join(table.headers[i] for i in hidden)
            parts.append(Text(f"hidden to fit {width} columns: {names} (--wide shows all)", style="dim"))
    return Group(*parts)


def natural_width(renderable: Any) -> int:
    """Columns a renderable needs so that nothing in it is wrapped or cut."""
    from rich.console import Console

    console = Console(width=10_000, color_system=None)
    return console.measure(renderable, options=console.options.update_width(10_000)).maximum


def _fit(table: TextTable, width: int | None) -> tuple[Any, list[int]]:
    hidden: list[int] = []
    drawn = _draw(table)
    if width is None:
        return drawn, hidden
    for column in table.drop_order:
        if natural_width(drawn) <= width:
            break
        hidden.append(column)
        drawn = _draw(table.without(hidden))
    return drawn, hidden


def _draw(table: TextTable) -> Any:
    from rich.table import Table

    drawn = Table(title=table.title, title_justify="left", header_style="bold")
    for index, header in enumerate(table.headers):
        drawn.add_column(
            header,
            justify="right" if index in table.right else "left",
            no_wrap=index not in table.wrap,
            overflow="fold",
        )
    for index, row in enumerate(table.rows):
        drawn.add_row(*row, style="red" if index in table.error_rows else None)
    return drawn

"""The one renderer that draws tables with rich: every command's table goes through :func:`to_rich`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from tflite_opt.reporting.tables import TextTable

STYLES = {"dim": "dim", "bold": "bold", "ok": "green", "error": "red", None: None}


def to_rich(tables: TextTable | Sequence[TextTable], width: int | None = None) -> Any:
    """A rich renderable of one table (or several, one under the other) with their notes.

    With ``width`` (the terminal's columns), a table too wide for it hides its ``drop_order`` columns one at a
    time, least important first, and says which; its ``wrap`` columns wrap; a ``spill`` table that still cannot
    fit lists its ``wrap`` columns under it instead. Cells are never cut: a table that is still too wide is drawn
    at its own width.
    """
    from rich.console import Group
    from rich.text import Text

    parts: list[Any] = []
    for table in [tables] if isinstance(tables, TextTable) else tables:
        drawn, hidden = _fit(table, width)
        parts.append(drawn)
        parts.extend(Text(note.text, style=STYLES[note.style]) for note in table.notes)
        moved = [i for i in hidden if i in table.wrap]
        for column in moved:
            parts.extend(
                Text(
                    f"{row[0]}: {table.headers[column]}: {row[column]}", style="red" if i in table.error_rows else None
                )
                for i, row in enumerate(table.rows)
                if row[column]
            )
        said = []
        if len(hidden) > len(moved):
            names = ", ".join(table.headers[i] for i in hidden if i not in table.wrap)
            said.append(f"hidden to fit {width} columns: {names} (--wide shows all)")
        if moved:
            said.append(f"{', '.join(table.headers[i] for i in moved)} listed above to fit {width} columns")
        if said:
            parts.append(Text("; ".join(said), style="dim"))
    return Group(*parts)


def natural_width(renderable: Any) -> int:
    """Columns a renderable needs so that nothing in it is wrapped or cut."""
    from rich.console import Console

    console = Console(width=10_000, color_system=None)
    return console.measure(renderable, options=console.options.update_width(10_000)).maximum


# A column that may wrap (an error message) needs at least this many columns to stay readable.
MIN_WRAP_WIDTH = 24


def _needed(table: TextTable) -> int:
    """Columns the table needs with its wrapping columns wrapped to :data:`MIN_WRAP_WIDTH` (others never wrap)."""
    if not table.wrap:
        return natural_width(_draw(table))
    rows = [tuple(c[:MIN_WRAP_WIDTH] if i in table.wrap else c for i, c in enumerate(row)) for row in table.rows]
    return natural_width(_draw(dataclasses.replace(table, rows=rows)))


def _fit(table: TextTable, width: int | None) -> tuple[Any, list[int]]:
    if width is None:
        return _draw(table), []
    # The least important columns go first; when the table still cannot fit, the wrapping text columns (errors)
    # move to lines under it instead and only as many other columns go as that still needs.
    hidden = _hide_until_fits(table, width, [])
    if _needed(table.without(hidden)) > width and table.wrap and table.spill:
        hidden = _hide_until_fits(table, width, sorted(table.wrap))
    shown = table.without(hidden)
    if _needed(shown) <= width < natural_width(_draw(shown)):
        return _draw(shown, width), hidden  # only the wrapping columns (errors) wrap to fit
    return _draw(shown), hidden


def _hide_until_fits(table: TextTable, width: int, hidden: list[int]) -> list[int]:
    hidden = list(hidden)
    for column in table.drop_order:
        if _needed(table.without(hidden)) <= width:
            break
        hidden.append(column)
    return hidden


def _draw(table: TextTable, width: int | None = None) -> Any:
    from rich.table import Table

    drawn = Table(title=table.title, title_justify="left", header_style="bold", width=width)
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

"""``tflite-opt table``: several reports in the TensorFlow Lite docs' layout, one row per model."""

from __future__ import annotations

from pathlib import Path

import click

from tflite_opt.commands import _common
from tflite_opt.reporting.crosstable import FORMATS


def _model_names(paths: list[str], names: tuple[str, ...]) -> list[str]:
    """--name in order, else each report's folder name (compare's DIR, a pipeline's model folder)."""
    if names and len(names) != len(paths):
        raise click.UsageError(f"give --name once per REPORT.json ({len(paths)}), or not at all")
    if names:
        return list(names)
    labels = [Path(p).resolve().parent.name or Path(p).stem for p in paths]
    out = []
    for label, path in zip(labels, paths):
        out.append(label if labels.count(label) == 1 else str(Path(path).parent))
    return out


@click.command("table")
@click.argument("reports", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--format",
    "format_",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="What goes to stdout (html: a whole self-contained page).",
)
@click.option(
    "--name",
    "names",
    multiple=True,
    metavar="NAME",
    help="Model name of each REPORT.json, in order (default: the report's folder name). Repeatable.",
)
@_common.handle_errors
def command(reports, format_, names):
    """Put several reports side by side, one row per model.

    The TensorFlow Lite docs' layout: columns come in groups (top-1 accuracy, median latency, file size),
    each with the reference ("original") first, then every other variant; size cells read "original →
    optimized". Reads any report.json written by compare, evaluate --report, auto --report or run.

    \b
    Examples:
      tflite-opt table mobilenet/report.json digits/report.json
      tflite-opt table out/*/report.json --format markdown >> "$GITHUB_STEP_SUMMARY"
    """
    import json

    from tflite_opt.errors import DataError
    from tflite_opt.reporting import crosstable

    rows = []
    for path, name in zip(reports, _model_names(list(reports), names)):
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DataError(f"{path} is not a report.json ({type(exc).__name__}: {exc})") from exc
        if not isinstance(document, dict) or not isinstance(document.get("variants"), list):
            raise DataError(f"{path} has no 'variants' list; give a report.json written by tflite-opt")
        try:
            rows.append(crosstable.ModelRow.from_json(name, document))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: a variant entry is malformed ({type(exc).__name__}: {exc})") from exc
    if format_ == "table":
        _common.print_table(crosstable.cross_table(rows))
    else:
        click.echo(crosstable.render_text(rows, format_), nl=False)

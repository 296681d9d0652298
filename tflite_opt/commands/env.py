"""``tflite-opt env``: versions and CPU flags for bug reports."""

from __future__ import annotations

import json

import click

from tflite_opt.commands import _common


@click.command("env")
@click.option("--format", "format_", type=click.Choice(["table", "json"]), default="table", show_default=True)
@_common.handle_errors
def command(format_):
    """Print versions of Python, TensorFlow, Keras, tf_keras, tfmot, LiteRT and the CPU flags.

    \b
    Example:
      tflite-opt env
      tflite-opt env --format json
    """
    from tflite_opt.environment import describe

    info = describe()
    if format_ == "json":
        click.echo(json.dumps(info, indent=2))
        return
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for key, value in info.items():
        if isinstance(value, list):
            value = " ".join(value) or "-"
        table.add_row(key, "not installed" if value is None else str(value))
    _common.print_renderable(table)

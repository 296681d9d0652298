"""``tflite-opt export-c``: a .tflite file as an aligned C/C++ array (and header) for firmware. No TensorFlow."""

from __future__ import annotations

import os
from pathlib import Path

import click

from tflite_opt.commands import _common

TFLITE_IDENTIFIER = b"TFL3"  # the flatbuffer file identifier, at bytes 4-8 of every .tflite


def _check_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from tflite_opt.reporting.c_array import IdentifierError, validate_identifier

    try:
        return validate_identifier(value)
    except IdentifierError as exc:
        raise click.BadParameter(str(exc)) from exc


def _include_path(header: Path, source: Path) -> str:
    """How the source names the header: relative to the source's folder when below it, else its file name."""
    relative = os.path.relpath(header.resolve(), source.resolve().parent)
    return Path(relative).as_posix() if not relative.startswith("..") else header.name


@click.command("export-c")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    metavar="model.cc",
    help="The C/C++ source to write.",
)
@click.option(
    "--header",
    type=click.Path(dir_okay=False),
    metavar="model.h",
    help="Also write a header declaring NAME and NAME_len (the source includes it).",
)
@click.option(
    "--name",
    default="g_model",
    show_default=True,
    metavar="NAME",
    callback=_check_name,
    help="The array's identifier; its length is NAME_len.",
)
@_common.handle_errors
def command(file: str, output: str, header: str | None, name: str) -> None:
    """Write a .tflite as a C/C++ array for firmware, 16-byte aligned.

    The source defines `alignas(16) const unsigned char NAME[] = {...};` and `const unsigned int NAME_len`;
    with --header, the header declares both and the source includes it. Unlike `xxd -i`, the array is aligned
    (TFLM reads the model in place) and const (it stays in flash). The output depends only on the file's bytes,
    NAME and the header's name: rerunning gives identical files. The input is never overwritten.

    \b
    Example:
      tflite-opt export-c model_int8.tflite -o model_data.cc --header model_data.h --name g_model
    """
    from tflite_opt import fileio
    from tflite_opt.errors import OutputPathError
    from tflite_opt.measure.runtime import read_model_bytes
    from tflite_opt.reporting import c_array

    source_path = fileio.ensure_distinct(output, file)
    header_path = fileio.ensure_distinct(header, file) if header else None
    if header_path is not None and header_path == source_path:
        raise OutputPathError(f"--header {header} is the same file as -o {output}; give the header its own name")
    content = read_model_bytes(file)
    if content[4:8] != TFLITE_IDENTIFIER:
        raise click.ClickException(
            f"{file} is not a .tflite file (no 'TFL3' flatbuffer identifier); export-c takes a converted model"
        )
    include = _include_path(header_path, source_path) if header_path is not None else None
    source = c_array.source_text(content, name, source_name=Path(file).name, include=include)
    if header_path is not None:
        fileio.atomic_write_text(
            header_path, c_array.header_text(name, header_path.name, source_name=Path(file).name, size=len(content))
        )
    fileio.atomic_write_text(source_path, source)
    written = f"{output} and {header}" if header else output
    click.echo(f"{name}: {len(content):,} bytes -> {written}")

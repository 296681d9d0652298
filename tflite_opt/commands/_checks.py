"""Checks on what a command is given, made before any work: output suffixes, and models where a .tflite belongs."""

from __future__ import annotations

from pathlib import Path

import click

REPORT_SUFFIXES = (".json", ".csv", ".md", ".markdown")


def check_report_suffix(path: str | None, option: str = "--report") -> None:
    """``--report FILE``: the suffix picks the format, so an unknown one is a usage error (exit 2).

    Called after the "would overwrite an input" check, which matters more.
    """
    if path is not None and Path(path).suffix.lower() not in REPORT_SUFFIXES:
        raise click.BadParameter(
            f"{path}: the suffix picks the format; use .json (SPEC schema), .csv or .md", param_hint=f"'{option}'"
        )


def check_tflite_suffix(path: str | None, option: str = "-o") -> None:
    """``-o OUT.tflite`` of a command that writes one .tflite flatbuffer: any other suffix is a usage error."""
    if path is not None and Path(path).suffix.lower() != ".tflite":
        raise click.BadParameter(
            f"{path}: this writes a .tflite flatbuffer; name it {Path(path).with_suffix('.tflite').name}",
            param_hint=f"'{option}'",
        )


def refuse_models(paths) -> None:
    """A Keras file or SavedModel given where a .tflite belongs: say what it is and what to run (exit 1)."""
    from tflite_opt.errors import ModelLoadError
    from tflite_opt.models.hints import not_tflite_message

    for path in paths:
        message = not_tflite_message(path)
        if message is not None:
            raise ModelLoadError(message)

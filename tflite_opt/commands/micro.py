"""``tflite-opt micro``: what a microcontroller needs to run a .tflite, measured in TensorFlow Lite Micro.

LiteRT, NumPy and tflite-micro only: no TensorFlow import on this path.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from tflite_opt.commands import _common
from tflite_opt.representative_data.dataset import PREPROCESS_CHOICES

# coreutils' convention: K/KiB/M/MiB/G/GiB are powers of 1024, KB/MB/GB powers of 1000.
SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``64KiB`` -> 65536, ``256KB`` -> 256000, ``1MiB`` -> 1048576, ``65536`` -> 65536.

    Raises:
        ValueError: not a size, or an unknown unit.
    """
    match = _SIZE.match(str(text))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size; write bytes or a number with KiB, KB, MiB, MB (e.g. 64KiB, 256KB)")
    value = float(match.group(1)) * SIZE_UNITS[unit]
    if value < 1:
        raise ValueError(f"{text!r} is less than one byte")
    return int(round(value))


class SizeParam(click.ParamType):
    name = "size"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _check_data(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and value != "random" and not Path(value).exists():
        raise click.BadParameter(f"{value} does not exist (give a .npz, .npy, an image folder or 'random')")
    return value


def gate_rows(result, arena_limit: int | None, flash_limit: int | None) -> list[dict]:
    """The ``--arena-limit``/``--flash-limit`` gates as report-style rows."""
    rows = []
    for metric, value, limit in (
        ("arena_bytes", result.arena_bytes, arena_limit),
        ("flash_bytes", result.flash_bytes, flash_limit),
    ):
        if limit is not None:
            rows.append(
                {
                    "metric": metric,
                    "op": "<=",
                    "limit": limit,
                    "value": value,
                    "passed": value is not None and value <= limit,
                }
            )
    return rows


@click.command("micro")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--data",
    callback=_check_data,
    metavar="PATH",
    help="Samples (.npz, .npy, image folder): the arena search runs the first, and TFLM's outputs are "
    "compared with LiteRT's on all (SQNR, agreement, max abs diff; accuracy with labels).",
)
@click.option(
    "--arena-limit",
    type=SizeParam(),
    metavar="SIZE",
    help="Gate: exit 3 when the tensor arena needs more RAM (65536, 64KiB, 256KB, 1MiB; KiB/MiB = 1024, KB/MB = 1000).",
)
@click.option("--flash-limit", type=SizeParam(), metavar="SIZE", help="Gate: exit 3 when the file is larger.")
@click.option(
    "--format",
    "format_",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="What goes to stdout.",
)
@click.option("--num-samples", type=click.IntRange(min=1), metavar="N", help="Use only the first N samples.")
@click.option(
    "--preprocess",
    type=click.Choice(PREPROCESS_CHOICES),
    default="unit",
    show_default=True,
    help="Image folders: scale pixels to [0,1], [-1,1], ImageNet mean/std, or keep 0-255.",
)
@click.option("--signature", metavar="KEY", help="Signature whose names label the tensors (subgraph 0's).")
@click.option(
    "--output",
    "output_name",
    metavar="NAME",
    help="Output that agreement and accuracy are computed on (default: the name that sorts first).",
)
@_common.handle_errors
def command(
    file: str,
    data: str | None,
    arena_limit: int | None,
    flash_limit: int | None,
    format_: str,
    num_samples: int | None,
    preprocess: str,
    signature: str | None,
    output_name: str | None,
) -> None:
    """Fit a .tflite onto a microcontroller: tensor arena, flash, op resolver (TFLM).

    Runs the file in the TensorFlow Lite Micro interpreter (tflite-micro) and reports the smallest tensor arena
    at which it allocates and runs (whole KiB: that size passes, 1 KiB less fails), the flash it takes (the file
    size), the MicroMutableOpResolver lines the firmware needs, and the ops TFLM lacks or refuses (exit 1).
    The host build is 64-bit: on a 32-bit MCU the arena is somewhat smaller. --arena-limit and --flash-limit
    are gates (exit 3, after the output is written). A float model runs too, flagged: int8 is what MCUs run well.

    \b
    Example:
      tflite-opt micro model_int8.tflite --data test.npz
      tflite-opt micro model_int8.tflite --arena-limit 64KiB --flash-limit 256KiB --format json
    """
    from tflite_opt.measure.micro import measure_micro, unsupported_message
    from tflite_opt.measure.micro_table import micro_tables
    from tflite_opt.measure.runtime import read_model_bytes

    progress = _common.progress()
    result = measure_micro(
        read_model_bytes(file),
        path=file,
        data=data,
        signature=signature,
        output=output_name,
        preprocess=preprocess,
        num_samples=num_samples,
        allow_random=True,
        progress=progress,
    )
    gates = gate_rows(result, arena_limit, flash_limit) if result.runs else []
    if format_ == "json":
        for warning in result.warnings:
            progress.warn(warning)
        payload = result.to_json_dict()
        payload["gates"] = gates
        payload["passed"] = result.runs and not result.unsupported_ops and all(g["passed"] for g in gates)
        click.echo(json.dumps(payload, indent=2))
    else:
        _common.print_table(micro_tables(result, arena_limit, flash_limit))
    if result.unsupported_ops:
        raise click.ClickException(unsupported_message(result))
    if result.error:
        raise click.ClickException(result.error)
    failed = [g for g in gates if not g["passed"]]
    if failed:
        raise _common.GateFailed(
            "; ".join(
                f"{g['metric']} = {g['value']:,} bytes exceeds the limit of {g['limit']:,} bytes "
                f"({(g['value'] - g['limit']):,} over)"
                for g in failed
            )
        )

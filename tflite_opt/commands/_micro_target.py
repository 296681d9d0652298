"""``--target host|micro`` for evaluate and compare (SPEC §2, §9); the work is in
:mod:`tflite_opt.workflows.micro_target`."""

from __future__ import annotations

import click

from tflite_opt.workflows.micro_target import TARGETS


def target_option(func):
    """--target host|micro."""
    return click.option(
        "--target",
        type=click.Choice(TARGETS),
        default="host",
        show_default=True,
        help="micro: also run every variant in TensorFlow Lite Micro: 'arena' and 'flash' columns, "
        "arena_bytes in the report, gates like 'arena_bytes<=65536'.",
    )(func)


def apply(target: str, report, **options) -> None:
    """With ``--target micro``: the arenas into ``report`` and its gates checked again (see ``measure_arenas``)."""
    if target == "micro":
        from tflite_opt.workflows.micro_target import measure_arenas

        measure_arenas(report, **options)

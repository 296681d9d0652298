"""The ``arena`` and ``flash`` columns of the report table (``evaluate``/``compare --target micro``, SPEC §9).

They are shown when some variant was run in TensorFlow Lite Micro (it has ``arena_bytes``, or a ``micro_note``
saying why not), and the lines under the table say what the numbers are. ``flash`` is the file's bytes
(``size_bytes``), in exact bytes as a linker script wants them. Variants are duck-typed
:class:`~tflite_opt.reporting.report.VariantResult` objects (this module is imported by ``report``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

HEADERS = ("arena", "flash")
NOT_RUN = "n/a"
HOST_NOTE = (
    "host (64-bit) arenas run somewhat larger than on 32-bit MCUs (pointers, and the structures holding "
    "them, are twice the size here); optimized kernels such as CMSIS-NN may add scratch buffers: confirm "
    "on the device"
)
ARENA_NOTE = (
    "arena: the smallest TFLite Micro tensor arena, in whole KiB, at which the variant allocates and runs "
    "(tflite-micro on this host); flash: the file's bytes"
)


def shown(variants: Sequence[Any]) -> bool:
    """Whether the table has the micro columns: some variant was run in TFLM."""
    return any(v.arena_bytes is not None or getattr(v, "micro_note", None) for v in variants)


def headers(variants: Sequence[Any]) -> list[str]:
    """The extra headers (none when no variant was run in TFLM)."""
    return list(HEADERS) if shown(variants) else []


def cells(variant: Any) -> tuple[str, str]:
    """``(arena, flash)`` display strings: ``n/a`` for a variant TFLM cannot run (the note says why)."""
    if variant.arena_bytes is not None:
        arena = f"{variant.arena_bytes:,} B"
    else:
        arena = NOT_RUN if variant.error is None else "—"
    flash = f"{variant.size_bytes:,} B" if variant.size_bytes else "—"
    return arena, flash


def notes(variants: Sequence[Any]) -> list[str]:
    """The lines under the table: what the columns are, host vs MCU, and each variant's TFLM note.

    Variants with the same note share one line (``fp32, float16: float on a microcontroller: ...``).
    """
    if not shown(variants):
        return []
    grouped: dict[str, list[str]] = {}
    for variant in variants:
        note = getattr(variant, "micro_note", None)
        if note:
            grouped.setdefault(note, []).append(variant.name)
    lines = [ARENA_NOTE, HOST_NOTE]
    lines += [f"{', '.join(names)}: {note}" for note, names in grouped.items()]
    return lines

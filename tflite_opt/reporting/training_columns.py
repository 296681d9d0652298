"""What the comparison table adds for training-time rows (QAT, pruning, clustering, distillation).

Pruning and clustering leave a float file of the same size: their gain is only visible compressed, so whenever a
pruned or clustered row is present the table shows the gzip size and its ratio to the reference's. The mode column
shows what the file really is (``fp32``, ``int8``) with the technique beside it (``fp32 + cluster``); the JSON
``mode`` stays the technique.
"""

from __future__ import annotations

from typing import Any

from tflite_opt.reporting.units import format_size

TRAINING_MODES = ("qat", "prune", "cluster", "distill")
GZIP_MODES = ("prune", "cluster")
GZIP_HEADERS = ("gzip", "gzip vs ref")
AFTER = "vs ref"  # the gzip columns follow the size ratio


def mode_label(variant: Any) -> str:
    """``fp32 + cluster`` for a training row whose file mode is known, else the mode (``—`` when unknown)."""
    mode = variant.mode or "—"
    file_mode = getattr(variant, "file_mode", None)
    if variant.mode in TRAINING_MODES and file_mode and file_mode != variant.mode:
        return f"{file_mode} + {variant.mode}"
    return mode


def shows_gzip(report: Any) -> bool:
    """Whether the table needs the gzip columns: a pruned or clustered row is present."""
    return any(v.mode in GZIP_MODES for v in report.variants)


def _gzip_cells(variant: Any, reference: Any) -> list[str]:
    if not variant.gzip_bytes:
        return ["—", "—"]
    ratio = "—"
    if (
        variant.ok
        and reference is not None
        and reference.ok
        and reference.gzip_bytes
        and variant.size_ratio is not None
    ):
        ratio = f"{variant.gzip_bytes / reference.gzip_bytes:.2f}×"
    return [format_size(variant.gzip_bytes), ratio]


def add_gzip_columns(report: Any, headers: list[str], rows: list[list[str]]) -> None:
    """Insert the gzip columns after ``vs ref``, in place, when :func:`shows_gzip`."""
    if not shows_gzip(report) or AFTER not in headers:
        return
    at = headers.index(AFTER) + 1
    headers[at:at] = list(GZIP_HEADERS)
    reference = report.variant(report.reference) if report.reference else None
    for variant, row in zip(report.variants, rows):
        row[at:at] = _gzip_cells(variant, reference)

"""``micro``'s tables: memory (arena, flash, against the limits), ops with their resolver calls, fidelity."""

from __future__ import annotations

from tflite_opt.measure import micro_ops
from tflite_opt.measure.micro import MicroResult
from tflite_opt.reporting.micro_columns import HOST_NOTE
from tflite_opt.reporting.tables import Note, TextTable


def kib(size: int) -> str:
    """``7,168 B (7.0 KiB)``: exact bytes for the linker script, KiB for the reader."""
    return f"{size:,} B ({size / 1024:.1f} KiB)"


def _limit_cell(value: int | None, limit: int | None) -> str:
    if limit is None:
        return "—"
    if value is None:
        return f"≤ {kib(limit)}: unknown"
    return f"≤ {kib(limit)}: {'ok' if value <= limit else 'EXCEEDED'}"


def memory_table(result: MicroResult, arena_limit: int | None = None, flash_limit: int | None = None) -> TextTable:
    """Arena and flash, with the gates' limits."""
    arena = kib(result.arena_bytes) if result.arena_bytes is not None else "— (TFLM cannot run it)"
    used = kib(result.arena_used_bytes) if result.arena_used_bytes is not None else "—"
    rows = [
        ("arena (RAM)", arena, _limit_cell(result.arena_bytes, arena_limit)),
        ("  allocator's own count", used, ""),
        ("flash (file)", kib(result.flash_bytes), _limit_cell(result.flash_bytes, flash_limit)),
    ]
    failed = (
        {0}
        if arena_limit is not None and result.arena_bytes is not None and result.arena_bytes > arena_limit
        else set()
    )
    if flash_limit is not None and result.flash_bytes > flash_limit:
        failed.add(2)
    notes = []
    if result.arena_bytes is not None:
        below = (
            f"{result.arena_bytes - 1024:,} B fails"
            if result.arena_bytes > result.arena_floor_bytes
            else "the smallest arena tried"
        )
        notes.append(
            Note(
                f"arena: the smallest whole KiB at which TFLM allocates and runs the model ({below}; "
                f"{result.probes} probes, {result.search_seconds * 1000:.0f} ms)",
                "dim",
            )
        )
        notes.append(Note(HOST_NOTE, "dim"))
    if result.resource_variables:
        notes.append(Note(f"stateful: {result.resource_variables} resource variable(s) kept between invokes", "dim"))
    notes.extend(Note(f"warning: {warning}", "error") for warning in result.warnings)
    if result.error:
        notes.append(Note(result.error, "error"))
    return TextTable(
        headers=("", "size", "limit"),
        rows=rows,
        error_rows=frozenset(failed),
        notes=notes,
        title=f"TensorFlow Lite Micro {result.tflm_version or ''}: {result.path}".replace("  ", " "),
    )


def ops_table(result: MicroResult) -> TextTable:
    """Every op with its count and the resolver call that registers it (or why TFLM cannot run it)."""
    rows, failed = [], set()
    for index, (op, count) in enumerate(sorted(result.ops.items())):
        method = micro_ops.resolver_method(op)
        status = f"{method}()" if method else ""
        if op in result.unsupported_reasons:
            status = result.unsupported_reasons[op]
            failed.add(index)
        rows.append((op, str(count), status))
    notes = [Note("register in the firmware:", "bold")] + [Note(f"  {line}") for line in result.resolver]
    return TextTable(
        headers=("op", "count", "TFLM"),
        rows=rows,
        right=frozenset({1}),
        error_rows=frozenset(failed),
        notes=notes,
        title=f"Ops ({len(result.ops)})",
    )


def fidelity_table(result: MicroResult) -> TextTable:
    """TFLM's outputs against LiteRT's on the data."""

    def number(value: float | None, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    row = (
        str(result.samples),
        number(result.sqnr_db, ".1f"),
        number(result.agreement, ".2%"),
        number(result.max_abs_diff, ".4g"),
        number(result.accuracy, ".2%"),
        number(result.reference_accuracy, ".2%"),
    )
    return TextTable(
        headers=("samples", "SQNR dB", "agreement", "max |diff|", "accuracy TFLM", "accuracy LiteRT"),
        rows=[row],
        right=frozenset(range(6)),
        title="TFLM vs LiteRT (XNNPACK) on the data",
        notes=[Note("TFLM runs reference kernels; small differences from XNNPACK's rounding are expected", "dim")],
    )


def micro_tables(
    result: MicroResult, arena_limit: int | None = None, flash_limit: int | None = None
) -> list[TextTable]:
    """The tables ``tflite-opt micro`` prints, in order."""
    tables = [memory_table(result, arena_limit, flash_limit), ops_table(result)]
    if result.samples:
        tables.append(fidelity_table(result))
    return tables

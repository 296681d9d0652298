"""The evaluation report (SPEC §4, schema version 2) and its text forms: JSON, CSV, Markdown and the table.

Library results are plain dataclasses; ``Report.to_json_dict`` emits exactly the §4 keys, and every form is fed
from the same rows (``table_rows``). Nothing here imports click, rich or TensorFlow, and nothing prints: the
table is a :class:`~tflite_opt.reporting.tables.TextTable` that ``reporting.render`` draws.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tflite_opt.reporting import micro_columns
from tflite_opt.reporting.tables import Note, TextTable
from tflite_opt.reporting.training_columns import add_gzip_columns, mode_label
from tflite_opt.reporting.units import format_ms, format_size

__all__ = ["format_ms", "format_size"]  # re-exported: the table formats live in reporting.units

SCHEMA_VERSION = 2
TOOL_NAME = "tflite-opt"
FORMATS = ("table", "json", "csv", "markdown")

VARIANT_KEYS = (
    "name",
    "mode",
    "path",
    "sha256",
    "size_bytes",
    "gzip_bytes",
    "size_ratio",
    "accuracy",
    "top5",
    "accuracy_delta",
    "agreement",
    "sqnr_db",
    "latency_ms",
    "speedup",
    "sparsity",
    "error",
    # schema version 2 (SPEC §4): every version-1 key stays
    "backend",
    "integer_only",
    "transforms",
    "arena_bytes",
    "cached",
)
LATENCY_KEYS = ("median", "p90", "mean", "std", "min", "runs")


@dataclass
class LatencyStats:
    """Timed-run statistics in milliseconds (the SPEC §4 ``latency_ms`` object)."""

    median: float
    p90: float
    mean: float
    std: float
    min: float
    runs: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass
class VariantResult:
    """One measured ``.tflite`` file: the SPEC §4 variant object, field for field.

    ``path``, ``size_bytes``, ``gzip_bytes`` and ``sha256`` are ``None`` (unknown, SPEC §4) when the file was
    never produced or could not be read (then ``error`` says why). Fractions are in [0, 1]; ``accuracy_delta`` < 0
    is a drop.
    """

    name: str
    mode: str | None = None
    path: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    gzip_bytes: int | None = None
    size_ratio: float | None = None
    accuracy: float | None = None
    top5: float | None = None
    accuracy_delta: float | None = None
    agreement: float | None = None
    sqnr_db: float | None = None
    latency_ms: LatencyStats | None = None
    speedup: float | None = None
    sparsity: float | None = None
    error: str | None = None
    # Schema version 2 (SPEC §4, §7-§10):
    backend: str | None = None  # "converter" | "quantizer"
    integer_only: bool | None = None
    transforms: list[str] = field(default_factory=list)  # "equalize", "bias_correction", "keep_float:fc1"
    arena_bytes: int | None = None  # TFLite Micro tensor arena
    cached: bool = False  # copied from the pipeline cache, not recomputed
    micro_note: str | None = None  # --target micro: why TFLM cannot run it, or the float flag; not in the JSON
    file_mode: str | None = None  # what the file's contents say it is (not in the JSON; the table's mode column)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json_dict(self) -> dict[str, Any]:
        """The §4 variant object (exactly its keys)."""
        out: dict[str, Any] = {}
        for key in VARIANT_KEYS:
            value = getattr(self, key)
            if key == "latency_ms":
                value = None if value is None else {k: _clean(getattr(value, k)) for k in LATENCY_KEYS}
            out[key] = _clean(value)
        return out


@dataclass
class GateResult:
    """One checked quality gate (a §4 ``gates`` entry)."""

    variant: str
    metric: str
    op: str
    limit: float
    value: float | None
    passed: bool
    why_unknown: str | None = None  # said in describe() when value is None; not part of the JSON

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "metric": self.metric,
            "op": self.op,
            "limit": float(self.limit),
            "value": _clean(self.value),
            "passed": bool(self.passed),
        }

    def describe(self) -> str:
        value = "n/a" if self.value is None else f"{self.value:.6g}"
        if self.value is None and self.why_unknown:
            value += f": {self.why_unknown}"
        verdict = "passed" if self.passed else "FAILED"
        return f"{self.variant}: {self.metric} {self.op} {self.limit:g} (value {value}) {verdict}"


@dataclass
class Settings:
    """How the measurements were taken (the §4 ``settings`` object)."""

    threads: int = 1
    xnnpack: bool = True
    warmup: int = 5
    runs: int = 50
    num_samples: int | None = None

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "threads": int(self.threads),
            "xnnpack": bool(self.xnnpack),
            "warmup": int(self.warmup),
            "runs": int(self.runs),
            "num_samples": None if self.num_samples is None else int(self.num_samples),
        }


def collect_environment() -> dict[str, Any]:
    """Versions for the report, read from package metadata so that TensorFlow is never imported."""
    from tflite_opt.environment import package_version as _package_version
    from tflite_opt.environment import platform_string

    return {
        "python": sys.version.split()[0],
        "tensorflow": _package_version("tensorflow", "tensorflow-cpu", "tf-nightly"),
        "ai_edge_litert": _package_version("ai-edge-litert", "ai-edge-litert-nightly") or "unknown",
        "tfmot": _package_version("tensorflow-model-optimization"),
        "platform": platform_string(),
    }


def _tool() -> dict[str, str]:
    from tflite_opt import __version__

    return {"name": TOOL_NAME, "version": __version__}


@dataclass
class Report:
    """A whole evaluation: settings, the reference, one row per variant, the gates and the verdict.

    ``passed`` is true when no variant has an ``error`` and every gate passed.
    """

    settings: Settings
    reference: str | None
    variants: list[VariantResult]
    gates: list[GateResult] = field(default_factory=list)
    tool: dict[str, str] = field(default_factory=_tool)
    environment: dict[str, Any] = field(default_factory=collect_environment)
    schema_version: int = SCHEMA_VERSION
    pipeline: str | None = None  # sha256 of the pipeline file (``tflite-opt run``)

    @property
    def passed(self) -> bool:
        return all(v.ok for v in self.variants) and all(g.passed for g in self.gates)

    @property
    def failed_variants(self) -> list[VariantResult]:
        return [v for v in self.variants if not v.ok]

    @property
    def failed_gates(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    def variant(self, name: str) -> VariantResult | None:
        return next((v for v in self.variants if v.name == name), None)

    def to_json_dict(self) -> dict[str, Any]:
        """Exactly the SPEC §4 document."""
        return {
            "schema_version": self.schema_version,
            "tool": dict(self.tool),
            "environment": dict(self.environment),
            "settings": self.settings.to_json_dict(),
            "reference": self.reference,
            "variants": [v.to_json_dict() for v in self.variants],
            "gates": [g.to_json_dict() for g in self.gates],
            "passed": self.passed,
            "pipeline": self.pipeline,
        }


def _clean(value: Any) -> Any:
    """NaN/inf cannot be written as JSON: they become null (unknown)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------------------------------- renderers


def to_json(report: Report) -> str:
    """The report as indented JSON text (ends with a newline)."""
    return json.dumps(report.to_json_dict(), indent=2) + "\n"


CSV_COLUMNS = (
    "name",
    "mode",
    "path",
    "sha256",
    "size_bytes",
    "gzip_bytes",
    "size_ratio",
    "accuracy",
    "top5",
    "accuracy_delta",
    "agreement",
    "sqnr_db",
    "latency_median_ms",
    "latency_p90_ms",
    "latency_mean_ms",
    "latency_std_ms",
    "latency_min_ms",
    "latency_runs",
    "speedup",
    "sparsity",
    "error",
)


def _flat_row(variant: VariantResult) -> dict[str, Any]:
    row = variant.to_json_dict()
    latency = row.pop("latency_ms") or {}
    for key in LATENCY_KEYS:
        row[f"latency_{key}_ms" if key != "runs" else "latency_runs"] = latency.get(key)
    return row


def to_csv(report: Report) -> str:
    """One row per variant; ``latency_ms`` is flattened to ``latency_median_ms`` ... ``latency_runs``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for variant in report.variants:
        row = _flat_row(variant)
        writer.writerow({k: "" if row[k] is None else row[k] for k in CSV_COLUMNS})
    return buffer.getvalue()


TABLE_HEADERS = (
    "variant",
    "mode",
    "size",
    "vs ref",
    "accuracy",
    "Δ accuracy",
    "agreement",
    "SQNR",
    "latency",
    "speedup",
)
# On a narrow terminal these columns go first, in this order (JSON and --wide keep them all).
DROP_FIRST = ("agreement", "SQNR", "speedup", "Δ accuracy", "vs ref", "gzip vs ref")


def table_headers(report: Report) -> list[str]:
    """The table's columns: :data:`TABLE_HEADERS`, then ``arena``/``flash`` when variants ran in TFLite Micro."""
    return list(TABLE_HEADERS) + micro_columns.headers(report.variants)


def table_rows(report: Report) -> list[tuple[str, ...]]:
    """The comparison table as display strings, one tuple per variant (the TFLite docs' columns)."""

    def pct(value: float | None, signed: bool = False) -> str:
        value = _clean(value)
        if value is None:
            return "—"
        return f"{value * 100:+.2f} pp" if signed else f"{value * 100:.2f}%"

    def num(value: float | None, fmt: str) -> str:
        value = _clean(value)
        return "—" if value is None else fmt.format(value)

    rows = []
    micro = micro_columns.shown(report.variants)
    for v in report.variants:
        is_ref = v.name == report.reference
        latency = "—" if v.latency_ms is None else format_ms(v.latency_ms.median)
        rows.append(
            (
                v.name + (" (ref)" if is_ref else ""),
                mode_label(v),
                format_size(v.size_bytes) if v.size_bytes else "—",
                num(v.size_ratio, "{:.2f}×"),
                pct(v.accuracy),
                pct(v.accuracy_delta, signed=True),
                pct(v.agreement),
                num(v.sqnr_db, "{:.1f} dB"),
                latency,
                num(v.speedup, "{:.2f}×"),
            )
            + (micro_columns.cells(v) if micro else ())
        )
    return rows


def report_table(report: Report) -> TextTable:
    """The comparison table, then the measurement settings and the gate verdicts under it."""
    rows = [list(row) for row in table_rows(report)]
    headers = table_headers(report)
    add_gzip_columns(report, headers, rows)
    measured = len(headers)
    has_errors = any(not v.ok for v in report.variants)
    if has_errors:
        headers.append("error")
        for variant, row in zip(report.variants, rows):
            row.append(variant.error or "")
    settings = report.settings
    samples = "no data" if settings.num_samples is None else f"{settings.num_samples} samples"
    notes = [
        Note(
            f"{samples}; latency: median of {settings.runs} runs after {settings.warmup} warm-up, "
            f"{settings.threads} thread(s), XNNPACK {'on' if settings.xnnpack else 'off'}",
            "dim",
        )
    ]
    notes += [Note(text, "dim") for text in micro_columns.notes(report.variants)]
    notes += [Note(("✔ " if g.passed else "✘ ") + g.describe(), "ok" if g.passed else "error") for g in report.gates]
    return TextTable(
        headers=headers,
        rows=[tuple(row) for row in rows],
        right=frozenset(range(2, measured)),
        wrap=frozenset({measured}) if has_errors else frozenset(),
        error_rows=frozenset(i for i, v in enumerate(report.variants) if v.error),
        notes=notes,
        drop_order=tuple(headers.index(h) for h in DROP_FIRST if h in headers),
        spill=True,
    )


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(report: Report) -> str:
    """A GitHub-flavoured Markdown table (errors in a last column), settings and gates below it."""
    headers = table_headers(report)
    rows = [list(row) for row in table_rows(report)]
    add_gzip_columns(report, headers, rows)
    has_errors = any(not v.ok for v in report.variants)
    lines = [
        "| " + " | ".join(headers + (["error"] if has_errors else [])) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(headers) - 2)) + ("|---|" if has_errors else "|"),
    ]
    for variant, row in zip(report.variants, rows):
        cells = [_md_escape(c) for c in row]
        if has_errors:
            cells.append(_md_escape(variant.error or ""))
        lines.append("| " + " | ".join(cells) + " |")
    settings = report.settings
    samples = "no data" if settings.num_samples is None else f"{settings.num_samples} samples"
    lines += [
        "",
        f"Reference: `{report.reference}`. {samples}; latency: median of {settings.runs} runs after "
        f"{settings.warmup} warm-up, {settings.threads} thread(s), XNNPACK {'on' if settings.xnnpack else 'off'}; "
        f"LiteRT {report.environment.get('ai_edge_litert')}, Python {report.environment.get('python')}.",
    ]
    micro_notes = micro_columns.notes(report.variants)
    if micro_notes:
        lines += [""] + [f"- {_md_escape(text)}" for text in micro_notes]
    if report.gates:
        lines += ["", "Gates:", ""]
        lines += [f"- {'✔' if g.passed else '✘'} {_md_escape(g.describe())}" for g in report.gates]
    return "\n".join(lines) + "\n"


def render_text(report: Report, format_: str) -> str:
    """The report as text in ``json``, ``csv`` or ``markdown``.

    Raises:
        ValueError: unknown format (``table`` is drawn from :func:`report_table`).
    """
    if format_ == "json":
        return to_json(report)
    if format_ == "csv":
        return to_csv(report)
    if format_ == "markdown":
        return to_markdown(report)
    raise ValueError(f"unknown report format {format_!r}; choose json, csv or markdown")


def format_for_path(path: str) -> str:
    """The report format a ``--report`` path asks for by its suffix: ``.csv``, ``.md``, else JSON."""
    lower = str(path).lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".md", ".markdown")):
        return "markdown"
    return "json"


def variants_from_json(variants: Sequence[dict[str, Any]]) -> list[VariantResult]:
    """Rebuild ``VariantResult`` objects from a report's ``variants`` list (e.g. to re-render a saved report)."""
    out = []
    for item in variants:
        data = {k: item[k] for k in VARIANT_KEYS if k in item}  # a version-1 report lacks the v2 keys
        if data.get("transforms") is None:
            data.pop("transforms", None)
        if data.get("cached") is None:
            data.pop("cached", None)
        if data.get("latency_ms") is not None:
            data["latency_ms"] = LatencyStats(**{k: data["latency_ms"][k] for k in LATENCY_KEYS})
        out.append(VariantResult(**data))
    return out

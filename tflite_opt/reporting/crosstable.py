"""The TensorFlow Lite docs' comparison layout across models: one row per model, columns per variant.

As in the docs' post-training quantization table ("Model | Top-1 Accuracy (Original) | ... (Post Training
Quantized) | ... (Quantization Aware Training) | Latency (Original) | ... | Size (Original) | Size (Optimized)"):
the columns come in three groups — top-1 accuracy, median latency, file size — and in each group the reference
("original") comes first, then every other variant in the order the reports list them. A size cell of an
optimized variant reads ``original → optimized``. A variant a model does not have, or could not measure, is ``—``.

Formats: a :class:`~tflite_opt.reporting.tables.TextTable`, GitHub Markdown, CSV (raw numbers: fractions,
milliseconds, bytes) and an HTML ``<table>``.
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass

from tflite_opt.reporting.report import Report, VariantResult, format_ms, format_size, variants_from_json
from tflite_opt.reporting.tables import TextTable

FORMATS = ("table", "markdown", "csv", "html")
ORIGINAL = "original"
MISSING = "—"


@dataclass
class ModelRow:
    """One model's measured variants (from a report)."""

    model: str
    reference: str | None
    variants: list[VariantResult]

    @classmethod
    def from_report(cls, model: str, report: Report) -> ModelRow:
        return cls(model, report.reference, list(report.variants))

    @classmethod
    def from_json(cls, model: str, document: dict) -> ModelRow:
        """From a ``report.json`` document (any schema version: only version-1 keys are read)."""
        return cls(model, document.get("reference"), variants_from_json(document.get("variants") or []))

    def variant(self, name: str) -> VariantResult | None:
        target = self.reference if name == ORIGINAL else name
        found = next((v for v in self.variants if v.name == target), None)
        return found if found is not None and found.ok else None


def variant_columns(rows: Sequence[ModelRow]) -> list[str]:
    """``original`` then every non-reference variant name, in first-seen order."""
    names = [ORIGINAL]
    for row in rows:
        for variant in row.variants:
            if variant.name != row.reference and variant.name not in names:
                names.append(variant.name)
    return names


def _headers(names: Sequence[str]) -> list[str]:
    return ["model"] + [f"accuracy {n}" for n in names] + [f"latency {n}" for n in names] + [f"size {n}" for n in names]


def _cells(row: ModelRow, names: Sequence[str]) -> list[str]:
    found = {name: row.variant(name) for name in names}
    original = found[ORIGINAL]
    accuracy = [MISSING if v is None or v.accuracy is None else f"{v.accuracy * 100:.2f}%" for v in found.values()]
    latency = [MISSING if v is None or v.latency_ms is None else format_ms(v.latency_ms.median) for v in found.values()]
    sizes = []
    for name, variant in found.items():
        if variant is None or not variant.size_bytes:
            sizes.append(MISSING)
        elif name == ORIGINAL or original is None:
            sizes.append(format_size(variant.size_bytes))
        else:
            sizes.append(f"{format_size(original.size_bytes)} → {format_size(variant.size_bytes)}")
    return [row.model] + accuracy + latency + sizes


def cross_table(rows: Sequence[ModelRow]) -> TextTable:
    names = variant_columns(rows)
    headers = _headers(names)
    return TextTable(
        headers=headers,
        rows=[tuple(_cells(r, names)) for r in rows],
        right=frozenset(range(1, len(headers))),
        title="Across models",
    )


def to_markdown(rows: Sequence[ModelRow]) -> str:
    names = variant_columns(rows)
    headers = _headers(names)
    lines = ["| " + " | ".join(headers) + " |", "|---|" + "---:|" * (len(headers) - 1)]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(row, names)) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[ModelRow]) -> str:
    """Raw numbers: accuracy fractions, median latency in ms, sizes in bytes; empty where unknown."""
    names = variant_columns(rows)
    headers = (
        ["model"]
        + [f"accuracy_{n}" for n in names]
        + [f"latency_median_ms_{n}" for n in names]
        + [f"size_bytes_{n}" for n in names]
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    for row in rows:
        found = [row.variant(n) for n in names]
        writer.writerow(
            [row.model]
            + ["" if v is None or v.accuracy is None else v.accuracy for v in found]
            + ["" if v is None or v.latency_ms is None else v.latency_ms.median for v in found]
            + ["" if v is None or not v.size_bytes else v.size_bytes for v in found]
        )
    return buffer.getvalue()


def to_html_table(rows: Sequence[ModelRow]) -> str:
    """An HTML ``<table>`` (a fragment; :mod:`tflite_opt.reporting.html` embeds it in a page)."""
    names = variant_columns(rows)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in _headers(names))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(row, names)) + "</tr>" for row in rows)
    return f'<table class="cross"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render_text(rows: Sequence[ModelRow], format_: str) -> str:
    """``markdown``, ``csv`` or ``html`` (a whole self-contained page)."""
    if format_ == "markdown":
        return to_markdown(rows)
    if format_ == "csv":
        return to_csv(rows)
    if format_ == "html":
        from tflite_opt.reporting.html import page

        return page("tflite-opt: across models", [("Across models", to_html_table(rows))])
    raise ValueError(f"unknown format {format_!r}; choose markdown, csv or html")

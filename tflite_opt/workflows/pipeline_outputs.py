"""What ``run`` writes after measuring: per model ``report.json`` (+ ``report.md``/``report.csv`` as
``[output] formats`` asks) and the plot; for the whole pipeline ``report.html``, the JUnit XML when asked, and
with several models the across-models table (``table.md``).

``report.json`` carries the pipeline file's sha256 (SPEC §4 v2 ``pipeline``) and each variant's ``cached``.
Every file is written atomically; the same results give the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tflite_opt.fileio import atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.reporting.report import Report
    from tflite_opt.workflows.cache import Cache
    from tflite_opt.workflows.pipeline import PipelineResult

REPORT_SUFFIXES = {"json": "report.json", "markdown": "report.md", "csv": "report.csv"}
RENDERS = "renders"
PLOT_KEY_SCHEMA = 1


def report_json(report: "Report", pipeline_sha256: str | None) -> str:
    """``report.json`` text with the v2 keys ``pipeline`` and per-variant ``cached`` (added when the schema
    renderer does not write them yet; every other key is the renderer's own)."""
    document: dict[str, Any] = report.to_json_dict()
    if document.get("pipeline") is None:
        ordered: dict[str, Any] = {}
        for key, value in document.items():
            if key == "variants":
                ordered["pipeline"] = pipeline_sha256
            ordered[key] = value
        document = ordered
    for item, variant in zip(document["variants"], report.variants):
        item.setdefault("cached", bool(variant.cached))
    return json.dumps(document, indent=2) + "\n"


def report_text(report: "Report", format_: str, pipeline_sha256: str | None) -> str:
    from tflite_opt.reporting import report as report_mod

    if format_ == "json":
        return report_json(report, pipeline_sha256)
    return report_mod.render_text(report, format_)


def html_path(result: "PipelineResult", override: str | Path | None = None) -> Path:
    spec = result.spec
    return Path(override) if override else (spec.output.html or spec.output.dir / "report.html")


def junit_path(result: "PipelineResult", override: str | Path | None = None) -> Path | None:
    return Path(override) if override else result.spec.output.junit


def plot_markups(result: "PipelineResult", cache: "Cache | None") -> list[str]:
    """Each model's plot for the HTML report, from the cache when the same report was drawn before.

    Drawing imports matplotlib and lays the labels out (seconds): an unchanged rerun reuses the markup.
    """
    from tflite_opt.environment import package_version
    from tflite_opt.reporting.html import plot_markup
    from tflite_opt.workflows.cache import json_sha256

    markups = []
    for _, report in result.reports:
        key = json_sha256(
            {
                "plot": PLOT_KEY_SCHEMA,
                "report": report.to_json_dict(),
                "matplotlib": package_version("matplotlib"),
                "versions": result.versions,
            }
        )
        entry = cache.get(RENDERS, key) if cache is not None else None
        if entry is not None:
            markups.append(entry.files["plot.svg"].decode("utf-8"))
            continue
        markup = plot_markup(report)
        if cache is not None:
            cache.put(RENDERS, key, {"plot.svg": markup.encode("utf-8")})
        markups.append(markup)
    return markups


def write_outputs(
    result: "PipelineResult",
    *,
    junit: str | Path | None = None,
    html: str | Path | None = None,
    cache: "Cache | None" = None,
) -> list[Path]:
    """Write every report file of a pipeline run; returns the paths written."""
    from tflite_opt.errors import TfliteOptError
    from tflite_opt.reporting.html import to_html
    from tflite_opt.reporting.junit import to_junit

    spec = result.spec
    written: list[Path] = []
    for run in result.runs:
        for format_ in spec.output.formats:
            path = run.output_dir / REPORT_SUFFIXES[format_]
            written.append(atomic_write_text(path, report_text(run.report, format_, spec.sha256)))
        if spec.output.plot is not None:
            plot = spec.output.plot
            if len(result.runs) > 1:
                plot = plot.with_name(f"{plot.stem}_{run.model.name}{plot.suffix}")
            from tflite_opt.reporting.plotting import plot_tradeoff

            try:
                written.append(plot_tradeoff(run.report, plot))
            except TfliteOptError:
                pass  # nothing to plot (no data): the table and report say why
    before = []
    if len(result.runs) > 1:
        from tflite_opt.reporting import crosstable

        rows = [crosstable.ModelRow.from_report(name, report) for name, report in result.reports]
        written.append(atomic_write_text(spec.output.dir / "table.md", crosstable.to_markdown(rows)))
        before = [("Across models", crosstable.to_html_table(rows))]
    headings = [(name if len(result.runs) > 1 else None, report) for name, report in result.reports]
    extra = [("pipeline", spec.path.name), ("pipeline sha256", spec.sha256)]
    page = to_html(
        headings,
        title=f"tflite-opt run {spec.path.name}",
        extra=extra,
        before=before,
        plots=plot_markups(result, cache),
    )
    written.append(atomic_write_text(html_path(result, html), page))
    target = junit_path(result, junit)
    if target is not None:
        suites = [(f"tflite-opt run {spec.path.name}: {name}", report) for name, report in result.reports]
        written.append(atomic_write_text(target, to_junit(suites)))
    return written


def summary_markdown(result: "PipelineResult") -> str:
    """What ``GITHUB_STEP_SUMMARY`` gets: each model's report.md (and the across-models table)."""
    from tflite_opt.reporting import crosstable
    from tflite_opt.reporting import report as report_mod

    parts = [f"## tflite-opt run {result.spec.path.name}\n"]
    if len(result.runs) > 1:
        rows = [crosstable.ModelRow.from_report(name, report) for name, report in result.reports]
        parts.append(crosstable.to_markdown(rows))
    for name, report in result.reports:
        if len(result.runs) > 1:
            parts.append(f"### {name}\n")
        parts.append(report_mod.render_text(report, "markdown"))
    return "\n".join(parts)

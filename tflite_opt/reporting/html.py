"""The report as one self-contained HTML file (``--html FILE.html``, ``compare``'s ``DIR/report.html``).

Everything is inline: the CSS, and the trade-off plot as SVG (glyphs drawn as paths). There is no script, no
font, no image and no link to fetch, and a Content-Security-Policy forbids them, so the file renders the same
offline, attached to a CI run or opened from a mail. Sections: the comparison table, the gates, the plot, the
measurement settings and the environment (per run: a pipeline with several models has one section per model).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from tflite_opt.errors import TfliteOptError
from tflite_opt.reporting.report import Report, table_headers, table_rows
from tflite_opt.reporting.training_columns import add_gzip_columns

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328; margin: 2rem;
       max-width: 1200px; background: #ffffff; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; }
h2 { font-size: 1.2rem; margin: 2rem 0 .5rem; border-bottom: 1px solid #d0d7de; padding-bottom: .25rem; }
h3 { font-size: 1rem; margin: 1.25rem 0 .5rem; }
p.meta { color: #59636e; margin: 0 0 1rem; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { border: 1px solid #d0d7de; padding: .3rem .6rem; text-align: right; white-space: nowrap; }
th { background: #f6f8fa; }
td:first-child, th:first-child, td.text { text-align: left; }
tr.failed td { background: #ffebe9; }
ul.gates { list-style: none; padding: 0; }
ul.gates li { padding: .15rem 0; }
.pass { color: #1a7f37; font-weight: 600; }
.fail { color: #cf222e; font-weight: 600; }
dl { display: grid; grid-template-columns: max-content auto; gap: .15rem 1rem; }
dt { color: #59636e; }
dd { margin: 0; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
figure { margin: .5rem 0; }
figure svg { max-width: 100%; height: auto; }
"""


def _dl(items: Sequence[tuple[str, object]]) -> str:
    rows = "".join(
        f"<dt>{html.escape(str(k))}</dt><dd>{html.escape('—' if v is None else str(v))}</dd>" for k, v in items
    )
    return f"<dl>{rows}</dl>"


def variants_table(report: Report) -> str:
    """The comparison table (the same cells as the terminal table), errors in a last column."""
    has_errors = any(not v.ok for v in report.variants)
    headers = table_headers(report)
    rows = [list(row) for row in table_rows(report)]
    add_gzip_columns(report, headers, rows)  # pruned/clustered rows: the gzip size is their gain
    headers += ["error"] if has_errors else []
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for variant, row in zip(report.variants, rows):
        cells = [f'<td class="text">{html.escape(row[0])}</td>', f'<td class="text">{html.escape(row[1])}</td>']
        cells += [f"<td>{html.escape(c)}</td>" for c in row[2:]]
        if has_errors:
            cells.append(f'<td class="text">{html.escape(variant.error or "")}</td>')
        css = ' class="failed"' if not variant.ok else ""
        body.append(f"<tr{css}>{''.join(cells)}</tr>")
    return f'<table class="variants"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def gates_list(report: Report) -> str:
    if not report.gates:
        return "<p>No gates were set.</p>"
    items = []
    for gate in report.gates:
        mark = '<span class="pass">✔ passed</span>' if gate.passed else '<span class="fail">✘ FAILED</span>'
        items.append(f"<li>{mark} {html.escape(gate.describe())}</li>")
    return f'<ul class="gates">{"".join(items)}</ul>'


def plot_markup(report: Report) -> str:
    """The trade-off plot as inline SVG markup, or a paragraph saying why there is none."""
    from tflite_opt.reporting.plotting import tradeoff_svg

    try:
        return tradeoff_svg(report)
    except TfliteOptError as exc:
        return f"<p>No plot: {html.escape(str(exc))}.</p>"


def _figure(markup: str) -> str:
    return f'<figure aria-label="accuracy vs latency">{markup}</figure>' if markup.startswith("<svg") else markup


def report_section(
    report: Report, heading: str | None = None, *, extra: Sequence[tuple[str, object]] = (), plot: str | None = None
) -> str:
    """One run: table, gates, plot, settings, environment (``extra`` settings first, e.g. the pipeline).

    ``plot`` is the plot's markup when the caller already has it (:func:`plot_markup`; a pipeline rerun reuses
    it), else it is drawn here.
    """
    settings = report.settings
    verdict = '<span class="pass">passed</span>' if report.passed else '<span class="fail">failed</span>'
    parts = [
        f"<h2>{html.escape(heading)}</h2>" if heading else "",
        f'<p class="meta">Reference: {html.escape(str(report.reference))} · verdict: {verdict}</p>',
        variants_table(report),
        "<h3>Gates</h3>",
        gates_list(report),
        "<h3>Accuracy vs latency</h3>",
        _figure(plot if plot is not None else plot_markup(report)),
        "<h3>Settings</h3>",
        _dl(
            list(extra)
            + [
                ("samples", settings.num_samples),
                ("threads", settings.threads),
                ("XNNPACK", "on" if settings.xnnpack else "off"),
                ("warm-up runs", settings.warmup),
                ("timed runs", settings.runs),
            ]
        ),
        "<h3>Environment</h3>",
        _dl([("tflite-opt", report.tool.get("version"))] + sorted(report.environment.items())),
    ]
    return "<section>" + "".join(parts) + "</section>"


def page(title: str, sections: Sequence[tuple[str | None, str]], *, subtitle: str | None = None) -> str:
    """A whole HTML document from ``(heading, HTML fragment)`` sections."""
    body = "".join((f"<h2>{html.escape(h)}</h2>" if h else "") + fragment for h, fragment in sections)
    sub = f'<p class="meta">{html.escape(subtitle)}</p>' if subtitle else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{sub}{body}</body></html>\n"
    )


def to_html(
    runs: Sequence[tuple[str | None, Report]],
    *,
    title: str = "tflite-opt report",
    extra: Sequence[tuple[str, object]] = (),
    before: Sequence[tuple[str | None, str]] = (),
    plots: Sequence[str | None] | None = None,
) -> str:
    """The HTML report of one or several runs (``(heading, report)``; a ``None`` heading for a single run).

    Args:
        runs: the reports, each with its section heading.
        title: the page's title.
        extra: settings shown first in every run's settings list (e.g. the pipeline file and its sha256).
        before: sections placed above the runs (e.g. the across-models table of a pipeline).
        plots: each run's plot markup when already drawn (see :func:`report_section`).
    """
    plots = list(plots) if plots is not None else [None] * len(runs)
    sections = list(before) + [
        (None, report_section(report, heading, extra=extra, plot=plot)) for (heading, report), plot in zip(runs, plots)
    ]
    return page(title, sections)

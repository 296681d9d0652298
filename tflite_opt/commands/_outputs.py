"""The CI output options that evaluate, compare, auto and run share: ``--junit``, ``--html``, and the GitHub
step summary (``GITHUB_STEP_SUMMARY``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import click

from tflite_opt.commands import _common

STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


def output_options(func):
    """--junit FILE.xml and --html FILE.html."""
    func = click.option(
        "--html",
        "html_path",
        type=click.Path(dir_okay=False),
        metavar="FILE.html",
        help="Also write a self-contained HTML report (table, gates, plot; no network).",
    )(func)
    func = click.option(
        "--junit",
        "junit_path",
        type=click.Path(dir_okay=False),
        metavar="FILE.xml",
        help="Also write the gates as JUnit XML (one test case per gate) for CI.",
    )(func)
    return func


def check_output_paths(*paths: str | None, inputs: Sequence[str | None] = ()) -> None:
    """Refuse an output that is an input (before any work)."""
    from tflite_opt.fileio import ensure_distinct

    for path in paths:
        if path:
            ensure_distinct(path, *inputs)


def write_ci_outputs(report, *, junit_path: str | None, html_path: str | None, name: str) -> list[Path]:
    """The JUnit XML and the HTML report of one run, when asked for (written atomically)."""
    from tflite_opt.fileio import atomic_write_text

    written = []
    if junit_path:
        from tflite_opt.reporting.junit import to_junit

        written.append(atomic_write_text(junit_path, to_junit([(name, report)])))
    if html_path:
        from tflite_opt.reporting.html import to_html

        written.append(atomic_write_text(html_path, to_html([(None, report)], title=name)))
    return written


def append_step_summary(markdown: str) -> bool:
    """Append ``markdown`` to the file GitHub Actions names in ``GITHUB_STEP_SUMMARY`` (if set)."""
    target = os.environ.get(STEP_SUMMARY_ENV)
    if not target:
        return False
    try:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(markdown if markdown.endswith("\n") else markdown + "\n")
    except OSError as exc:
        raise click.ClickException(f"cannot append to {STEP_SUMMARY_ENV}={target}: {exc.strerror}") from exc
    return True


def finish_all(reports) -> None:
    """Exit 1 when a variant of any report failed, 3 when a gate failed (after everything was written)."""
    failed = [(name, v) for name, report in reports for v in report.failed_variants]
    if failed:
        name, first = failed[0]
        total = sum(len(report.variants) for _, report in reports)
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        where = f"{name}/" if len(reports) > 1 else ""
        raise click.ClickException(
            f"{len(failed)} of {total} variants failed — {where}{first.name}: {first.error}{more}"
        )
    gates = [g for _, report in reports for g in report.failed_gates]
    if gates:
        raise _common.GateFailed("; ".join(g.describe() for g in gates))

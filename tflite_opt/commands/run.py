"""``tflite-opt run``: a declarative pipeline (SPEC §10) with a content-addressed cache."""

from __future__ import annotations

from pathlib import Path

import click

from tflite_opt.commands import _common, _outputs
from tflite_opt.reporting.report import FORMATS


@click.command("run")
@click.argument("pipeline", type=click.Path(exists=True, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Print the plan (what is cached, what will run) and stop.")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="The cache folder (default: .tflite-opt-cache/ beside the pipeline file).",
)
@click.option("--no-cache", is_flag=True, help="Neither read nor write the cache: make and measure everything.")
@click.option(
    "--format", "format_", type=click.Choice(FORMATS), default="table", show_default=True, help="What goes to stdout."
)
@_outputs.output_options
@_common.handle_errors
def command(pipeline, dry_run, cache_dir, no_cache, format_, junit_path, html_path):
    """Run a pipeline file: every variant made, measured, gated, cached.

    PIPELINE.toml has [model] (or several [[model]]), [data], one [[variant]] per file to make (a convert
    mode and its options, or kind = "prune"|"qat"|"cluster"|"distill"), [evaluation], [gates] and [output];
    see examples/pipeline.toml. A variant whose model, data, options and tool versions are unchanged is copied
    from the cache (reported "cached": true), and so are its measurements while the evaluation data and
    settings are unchanged. Writes DIR/<variant>.tflite, DIR/report.json (with the pipeline's sha256),
    report.md and report.html; --junit adds JUnit XML. With GITHUB_STEP_SUMMARY set, report.md is appended to it.
    Exit codes: 0 ok, 1 a variant failed or the pipeline file is invalid, 2 usage error, 3 a gate failed.

    \b
    Examples:
      tflite-opt run pipeline.toml
      tflite-opt run pipeline.toml --dry-run
      tflite-opt run pipeline.toml --junit gates.xml --cache-dir /ci/cache/tflite-opt
    """
    from tflite_opt.workflows import pipeline as pipeline_mod
    from tflite_opt.workflows import pipeline_outputs
    from tflite_opt.workflows.cache import DEFAULT_DIR_NAME, Cache
    from tflite_opt.workflows.pipeline_file import load_pipeline

    spec = load_pipeline(pipeline)
    _outputs.check_output_paths(junit_path, html_path, inputs=[pipeline] + [str(m.path) for m in spec.models])
    progress = _common.progress()
    cache = None
    if not no_cache:
        cache = Cache(Path(cache_dir) if cache_dir else Path(pipeline).parent / DEFAULT_DIR_NAME, progress)
    if dry_run:
        _print_plan(pipeline_mod.plan_pipeline(spec, cache), cache)
        return
    result = pipeline_mod.run_pipeline(spec, cache, progress)
    pipeline_outputs.write_outputs(result, junit=junit_path, html=html_path, cache=cache)
    _emit(result, format_)
    for run in result.runs:
        progress.info(_status_line(run, len(result.runs) > 1))
    progress.info(f"Wrote the files and reports to {spec.output.dir}")
    _outputs.append_step_summary(pipeline_outputs.summary_markdown(result))
    _outputs.finish_all(result.reports)


def _status_line(run, several: bool) -> str:
    """Which variants were copied from the cache and which were made (what a CI log reader wants to know)."""
    groups: dict[str, list[str]] = {}
    for name, state in run.status.items():
        groups.setdefault(state, []).append(name)
    parts = [f"{state}: {', '.join(names)}" for state, names in groups.items()]
    if run.measured_from_cache:
        parts.append(f"measurements reused: {', '.join(run.measured_from_cache)}")
    prefix = f"{run.model.name}: " if several else ""
    return prefix + "; ".join(parts)


def _emit(result, format_: str) -> None:
    import json

    from tflite_opt.reporting import report as report_mod
    from tflite_opt.workflows import pipeline_outputs

    several = len(result.runs) > 1
    if format_ == "table":
        tables = []
        for name, report in result.reports:
            table = report_mod.report_table(report)
            table.title = name if several else None
            tables.append(table)
        _common.print_table(tables)
    elif format_ == "json" and several:
        documents = {
            name: json.loads(pipeline_outputs.report_json(report, result.spec.sha256))
            for name, report in result.reports
        }
        click.echo(json.dumps(documents, indent=2))
    else:
        for name, report in result.reports:
            if several and format_ == "markdown":
                click.echo(f"## {name}\n")
            click.echo(pipeline_outputs.report_text(report, format_, result.spec.sha256), nl=False)


def _print_plan(plan, cache) -> None:
    from tflite_opt.reporting.tables import Note, TextTable

    rows = [
        (
            p.model,
            p.variant,
            p.kind,
            p.mode,
            p.target or "—",
            "cached" if p.cached else "will run",
            "cached" if p.evaluation_cached else "will run",
            p.key[:12],
        )
        for p in plan
    ]
    cached = sum(p.cached for p in plan)
    where = f"cache {cache.root}" if cache is not None else "no cache (--no-cache)"
    notes = [Note(f"{cached} of {len(plan)} files cached, {len(plan) - cached} will be made; {where}", "dim")]
    _common.print_table(
        TextTable(
            headers=("model", "variant", "kind", "mode", "target", "file", "measurement", "key"),
            rows=rows,
            notes=notes,
            title="Plan (dry run)",
        )
    )

"""``tflite-opt auto``: the smallest, then fastest, variant within an accuracy budget."""

from __future__ import annotations

import re
from pathlib import Path

import click

from tflite_opt.commands import _checks, _common, _outputs
from tflite_opt.modes import IoType
from tflite_opt.quantize.search import DEFAULT_MAX_FLOAT_LAYERS, SKIPPABLE
from tflite_opt.reporting.report import FORMATS
from tflite_opt.reporting.units import format_size
from tflite_opt.representative_data.dataset import PREPROCESS_CHOICES


@click.command("auto")
@click.argument("model", type=click.Path(path_type=str))
@click.option(
    "--data",
    required=True,
    metavar="PATH",
    help="Evaluation samples: .npz with labels in 'y' (accuracy), or unlabelled with --min-agreement.",
)
@click.option(
    "--representative-data",
    "representative_data",
    required=True,
    metavar="PATH",
    help="Calibration samples: .npz, .npy, image folder, or 'random' (smoke tests only).",
)
@click.option(
    "--num-samples",
    type=click.IntRange(min=1),
    default=None,
    help="Calibration samples to use (default: all, at most 500).",
)
@click.option(
    "--preprocess",
    type=click.Choice(PREPROCESS_CHOICES),
    default="unit",
    show_default=True,
    help="Image folders: scale pixels to [0,1], [-1,1], ImageNet mean/std, or keep 0-255.",
)
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the chosen .tflite (not written when nothing meets the budget).",
)
@click.option(
    "--max-accuracy-drop",
    type=click.FloatRange(0, 1),
    metavar="X",
    help="Budget: largest accuracy loss against fp32, a fraction (0.01 = 1 point).",
)
@click.option(
    "--min-agreement",
    type=click.FloatRange(0, 1),
    metavar="X",
    help="Budget: smallest share of samples whose top-1 equals fp32's (works without labels).",
)
@click.option(
    "--max-float-layers",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_FLOAT_LAYERS,
    show_default=True,
    help="int8 trials keep up to this many of the worst layers (debugger ranking) in float.",
)
@click.option(
    "--skip",
    "skip",
    multiple=True,
    type=click.Choice(SKIPPABLE),
    help="Leave a rung out of the ladder (equalize = both rescue rungs). Repeatable.",
)
@click.option(
    "--io-type",
    type=click.Choice([t.value for t in IoType]),
    default=IoType.INT8.value,
    show_default=True,
    help="Inputs/outputs of the int8 trials (int8 = integer-only I/O).",
)
@click.option(
    "--format", "format_", type=click.Choice(FORMATS), default="table", show_default=True, help="What goes to stdout."
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Also write the report of every trial: .json (SPEC schema), .csv or .md by suffix.",
)
@click.option(
    "--trials-dir", type=click.Path(file_okay=False), metavar="DIR", help="Also write every trial's .tflite into DIR."
)
@click.option(
    "--gate",
    "gate_texts",
    multiple=True,
    metavar="[VARIANT:]METRIC OP NUMBER",
    help="Extra gate on the chosen variant (or on a named trial), e.g. 'size_ratio<=0.3'. Repeatable.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Interpreter threads for the latency runs.",
)
@click.option(
    "--runs",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Timed latency runs per trial (0 skips latency; ties are then broken by size only).",
)
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True, help="Untimed warm-up runs.")
@click.option("--no-xnnpack", is_flag=True, help="Builtin CPU kernels only, without the XNNPACK delegate.")
@_common.model_options
@_outputs.output_options
@_common.handle_errors
def command(model, data, representative_data, num_samples, preprocess, output, max_accuracy_drop, min_agreement,
            max_float_layers, skip, io_type, format_, report_path, trials_dir, gate_texts, threads, runs, warmup,
            no_xnnpack, signature, input_shape, trust_model, junit_path, html_path):  # fmt: skip
    """Find the smallest, then fastest, variant within an accuracy budget.

    Measures the fp32 reference, then tries the integer-only candidates: full int8, int8 after cross-layer
    equalization, and with bias correction too (Keras models); then int8 with the worst layers (debugger
    ranking) kept in float, one more at a time up to --max-float-layers; int4 (LiteRT Quantizer); int16x8;
    dynamic; float16. An integer-only int8 within budget ends the search at once; otherwise the smallest file
    within budget wins (sizes within 1% tie, broken by latency) and is written to OUTPUT. Every trial goes to
    the table and the report, with the transforms it used.
    Exit codes: 0 found, 1 error, 2 usage error, 3 nothing within budget or a gate failed (report written,
    no OUTPUT when nothing met the budget).

    \b
    Examples:
      tflite-opt auto model.keras --data test.npz --representative-data calib.npz \\
          --max-accuracy-drop 0.01 -o model_auto.tflite --report auto.json
      tflite-opt auto saved_model/ --data unlabelled.npy --representative-data calib.npy \\
          --min-agreement 0.99 -o m.tflite
    """
    from tflite_opt import fileio
    from tflite_opt.measure.evaluation import EvaluationOptions
    from tflite_opt.quantize import search
    from tflite_opt.reporting import gates
    from tflite_opt.reporting import report as report_mod

    if max_accuracy_drop is None and min_agreement is None:
        raise click.UsageError("give a budget: --max-accuracy-drop X (labelled data) and/or --min-agreement X")
    try:
        gate_list = [gates.parse_gate(text) for text in gate_texts]
    except gates.GateSyntaxError as exc:
        raise click.BadParameter(str(exc), param_hint="'--gate'") from exc
    out_path = fileio.ensure_distinct(output, model, data, representative_data)
    for extra in (report_path, junit_path, html_path):
        if extra is not None:
            fileio.ensure_distinct(extra, model, data, representative_data, output)
    _checks.check_tflite_suffix(output)
    _checks.check_report_suffix(report_path)

    progress = _common.progress()
    loaded, evaluation_data, representative = _load_inputs(
        model,
        data,
        representative_data,
        signature,
        trust_model,
        input_shape,
        preprocess,
        num_samples,
        max_accuracy_drop,
        progress,
    )
    options = search.SearchOptions(
        budget=search.Budget(max_accuracy_drop=max_accuracy_drop, min_agreement=min_agreement),
        max_float_layers=max_float_layers,
        skip=frozenset(skip),
        io_type=IoType(io_type),
        num_samples=num_samples,
        evaluation=EvaluationOptions(
            threads=threads, xnnpack=not no_xnnpack, warmup=warmup, runs=runs, preprocess=preprocess, allow_random=False
        ),
    )
    result = search.search(loaded, evaluation_data, representative, options, progress)
    _check_gate_names(gate_list, [search.REFERENCE_NAME] + [t.name for t in result.trials])
    _write_files(result, trials_dir, out_path, output)
    report = search.build_report(result, options, gate_list)

    if format_ == "table":
        _common.print_table([report_mod.report_table(report), _trials_table(result)])
    else:
        click.echo(report_mod.render_text(report, format_), nl=False)
    if report_path is not None:
        fileio.atomic_write_text(report_path, report_mod.render_text(report, report_mod.format_for_path(report_path)))
    _outputs.write_ci_outputs(
        report, junit_path=junit_path, html_path=html_path, name=f"tflite-opt auto {Path(model).name}"
    )
    for note in result.notes:
        progress.info(note)
    _finish(result, report, output, format_, progress)


def _load_inputs(
    model,
    data,
    representative_data,
    signature,
    trust_model,
    input_shape,
    preprocess,
    num_samples,
    max_accuracy_drop,
    progress,
):
    """The source model, the evaluation data and the calibration data, each checked against the model."""
    from tflite_opt import models
    from tflite_opt.representative_data import load_data, ranges

    loaded = models.load_model(
        model,
        signature=signature,
        trust_model=trust_model,
        input_shapes=_common.parse_input_shapes(input_shape),
        progress=progress,
    )
    evaluation_data = load_data(data, loaded.inputs, preprocess=preprocess, allow_random=False)
    if max_accuracy_drop is not None and not evaluation_data.has_labels:
        raise click.UsageError(
            f"{data} has no labels, so --max-accuracy-drop cannot be measured; "
            "use --min-agreement X (share of predictions equal to fp32's) or add labels ('y' in the .npz)"
        )
    representative = load_data(
        representative_data, loaded.inputs, preprocess=preprocess, num_samples=num_samples, allow_random=True
    )
    for warning in representative.warnings + ranges.range_mismatch_warnings(
        representative.inputs, evaluation_data.inputs, representative.source, evaluation_data.source
    ):
        progress.warn(warning)
    return loaded, evaluation_data, representative


def _check_gate_names(gate_list, names) -> None:
    unknown = [g for g in gate_list if g.variant is not None and g.variant not in names]
    if unknown:
        raise click.BadParameter(
            f"gate {unknown[0].text!r} names {unknown[0].variant!r}, but the trials were {', '.join(names)}",
            param_hint="'--gate'",
        )


def _write_files(result, trials_dir, out_path, output) -> None:
    """Every trial into ``trials_dir`` (when given), and the chosen one to OUTPUT."""
    from tflite_opt import fileio

    if trials_dir is not None:
        for trial in result.trials:
            if trial.content is not None:
                path = Path(trials_dir) / f"{_file_stem(trial.name)}.tflite"
                fileio.atomic_write_bytes(path, trial.content)
                trial.result.path = str(path)
    if result.chosen is not None:
        fileio.atomic_write_bytes(out_path, result.chosen.content)
        result.chosen.result.path = str(output)


def _finish(result, report, output, format_, progress) -> None:
    """Say what was chosen; exit 3 when nothing met the budget or a gate failed."""
    if result.chosen is None:
        closest = result.closest
        detail = f"; closest: {closest.name} ({closest.verdict})" if closest is not None else ""
        raise _common.GateFailed(
            f"no variant within the budget after {len(result.trials)} trial(s){detail}; {output} not written"
        )
    chosen = result.chosen
    summary = f"chosen: {chosen.name}, {format_size(chosen.size_bytes)}, {chosen.verdict} -> {output}"
    if format_ == "table":
        click.echo(summary)
    else:
        progress.info(summary)
    if report.failed_gates:
        raise _common.GateFailed("; ".join(g.describe() for g in report.failed_gates))


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name.replace(":", "-").replace(",", "+"))


def _trials_table(result):
    from tflite_opt.reporting.tables import TextTable

    rows = []
    for trial in result.trials:
        mark = "→ " if trial is result.chosen else ""
        size = format_size(trial.size_bytes) if trial.size_bytes else "—"
        rows.append((mark + trial.name, ", ".join(trial.keep_float) or "—", size, trial.verdict))
    return TextTable(
        headers=("trial", "kept in float", "size", "verdict"),
        rows=rows,
        right=frozenset({2}),
        wrap=frozenset({0, 1, 3}),
    )

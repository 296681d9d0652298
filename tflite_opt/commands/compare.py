"""``tflite-opt compare``: convert to every mode, evaluate all, print the table, write the report."""

from __future__ import annotations

from pathlib import Path

import click

from tflite_opt.commands import _common, _micro_target, _outputs
from tflite_opt.modes import ALL_MODE_NAMES, MODE_NAMES, IoType, parse_variant_mode


def _parse_modes(ctx, param, value: str) -> list[str]:
    modes = [m.strip() for m in value.split(",") if m.strip()]
    for token in modes:
        try:
            parse_variant_mode(token)
        except ValueError as exc:
            raise click.BadParameter(
                f"{token!r}: {exc if ':' in token else 'unknown mode'}; choose from {', '.join(ALL_MODE_NAMES)}, "
                "optionally as BACKEND:MODE (converter:int8, quantizer:int8), comma-separated"
            ) from None
    if not modes:
        raise click.BadParameter(f"{value!r}: choose from {', '.join(ALL_MODE_NAMES)} (comma-separated)")
    return list(dict.fromkeys(modes))


@click.command("compare")
@click.argument("model", type=click.Path(path_type=str))
@click.option(
    "--data",
    required=True,
    metavar="PATH",
    help="Evaluation data: .npz with labels 'y' gives accuracy; unlabelled data gives fidelity only.",
)
@click.option("--output-dir", required=True, type=click.Path(file_okay=False), help="Where the files and reports go.")
@click.option(
    "--modes",
    default=",".join(MODE_NAMES),
    show_default=True,
    callback=_parse_modes,
    help="Comma-separated post-training modes; BACKEND:MODE picks the backend (e.g. converter:int8,quantizer:int8).",
)
@_common.model_options
@_common.representative_options
@click.option(
    "--io-type",
    type=click.Choice([t.value for t in IoType]),
    default=IoType.INT8.value,
    show_default=True,
    help="int8 rows: type of the model's inputs and outputs.",
)
@click.option("--allow-float-fallback", is_flag=True, help="int8/int16x8: keep ops without integer kernels in float.")
@click.option("--train-data", metavar="PATH", help="Labelled training data for the --qat/--prune/--cluster rows.")
@click.option("--qat", is_flag=True, help="Add a quantization-aware-trained int8 row (needs --train-data).")
@click.option(
    "--prune",
    "prune_sparsity",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    metavar="SPARSITY",
    help="Add a magnitude-pruned row at this sparsity, e.g. 0.5 (needs --train-data).",
)
@click.option(
    "--cluster",
    "cluster_count",
    type=click.IntRange(min=2),
    metavar="N",
    help="Add a weight-clustered row with N clusters (needs --train-data).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=2, show_default=True, help="Fine-tuning epochs per row.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Fine-tuning batch size.")
@click.option(
    "--learning-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Fine-tuning learning rate (default: prune 1e-3, QAT and clustering 1e-4).",
)
@_common.evaluation_options
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    metavar="FILE.png",
    help="Draw accuracy vs latency, marker area = size.",
)
@_micro_target.target_option
@_outputs.output_options
@_common.handle_errors
def command(model, data, output_dir, modes, signature, input_shape, trust_model, representative_data, num_samples,
            preprocess, io_type, allow_float_fallback, train_data, qat, prune_sparsity, cluster_count, epochs,
            batch_size, learning_rate, threads, runs, warmup, no_xnnpack, format_, max_accuracy_drop, gate_texts,
            plot_path, junit_path, html_path, target):  # fmt: skip
    """Convert to every mode, evaluate all, print the table.

    Writes DIR/<variant>.tflite, DIR/report.json (SPEC schema), DIR/report.md and DIR/report.html (or
    --html FILE); --junit adds the gates as JUnit XML, and with GITHUB_STEP_SUMMARY set report.md is
    appended to it. The fp32 row is the reference for size ratios, accuracy deltas, agreement and speedups.
    int8/int16x8 calibrate on --representative-data (default: --train-data, else --data, with a warning).
    Exit codes: 0 ok, 1 a variant failed, 2 usage error, 3 a gate failed (files and reports still written).

    \b
    Examples:
      tflite-opt compare model.keras --data test.npz --representative-data calib.npz --output-dir out/
      tflite-opt compare model.keras --data test.npz --output-dir out/ --train-data train.npz \\
          --qat --prune 0.5 --cluster 16 --max-accuracy-drop 0.02 --plot out/tradeoff.png
      tflite-opt compare model.keras --data test.npz --output-dir out/ --target micro \\
          --gate "int8:arena_bytes<=65536"
    """
    from tflite_opt import models
    from tflite_opt.workflows import comparison

    if (qat or prune_sparsity is not None or cluster_count is not None) and not train_data:
        raise click.UsageError("--qat, --prune and --cluster need --train-data PATH (labelled)")
    gate_list = _common.parse_gate_options(gate_texts, max_accuracy_drop)
    out_dir = Path(output_dir)
    _check_outputs(out_dir, (model, data, representative_data, train_data), (junit_path, html_path))
    progress = _common.progress()
    shapes = _common.parse_input_shapes(input_shape)
    loaded = models.load_model(
        model, signature=signature, trust_model=trust_model, input_shapes=shapes, progress=progress
    )
    evaluation_data, training_data, representative = _load_data(
        loaded, data, train_data, representative_data, num_samples, preprocess, modes, qat, progress
    )
    training = None
    if training_data is not None:
        training = comparison.TrainingRows(
            train=training_data, qat=qat, prune_sparsity=prune_sparsity, cluster_count=cluster_count, epochs=epochs,
            batch_size=batch_size, learning_rate=learning_rate
        )  # fmt: skip
    result = comparison.run_compare(
        loaded, evaluation_data, out_dir, modes=modes, representative=representative,
        evaluation_options=_common.make_evaluation_options(threads, runs, warmup, no_xnnpack, preprocess),
        io_type=IoType(io_type), allow_float_fallback=allow_float_fallback, num_samples=num_samples,
        training=training, gates=gate_list, progress=progress
    )  # fmt: skip
    report = result.report
    _micro_target.apply(target, report, data=data, gates=gate_list, preprocess=preprocess, progress=progress)
    comparison.write_reports(report, out_dir, plot_path)
    html = html_path or out_dir / "report.html"
    _outputs.write_ci_outputs(
        report, junit_path=junit_path, html_path=html, name=f"tflite-opt compare {Path(model).name}"
    )
    _common.emit_report(report, format_)
    progress.info(f"Wrote {len(result.files)} .tflite files, report.json, report.md and report.html to {out_dir}")
    _outputs.append_step_summary((out_dir / "report.md").read_text(encoding="utf-8"))
    _common.finish(report)


def _check_outputs(out_dir: Path, inputs, outputs) -> None:
    """No output (the folder's reports, --junit, --html) overwrites an input; the folder is not an input."""
    from tflite_opt.fileio import ensure_distinct

    for item in inputs:
        if item and item != "random":
            ensure_distinct(out_dir / "report.json", item)
            _outputs.check_output_paths(*outputs, inputs=[item])
            if Path(item).resolve() == out_dir.resolve():
                raise click.UsageError(f"--output-dir {out_dir} is an input; choose another folder")


def _load_data(loaded, data, train_data, representative_data, num_samples, preprocess, modes, qat, progress):
    """(evaluation, training, calibration) data, each checked against the model; calibration falls back to the
    training data, then (with a warning) to the evaluation data."""
    from tflite_opt.representative_data import load_data, ranges

    evaluation_data = load_data(data, loaded.inputs, preprocess=preprocess, allow_random=True)
    training_data = None
    if train_data:
        training_data = load_data(train_data, loaded.inputs, preprocess=preprocess, require_labels=True)
    representative = None
    if any(parse_variant_mode(m)[0].needs_representative_data for m in modes) or qat:
        if representative_data:
            representative = load_data(
                representative_data, loaded.inputs, preprocess=preprocess, num_samples=num_samples, allow_random=True
            )
        elif training_data is not None:
            representative = training_data
            progress.info("Calibrating int8/int16x8 on --train-data (no --representative-data given)")
        else:
            representative = evaluation_data
            progress.warn(
                "calibrating on the evaluation data (--data): pass --representative-data to keep "
                "calibration and evaluation apart"
            )
        if representative is not evaluation_data:  # evaluation reports the evaluation data's own warnings
            for warning in representative.warnings + ranges.range_mismatch_warnings(
                representative.inputs, evaluation_data.inputs, representative.source, evaluation_data.source
            ):
                progress.warn(warning)
    return evaluation_data, training_data, representative

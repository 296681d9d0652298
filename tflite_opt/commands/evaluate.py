"""``tflite-opt evaluate``: measure accuracy, size and latency of .tflite files (LiteRT only, no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import click

from tflite_opt.commands import _checks, _common, _micro_target, _outputs
from tflite_opt.representative_data.dataset import PREPROCESS_CHOICES


def _check_data(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and value != "random" and not Path(value).exists():
        raise click.BadParameter(f"{value} does not exist (give a .npz, .npy, an image folder or 'random')")
    return value


def _is_model(value: str) -> bool:
    """A Keras file or SavedModel rather than a .tflite (read from the file, without TensorFlow)."""
    from tflite_opt.errors import ModelLoadError
    from tflite_opt.models import ModelKind, detect_kind

    try:
        return detect_kind(value) != ModelKind.TFLITE
    except ModelLoadError:  # not a model either: measured (and reported) like any broken .tflite
        return False


def _reference_from_model(reference: str, progress) -> bytes:
    """A Keras/SavedModel reference, converted to fp32 in memory: the one evaluate path that imports TensorFlow."""
    from tflite_opt import models
    from tflite_opt.modes import Mode
    from tflite_opt.quantize import conversion

    loaded = models.load_model(reference, progress=progress)
    with progress.task("Converting the reference model (fp32)"):
        return conversion.convert(loaded, conversion.ConversionOptions(mode=Mode.FP32), None, progress)


@click.command("evaluate")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--data",
    callback=_check_data,
    metavar="PATH",
    help="Samples: .npz (labels in 'y' give accuracy), .npy, image folder, or 'random'. "
    "Without it only size, sparsity and latency are measured.",
)
@click.option(
    "--reference",
    type=click.Path(exists=True),
    metavar="FILE_OR_MODEL",
    help="What ratios, deltas, agreement and SQNR are against (default: the first FILE). A Keras file or "
    "SavedModel is converted to fp32 in memory (that path imports TensorFlow).",
)
@_common.evaluation_options
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Also write the report: .json (SPEC schema), .csv or .md by suffix.",
)
@click.option(
    "--preprocess",
    type=click.Choice(PREPROCESS_CHOICES),
    default="unit",
    show_default=True,
    help="Image folders: scale pixels to [0,1], [-1,1], ImageNet mean/std, or keep 0-255.",
)
@click.option("--num-samples", type=click.IntRange(min=1), metavar="N", help="Use only the first N samples.")
@click.option("--signature", metavar="KEY", help="Signature to run (default: serving_default / the first).")
@click.option(
    "--input-shape",
    "input_shape",
    multiple=True,
    metavar="NAME=D0,D1,...",
    help="Size a dynamic (-1) input axis, batch axis included (e.g. image=1,224,224,3). Repeatable.",
)
@click.option(
    "--output",
    "output_name",
    metavar="NAME",
    help="Output that accuracy is computed on (default: the output name that sorts first).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    metavar="N",
    help="Samples per invoke for files with a dynamic batch axis (default: by input size).",
)
@_micro_target.target_option
@_outputs.output_options
@_common.handle_errors
def command(files: tuple[str, ...], data: str | None, reference: str | None, threads: int, runs: int, warmup: int,
            no_xnnpack: bool, format_: str, max_accuracy_drop: float | None, gate_texts: tuple[str, ...],
            report_path: str | None, preprocess: str, num_samples: int | None, signature: str | None,
            output_name: str | None, batch_size: int | None, junit_path: str | None,
            html_path: str | None, target: str, input_shape: tuple[str, ...] = ()) -> None:  # fmt: skip
    """Measure accuracy, size and latency of .tflite files in the LiteRT interpreter.

    Every file runs on the same data; integer-I/O files are fed quantized inputs and their outputs are
    dequantized, so int8 and float files compare directly. Accuracy uses the output whose name sorts first
    (or --output). A file that fails is reported with its error and the others are still measured.
    Exit codes: 0 ok, 1 a file failed, 2 usage error, 3 a gate failed (the report is still written).

    \b
    Example:
      tflite-opt evaluate model_fp32.tflite model_int8.tflite --data test.npz
      tflite-opt evaluate *.tflite --data test.npz --format json --report report.json \\
          --max-accuracy-drop 0.01 --gate "size_ratio<=0.3"
      tflite-opt evaluate model_int8.tflite --data test.npz --target micro --gate "arena_bytes<=65536"
    """
    from tflite_opt.fileio import atomic_write_text, ensure_distinct
    from tflite_opt.measure import evaluation
    from tflite_opt.reporting import gates
    from tflite_opt.reporting import report as report_mod

    gate_list = _common.parse_gate_options(gate_texts, max_accuracy_drop)
    input_shapes = _common.parse_input_shapes(input_shape)
    _checks.refuse_models(files)
    paths = list(files)
    reference_index = 0
    reporter = _common.progress()
    reference_content = None
    if reference is not None and _is_model(reference):
        reference_content = _reference_from_model(reference, reporter)
        paths.insert(0, reference)
    elif reference is not None:
        resolved = [Path(p).resolve() for p in paths]
        if Path(reference).resolve() in resolved:
            reference_index = resolved.index(Path(reference).resolve())
        else:
            paths.insert(0, reference)
    names = evaluation.variant_names(paths)
    try:
        gates.check_variant_names(gate_list, names)
    except gates.GateSyntaxError as exc:
        raise click.BadParameter(str(exc), param_hint="'--gate'") from exc
    for output in (report_path, junit_path, html_path):
        if output is not None:
            ensure_distinct(output, *paths)
    _checks.check_report_suffix(report_path)

    options = _common.make_evaluation_options(
        threads,
        runs,
        warmup,
        no_xnnpack,
        preprocess,
        signature=signature,
        output=output_name,
        num_samples=num_samples,
        batch_size=batch_size,
        input_shapes=input_shapes,
    )
    sources = [evaluation.VariantSource(name=n, path=p) for n, p in zip(names, paths)]
    if reference_content is not None:
        sources[0] = evaluation.VariantSource(name=names[0], path=paths[0], content=reference_content, mode="fp32")
    run = evaluation.evaluate_variants(
        sources, data, reference=names[reference_index], options=options, progress=reporter
    )
    result = evaluation.build_report(run, options, gate_list)
    contents = {s.name: s.content for s in sources if s.content is not None}
    _micro_target.apply(target, result, data=data, gates=gate_list, contents=contents, signature=signature,
                        preprocess=preprocess, progress=reporter)  # fmt: skip

    _common.emit_report(result, format_)
    if report_path is not None:
        atomic_write_text(report_path, report_mod.render_text(result, report_mod.format_for_path(report_path)))
    _outputs.write_ci_outputs(result, junit_path=junit_path, html_path=html_path, name="tflite-opt evaluate")
    _common.finish(result)

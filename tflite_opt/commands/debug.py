"""``tflite-opt debug``: per-layer int8 quantization error, worst layers first, and the flags that fix them."""

from __future__ import annotations

import click

from tflite_opt.commands import _common
from tflite_opt.quantize.debugging import DEFAULT_THRESHOLD, FORMATS
from tflite_opt.representative_data.dataset import PREPROCESS_CHOICES


@click.command("debug")
@click.argument("model", type=click.Path(path_type=str))
@click.option(
    "--representative-data",
    "representative_data",
    required=True,
    metavar="PATH",
    help="Calibration samples, also run through the debugger: .npz, .npy, image folder, or 'random'.",
)
@click.option(
    "--num-samples",
    type=click.IntRange(min=1),
    default=None,
    help="Samples to calibrate and debug with (default: all, at most 500).",
)
@click.option(
    "--preprocess",
    type=click.Choice(PREPROCESS_CHOICES),
    default="unit",
    show_default=True,
    help="Image folders: scale pixels to [0,1], [-1,1], ImageNet mean/std, or keep 0-255.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_THRESHOLD,
    show_default=True,
    help="Flag layers whose RMSE/scale is above this (0.29 is pure rounding).",
)
@click.option(
    "--impact-top-k",
    "impact_top_k",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Measure the final-output impact of the K worst layers by local error and the K most concentrated "
    "activations (each kept in float alone and with its output boundary); 0 skips it.",
)
@click.option(
    "--format", "format_", type=click.Choice(FORMATS), default="table", show_default=True, help="What goes to stdout."
)
@_common.model_options
@_common.handle_errors
def command(
    model,
    representative_data,
    num_samples,
    preprocess,
    threshold,
    impact_top_k,
    format_,
    signature,
    input_shape,
    trust_model,
):
    """Per-layer int8 quantization error, worst layers first.

    Runs TFLite's QuantizationDebugger on the int8 conversion: every quantized op is compared with the same op
    in float on the same input. RMSE/scale near 0.29 is ordinary rounding; layers above --threshold are
    flagged. Then the impact on the final output: each candidate is kept in float alone and with its output
    boundary (its consumers), and the final SQNR and top-1 agreement are measured. The layer whose outlier
    channels crush its output ("culprit") is told from the next layer that shows the error ("victim of"), and
    the printed --keep-float flags are the set measured to recover the output (see 'convert --keep-float',
    'convert --equalize' and 'auto').

    \b
    Examples:
      tflite-opt debug model.keras --representative-data calib.npz
      tflite-opt debug model.keras --representative-data calib.npz --format json > layers.json
      tflite-opt convert model.keras -o m.tflite --mode int8 --representative-data calib.npz --keep-float dense2
    """
    from tflite_opt import models
    from tflite_opt.quantize import debugging
    from tflite_opt.representative_data import load_data

    progress = _common.progress()
    loaded = models.load_model(
        model,
        signature=signature,
        trust_model=trust_model,
        input_shapes=_common.parse_input_shapes(input_shape),
        progress=progress,
    )
    representative = load_data(
        representative_data, loaded.inputs, preprocess=preprocess, num_samples=num_samples, allow_random=True
    )
    for warning in representative.warnings:
        progress.warn(warning)
    with progress.task("Calibrating and quantizing (int8)"):
        report = debugging.analyze(
            loaded,
            representative,
            threshold=threshold,
            num_samples=num_samples,
            impact_top_k=impact_top_k,
            progress=progress,
        )
    if format_ == "json":
        click.echo(debugging.to_json(report), nl=False)
    elif format_ == "csv":
        click.echo(debugging.to_csv(report), nl=False)
    else:
        _common.print_table(debugging.debug_table(report))
        if report.attribution is not None:
            from tflite_opt.quantize.attribution import impact_table

            _common.print_table(impact_table(report.attribution, report.keep_float_flags()))

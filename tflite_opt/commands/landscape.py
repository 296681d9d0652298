"""``tflite-opt landscape``: the loss landscape around a model's weights and along its quantization direction."""

from __future__ import annotations

import json

import click

from tflite_opt.commands import _common
from tflite_opt.modes import Mode
from tflite_opt.representative_data.dataset import PREPROCESS_CHOICES
from tflite_opt.training.loss_choice import LOSS_NAMES

# Every mode whose weights differ from the float ones (as workflows.landscape.LANDSCAPE_MODES, without importing
# the workflow at --help time).
_MODES = [m.value for m in Mode if m != Mode.FP32]


def _odd(ctx, param, value: int) -> int:
    if value < 3 or value % 2 == 0:
        raise click.BadParameter(f"{value}: use an odd number, at least 3, so that the float weights are the centre")
    return value


@click.command("landscape")
@click.argument("model", type=click.Path(path_type=str))
@click.option(
    "--data",
    required=True,
    metavar="PATH",
    help="Labelled data the loss is measured on: .npz with 'y', or DIR/<class>/* image folders.",
)
@click.option(
    "--mode",
    type=click.Choice(_MODES),
    default=None,
    help="Quantization whose weights give the direction (default int8, or the --tflite file's mode).",
)
@click.option(
    "--grid", type=int, default=21, show_default=True, callback=_odd, help="Points per side of the 2-D grid (odd)."
)
@click.option(
    "--span",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="The grid covers [-SPAN, SPAN] in filter-normalized units.",
)
@click.option(
    "--num-samples",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Samples of --data to evaluate on (the first N); also the calibration limit.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random directions.")
@click.option(
    "--plot",
    "plot_path",
    required=True,
    type=click.Path(dir_okay=False),
    metavar="OUT.png",
    help="Write the contour plot and the quantization curve here.",
)
@click.option(
    "--format",
    "format_",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="What goes to stdout.",
)
@click.option(
    "--sharpness-radius",
    type=click.FloatRange(min=0, min_open=True),
    default=0.25,
    show_default=True,
    help="Filter-normalized radius at which the sharpness (mean loss rise) is taken.",
)
@click.option(
    "--tflite",
    "tflite_path",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE.tflite",
    help="Take the quantized weights from this conversion of MODEL instead of converting.",
)
@click.option(
    "--representative-data",
    "representative_data",
    metavar="PATH",
    help="Calibration data for int8/int16x8 (default: --data).",
)
@click.option(
    "--preprocess",
    type=click.Choice(PREPROCESS_CHOICES),
    default="unit",
    show_default=True,
    help="Image folders: scale pixels to [0,1], [-1,1], ImageNet mean/std, or 0-255.",
)
@click.option(
    "--loss",
    "loss_choice",
    type=click.Choice(LOSS_NAMES),
    default="auto",
    show_default=True,
    help="Loss to draw; auto: the model's compiled cross-entropy, else one matching its output layer.",
)
@click.option("--allow-float-fallback", is_flag=True, help="int8: keep ops without an int8 kernel in float.")
@click.option(
    "--trust-model",
    is_flag=True,
    help="Allow layers that run arbitrary Python when loaded (Lambda). Only for files you trust.",
)
@_common.handle_errors
def command(
    model,
    data,
    mode,
    grid,
    span,
    num_samples,
    seed,
    plot_path,
    format_,
    sharpness_radius,
    tflite_path,
    representative_data,
    preprocess,
    loss_choice,
    allow_float_fallback,
    trust_model,
):
    """Draw the loss landscape around a Keras model's weights and along its quantization direction.

    After Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets": the loss on --data over a grid of
    two filter-normalized random directions (the float weights at the centre), and along the line from the
    float weights (α = 0) through the quantized weights (α = 1, the converted file's dequantized kernels,
    evaluated in float) to α = 2, with the real .tflite file's accuracy in LiteRT beside it. The sharpness
    number is the mean loss rise at --sharpness-radius over random filter-normalized directions.

    \b
    Examples:
      tflite-opt landscape model.keras --data test.npz --plot landscape.png
      tflite-opt landscape model.keras --data test.npz --mode float16 --grid 11 --plot l.png --format json
    """
    from tflite_opt import models
    from tflite_opt.fileio import ensure_distinct
    from tflite_opt.representative_data import load_data
    from tflite_opt.workflows.landscape import LandscapeOptions, run_landscape

    ensure_distinct(plot_path, model, data, representative_data, tflite_path)
    progress = _common.progress()
    quantized = None
    if tflite_path:
        quantized, file_mode = _read_tflite(tflite_path)
        mode = mode or file_mode
    mode = Mode(mode or Mode.INT8.value)
    loaded = models.load_model(model, trust_model=trust_model, progress=progress)
    dataset = load_data(data, loaded.inputs, preprocess=preprocess, num_samples=num_samples)
    representative = None
    if representative_data:
        representative = load_data(
            representative_data, loaded.inputs, preprocess=preprocess, num_samples=num_samples, allow_random=True
        )
    elif mode.needs_representative_data and quantized is None:
        progress.warn(f"calibrating {mode.value} on --data; pass --representative-data to keep them apart")
    options = LandscapeOptions(
        mode=mode,
        grid=grid,
        span=span,
        num_samples=num_samples,
        seed=seed,
        sharpness_radius=sharpness_radius,
        loss=loss_choice,
        allow_float_fallback=allow_float_fallback,
    )
    result = run_landscape(
        loaded,
        dataset,
        options,
        representative=representative,
        quantized=quantized,
        quantized_source=tflite_path or "the converted file",
        progress=progress,
    )
    result.plot = str(_plot(result, plot_path))
    if format_ == "json":
        click.echo(json.dumps(result.to_json_dict(), indent=2))
    else:
        _common.print_table(result.table())


def _read_tflite(path: str) -> tuple[bytes, str]:
    """The file's bytes and the mode it looks like (``int8`` when it cannot be told)."""
    from tflite_opt.measure.inspection import inspect_model
    from tflite_opt.measure.runtime import read_model_bytes

    content = read_model_bytes(path)
    inspection = inspect_model(content, path=path)
    if inspection.mode == "fp32":
        raise click.UsageError(
            f"{path} holds float32 weights: there is no quantization direction to follow; "
            "pass a quantized file (int8, float16, dynamic, ...)"
        )
    return content, inspection.mode if inspection.mode in _MODES else "int8"


def _plot(result, path: str):
    from tflite_opt.reporting.landscape_plot import plot_landscape

    return plot_landscape(
        path,
        coordinates=result.grid.coordinates,
        grid_loss=result.grid.loss,
        alpha=result.curve.alpha,
        curve_loss=result.curve.loss,
        curve_accuracy=result.curve.accuracy,
        mode=result.mode,
        distance=result.curve.distance,
        tflite_accuracy=result.curve.tflite_accuracy,
        tflite_loss=result.curve.tflite_loss,
        sharpness_radius=result.sharpness.radius,
        title=f"{result.model} — {result.num_samples} samples, loss {result.loss_name}, "
        f"sharpness {result.sharpness.loss_rise:.4f} at r = {result.sharpness.radius:g}",
    )

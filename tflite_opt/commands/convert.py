"""``tflite-opt convert``: one post-training conversion, by TFLiteConverter or the LiteRT Quantizer."""

from __future__ import annotations

from pathlib import Path

import click

from tflite_opt.commands import _checks, _common
from tflite_opt.modes import (
    ALL_MODE_NAMES,
    QUANTIZER_MODES,
    Algorithm,
    Backend,
    Granularity,
    IoType,
    Mode,
    backends_for,
    default_backend,
)
from tflite_opt.reporting.units import format_size


@click.command("convert")
@click.argument("model", type=click.Path(path_type=str))
@click.option(
    "-o", "--output", "output", required=True, type=click.Path(dir_okay=False), help="The .tflite file to write."
)
@click.option(
    "--mode", type=click.Choice(ALL_MODE_NAMES), default=Mode.FP32.value, show_default=True, help="Post-training mode."
)
@click.option(
    "--backend",
    type=click.Choice([b.value for b in Backend]),
    default=None,
    help="converter (TFLiteConverter) or quantizer (LiteRT Quantizer). Default: converter for fp32, "
    "dynamic, float16, int8, int16x8; quantizer for the int4/weight-only modes and .tflite sources.",
)
@click.option(
    "--granularity",
    type=click.Choice([g.value for g in Granularity]),
    default=Granularity.CHANNEL.value,
    show_default=True,
    help="Weight scales per output channel, per tensor (also converter int8), or per "
    "block of 32-256 inputs (quantizer int4).",
)
@click.option(
    "--algorithm",
    type=click.Choice([a.value for a in Algorithm]),
    default=Algorithm.MINMAX.value,
    show_default=True,
    help="Quantizer: how weight scales are chosen (gptq needs --representative-data).",
)
@click.option(
    "--recipe",
    "recipe",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE.json",
    help="Quantizer: a recipe in the LiteRT Quantizer's JSON format, applied after the mode's recipe.",
)
@_common.model_options
@_common.representative_options
@click.option(
    "--io-type",
    type=click.Choice([t.value for t in IoType]),
    default=IoType.INT8.value,
    show_default=True,
    help="int8 mode: type of the model's inputs and outputs (int8 = integer-only).",
)
@click.option(
    "--allow-float-fallback",
    is_flag=True,
    help="int8/int16x8: keep ops that have no integer kernel in float instead of failing.",
)
@click.option(
    "--keep-float",
    "keep_float",
    multiple=True,
    metavar="NAME",
    help="int8 (or any quantizer mode): keep this layer, tensor or op type (e.g. MEAN) in float. Repeatable.",
)
@click.option(
    "--sparse", is_flag=True, help="fp32/float16/int16x8: encode pruned weights compactly (EXPERIMENTAL_SPARSITY)."
)
@click.option(
    "--equalize",
    is_flag=True,
    help="Cross-layer equalization (Nagel et al. 2019) of the float model first; the float function is "
    "checked unchanged. Needs a Keras model and --representative-data.",
)
@click.option(
    "--equalize-relu6",
    type=click.Choice(["keep", "unclipped"]),
    default="keep",
    show_default=True,
    help="keep: a ReLU6 ends a chain; unclipped: a ReLU6 that never clips on the calibration data "
    "becomes ReLU (DFQ's treatment).",
)
@click.option(
    "--bias-correction",
    is_flag=True,
    help="int8 (converter): subtract the mean output shift that weight quantization causes, measured "
    "on --representative-data.",
)
@click.option(
    "--save-equalized",
    type=click.Path(dir_okay=False),
    metavar="FILE.keras",
    help="Also save the equalized (and bias-corrected) Keras model.",
)
@_common.handle_errors
def command(
    model,
    output,
    mode,
    backend,
    granularity,
    algorithm,
    recipe,
    signature,
    input_shape,
    trust_model,
    representative_data,
    num_samples,
    preprocess,
    io_type,
    allow_float_fallback,
    keep_float,
    sparse,
    equalize,
    equalize_relu6,
    bias_correction,
    save_equalized,
):
    """Convert a model to .tflite in one post-training mode.

    \b
    Modes: fp32 (baseline), dynamic (int8 weights), float16, int8 (full integer,
    calibrated), int16x8 (int16 activations, int8 weights); LiteRT Quantizer:
    int4 (int4 weights, float activations), int4-weights, int8-weights
    (weight-only). MODEL may be a float .tflite for every quantizer mode.
    \b
    Examples:
      tflite-opt convert model.keras -o model.tflite
      tflite-opt convert model.keras -o model_int8.tflite --mode int8 --representative-data calib.npz
      tflite-opt convert saved_model/ -o m.tflite --mode int8 --representative-data images/ --io-type float32
      tflite-opt convert float.tflite -o m_int4.tflite --mode int4 --granularity block32
    """
    from tflite_opt import fileio, models
    from tflite_opt.errors import ModelLoadError
    from tflite_opt.quantize import conversion

    mode = Mode(mode)
    try:
        is_tflite = models.detect_kind(model) == models.ModelKind.TFLITE
    except ModelLoadError:
        is_tflite = False  # load_model reports it, after the flag checks
    options = conversion.ConversionOptions(
        mode=mode,
        io_type=IoType(io_type),
        allow_float_fallback=allow_float_fallback or bool(keep_float),
        keep_float=tuple(keep_float),
        num_samples=num_samples,
        sparsity=sparse,
        backend=_pick_backend(mode, backend, is_tflite),
        granularity=Granularity(granularity),
        algorithm=Algorithm(algorithm),
        recipe=Path(recipe) if recipe else None,
    )
    _check_flags(options, representative_data, is_tflite, input_shape, trust_model)
    rescue = _check_rescue_flags(
        equalize, equalize_relu6, bias_correction, save_equalized, is_tflite, representative_data, model
    )
    out_path = fileio.ensure_distinct(output, model, representative_data, recipe)
    _checks.check_tflite_suffix(output)
    fileio.check_writable(out_path)
    progress = _common.progress()
    if is_tflite:
        result = _convert_tflite(model, options, signature, representative_data, preprocess, progress)
    else:
        result = _convert_model(
            model, options, signature, input_shape, trust_model, representative_data, preprocess, progress, rescue
        )
    for change in result.changes:
        progress.info(change)
    for kept in result.float_ops:
        progress.info(f"kept in float: {kept}")
    fileio.atomic_write_bytes(out_path, result.content)
    made_by = " (LiteRT Quantizer)" if result.backend == Backend.QUANTIZER else ""
    click.echo(f"{mode.value}: {format_size(len(result.content))} -> {output}{made_by}")


def _pick_backend(mode: Mode, backend: str | None, is_tflite: bool) -> Backend:
    if backend is not None:
        chosen = Backend(backend)
        if chosen not in backends_for(mode):
            other = (
                "the LiteRT Quantizer (--backend quantizer)"
                if chosen == Backend.CONVERTER
                else "TFLiteConverter (--backend converter)"
            )
            raise click.UsageError(f"--mode {mode.value} is made by {other}, not by --backend {chosen.value}")
        return chosen
    if is_tflite and mode in QUANTIZER_MODES:
        return Backend.QUANTIZER  # the converter needs a SavedModel; a float .tflite can only go to the quantizer
    return default_backend(mode)


def _check_flags(options, representative_data, is_tflite: bool, input_shape, trust_model) -> None:
    """Flag combinations that cannot work are usage errors (exit 2), before anything is loaded."""
    from tflite_opt.errors import ConversionError
    from tflite_opt.quantize import recipes
    from tflite_opt.quantize.options import SPARSE_ENCODING_MODES

    mode, quantizer = Mode(options.mode), options.backend == Backend.QUANTIZER
    if recipes.needs_calibration(options) and not representative_data:
        what = f"--mode {mode.value}" if mode.needs_representative_data else "--algorithm gptq"
        raise click.UsageError(f"{what} needs --representative-data PATH (a .npz, .npy or image folder)")
    if options.keep_float and mode != Mode.INT8 and not quantizer:
        raise click.UsageError("--keep-float applies to --mode int8 only (or to a --backend quantizer mode)")
    if options.io_type != IoType.INT8 and mode != Mode.INT8:
        raise click.UsageError("--io-type applies to --mode int8 only")
    if options.sparsity and (quantizer or mode not in SPARSE_ENCODING_MODES):
        raise click.UsageError(
            "--sparse applies to the converter's fp32, float16 and int16x8: XNNPACK cannot run sparse int8 weights"
        )
    if is_tflite and (input_shape or trust_model):
        raise click.UsageError("--input-shape and --trust-model apply to Keras/SavedModel sources, not to a .tflite")
    if not quantizer:
        if options.algorithm != Algorithm.MINMAX or options.recipe:
            raise click.UsageError("--algorithm and --recipe are LiteRT Quantizer options; add --backend quantizer")
        if options.granularity != Granularity.CHANNEL and not (
            options.granularity == Granularity.TENSOR and mode == Mode.INT8
        ):
            raise click.UsageError(
                f"--granularity {options.granularity.value} with the converter applies to int8 "
                "(tensor) only; use --backend quantizer"
            )
        return
    try:
        recipes.check_options(options)
    except ConversionError as exc:
        raise click.UsageError(str(exc)) from None


def _load_calibration(representative_data, inputs, preprocess, num_samples, progress):
    from tflite_opt.representative_data import load_data

    if not representative_data:
        return None
    representative = load_data(
        representative_data, inputs, preprocess=preprocess, num_samples=num_samples, allow_random=True
    )
    for warning in representative.warnings:
        progress.warn(warning)
    return representative


def _convert_tflite(model, options, signature, representative_data, preprocess, progress):
    from tflite_opt.errors import ModelLoadError
    from tflite_opt.quantize import conversion, recipes
    from tflite_opt.quantize.tflite_source import load_tflite_source

    if options.backend != Backend.QUANTIZER:
        raise ModelLoadError(
            f"{model} is already a .tflite file; --mode {Mode(options.mode).value} on the converter takes a "
            "SavedModel or Keras model; quantize a float .tflite with the LiteRT Quantizer's modes "
            f"({', '.join(m.value for m in QUANTIZER_MODES)})"
        )
    source = load_tflite_source(model, signature=signature)
    representative = None
    if recipes.needs_calibration(options):
        representative = _load_calibration(
            representative_data, source.inputs, preprocess, options.num_samples, progress
        )
    return conversion.convert_tflite(source, options, representative, progress)


def _check_rescue_flags(equalize, relu6, bias_correction, save_equalized, is_tflite, representative_data, model):
    """The --equalize/--bias-correction flags as a dict for :func:`_convert_model` (``None`` when not asked for)."""
    if save_equalized and not equalize:
        raise click.UsageError("--save-equalized needs --equalize")
    if not (equalize or bias_correction):
        return None
    if is_tflite:
        raise click.UsageError(
            "--equalize and --bias-correction rescale a Keras model's layers; give the .keras/.h5 model, not a .tflite"
        )
    if not representative_data:
        raise click.UsageError("--equalize and --bias-correction need --representative-data PATH")
    if save_equalized:
        from tflite_opt import fileio

        fileio.ensure_distinct(save_equalized, model, representative_data)
    return {
        "equalize": equalize,
        "bias_correction": bias_correction,
        "relu6": relu6,
        "save_transformed": save_equalized,
    }


def _convert_model(
    model, options, signature, input_shape, trust_model, representative_data, preprocess, progress, rescue=None
):
    from tflite_opt import models
    from tflite_opt.quantize import conversion, recipes

    loaded = models.load_model(
        model,
        signature=signature,
        trust_model=trust_model,
        input_shapes=_common.parse_input_shapes(input_shape),
        progress=progress,
    )
    representative = None
    if recipes.needs_calibration(options) or rescue:
        representative = _load_calibration(
            representative_data, loaded.inputs, preprocess, options.num_samples, progress
        )
    if rescue:
        from tflite_opt.quantize.options import ConversionResult
        from tflite_opt.quantize.transforms import check_applicable, convert_transformed

        check_applicable(loaded, options, bias_correction=rescue["bias_correction"])
        content, done = convert_transformed(loaded, options, representative, progress=progress, **rescue)
        return ConversionResult(content=content, backend=options.resolved_backend, changes=done.summaries())
    with progress.task(f"Converting ({Mode(options.mode).value})"):
        return conversion.convert_model(loaded, options, representative, progress)

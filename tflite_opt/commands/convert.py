"""``tflite-opt convert``: one post-training conversion."""

from __future__ import annotations

import click

from tflite_opt.commands import _common
from tflite_opt.modes import MODE_NAMES, IoType, Mode


@click.command("convert")
@click.argument("model", type=click.Path(path_type=str))
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False), help="The .tflite file to write.")
@click.option("--mode", type=click.Choice(MODE_NAMES), default=Mode.FP32.value, show_default=True,
              help="Post-training mode.")
@_common.model_options
@_common.representative_options
@click.option("--io-type", type=click.Choice([t.value for t in IoType]), default=IoType.INT8.value, show_default=True,
              help="int8 mode: type of the model's inputs and outputs (int8 = integer-only).")
@click.option("--allow-float-fallback", is_flag=True,
              help="int8/int16x8: keep ops that have no integer kernel in float instead of failing.")
@click.option("--keep-float", "keep_float", multiple=True, metavar="NAME",
              help="int8: keep this layer, tensor or op type (e.g. MEAN) in float. Repeatable.")
@click.option("--sparse", is_flag=True,
              help="fp32/float16/int16x8: encode pruned weights compactly (EXPERIMENTAL_SPARSITY).")
@_common.handle_errors
def command(model, output, mode, signature, input_shape, trust_model, representative_data, num_samples, preprocess,
            io_type, allow_float_fallback, keep_float, sparse):
    """Convert a model to .tflite in one post-training mode.

    \b
    Modes: fp32 (baseline), dynamic (int8 weights), float16, int8 (full integer,
    calibrated), int16x8 (int16 activations, int8 weights).
    \b
    Examples:
      tflite-opt convert model.keras -o model.tflite
      tflite-opt convert model.keras -o model_int8.tflite --mode int8 --representative-data calib.npz
      tflite-opt convert saved_model/ -o m.tflite --mode int8 --representative-data images/ --io-type float32
    """
    from tflite_opt import conversion, fileio, models
    from tflite_opt.representative_data import load_data

    mode = Mode(mode)
    if mode.needs_representative_data and not representative_data:
        raise click.UsageError(f"--mode {mode.value} needs --representative-data PATH (a .npz, .npy or image folder)")
    if keep_float and mode != Mode.INT8:
        raise click.UsageError("--keep-float applies to --mode int8 only")
    if io_type != IoType.INT8.value and mode != Mode.INT8:
        raise click.UsageError("--io-type applies to --mode int8 only")
    if sparse and mode not in conversion.SPARSE_ENCODING_MODES:
        raise click.UsageError("--sparse applies to fp32, float16 and int16x8: XNNPACK cannot run sparse int8 weights")
    out_path = fileio.ensure_distinct(output, model, representative_data)
    progress = _common.progress()
    loaded = models.load_model(
        model, signature=signature, trust_model=trust_model, input_shapes=_common.parse_input_shapes(input_shape),
        progress=progress,
    )
    representative = None
    if mode.needs_representative_data:
        representative = load_data(
            representative_data, loaded.inputs, preprocess=preprocess, num_samples=num_samples,
            allow_random=True,
        )
        for warning in representative.warnings:
            progress.warn(warning)
    options = conversion.ConversionOptions(
        mode=mode, io_type=IoType(io_type), allow_float_fallback=allow_float_fallback or bool(keep_float),
        keep_float=tuple(keep_float), num_samples=num_samples, sparsity=sparse,
    )
    with progress.task(f"Converting ({mode.value})"):
        model_bytes = conversion.convert(loaded, options, representative, progress)
    fileio.atomic_write_bytes(out_path, model_bytes)
    click.echo(f"{mode.value}: {_common.human_size(len(model_bytes))} -> {output}")

"""The front door of quantization: ``convert`` a loaded model (or an in-memory Keras model, or a float ``.tflite``).

It picks the path from ``ConversionOptions.resolved_backend``:

* **converter** (TFLiteConverter, from the model's SavedModel): the five original modes; ``--keep-float`` goes
  through selective quantization; per-tensor int8 (``--granularity tensor``) calibrates once and runs the MLIR
  quantizer with per-channel off (what the converter's private per-channel switch does).
* **quantizer** (LiteRT Quantizer): a Keras/SavedModel source is converted to fp32 once, in memory, then
  quantized; a float ``.tflite`` source goes straight in, and nothing on that path imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from tflite_opt.errors import ConversionError
from tflite_opt.modes import Backend, Granularity, Mode, backends_for
from tflite_opt.quantize.converter import convert_with_converter, float_op_names
from tflite_opt.quantize.options import (
    DEFAULT_CALIBRATION_SAMPLES,
    SPARSE_ENCODING_MODES,
    ConversionOptions,
    ConversionResult,
    calibration_samples,
)

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.models import LoadedModel
    from tflite_opt.progress import Progress
    from tflite_opt.quantize.tflite_source import TfliteSource
    from tflite_opt.representative_data import Dataset

__all__ = [
    "DEFAULT_CALIBRATION_SAMPLES",
    "SPARSE_ENCODING_MODES",
    "ConversionOptions",
    "ConversionResult",
    "calibration_samples",
    "check_backend",
    "convert",
    "convert_keras_model",
    "convert_model",
    "convert_saved_model",
    "convert_tflite",
    "float_op_names",
    "quantize_float_tflite",
]


def check_backend(options: ConversionOptions) -> Backend:
    """The backend ``options`` resolve to, checked against the mode.

    Raises:
        ConversionError: the backend cannot make the mode (e.g. int4 on the converter).
    """
    backend = options.resolved_backend
    mode = Mode(options.mode)
    if backend not in backends_for(mode):
        other = " or ".join(b.value for b in backends_for(mode))
        raise ConversionError(f"--mode {mode.value} is not made by the {backend.value} backend; use --backend {other}")
    return backend


def convert(
    model: "LoadedModel",
    options: ConversionOptions,
    representative: "Dataset | None" = None,
    progress: "Progress | None" = None,
) -> bytes:
    """Convert a loaded model; returns the ``.tflite`` flatbuffer (see :func:`convert_model` for the details).

    Raises:
        ConversionError: the converter or quantizer failed, int8 could not be made integer-only (the ops are
            named), or the quantizer quantized less than its recipe targets.
    """
    return convert_model(model, options, representative, progress).content


def convert_model(
    model: "LoadedModel",
    options: ConversionOptions,
    representative: "Dataset | None" = None,
    progress: "Progress | None" = None,
) -> ConversionResult:
    """Convert a loaded Keras/SavedModel model with the backend ``options`` resolve to."""
    if check_backend(options) == Backend.CONVERTER:
        content = convert_saved_model(model.saved_model_dir, model.signature_key, options, representative, progress)
        return ConversionResult(content=content, backend=Backend.CONVERTER)
    fp32 = convert_with_converter(
        model.saved_model_dir, model.signature_key, ConversionOptions(mode=Mode.FP32), None, progress
    )
    return quantize_float_tflite(fp32, model.signature_key, options, representative, progress)


def convert_keras_model(
    keras_model,
    options: ConversionOptions,
    representative: "Dataset | None" = None,
    progress: "Progress | None" = None,
) -> bytes:
    """Convert an in-memory Keras 3 or tf_keras model (e.g. a fine-tuned one) through a temporary SavedModel."""
    from tflite_opt.models.loading import ModelKind, export_saved_model, is_keras3_model

    kind = ModelKind.KERAS3 if is_keras3_model(keras_model) else ModelKind.TF_KERAS
    saved_model = export_saved_model(keras_model, kind)
    if check_backend(options) == Backend.QUANTIZER:
        fp32 = convert_with_converter(saved_model, "serving_default", ConversionOptions(mode=Mode.FP32), None, progress)
        return quantize_float_tflite(fp32, "serving_default", options, representative, progress).content
    return convert_saved_model(saved_model, "serving_default", options, representative, progress)


def convert_saved_model(
    saved_model_dir: Path,
    signature_key: str,
    options: ConversionOptions,
    representative: "Dataset | None" = None,
    progress: "Progress | None" = None,
) -> bytes:
    """Convert one signature of a SavedModel with the converter backend; returns the ``.tflite`` bytes."""
    mode = Mode(options.mode)
    per_tensor = Granularity(options.granularity) == Granularity.TENSOR
    if Granularity(options.granularity) not in (Granularity.CHANNEL, Granularity.TENSOR) or (
        per_tensor and mode != Mode.INT8
    ):
        raise ConversionError(
            f"--granularity {Granularity(options.granularity).value} is not a converter option for --mode "
            f"{mode.value} (the converter does per-tensor int8 only); use --backend quantizer"
        )
    if options.keep_float and mode != Mode.INT8:
        raise ConversionError("--keep-float applies to int8 mode only")
    if per_tensor:
        return _convert_per_tensor_int8(saved_model_dir, signature_key, options, representative, progress)
    if options.keep_float:
        from tflite_opt.quantize.selective import convert_keeping_float

        return convert_keeping_float(saved_model_dir, signature_key, options, representative, progress)
    content = convert_with_converter(saved_model_dir, signature_key, options, representative, progress)
    if mode == Mode.INT16X8:
        from tflite_opt.quantize.prepare_failures import check_prepares

        check_prepares(content)  # an int32 overflow shows only when the file is prepared: say it here
    return content


def _convert_per_tensor_int8(
    saved_model_dir: Path,
    signature_key: str,
    options: ConversionOptions,
    representative: "Dataset | None",
    progress: "Progress | None",
) -> bytes:
    """int8 with one scale per weight tensor (NPUs/DSPs that lack per-channel kernels), ``--keep-float`` honoured.

    The route QuantizationDebugger takes: calibrate once, then the MLIR quantizer with ``disable_per_channel``.
    """
    from tflite_opt.quantize import selective

    if options.sparsity:
        raise ConversionError("sparse weight encoding does not apply to int8 (XNNPACK cannot run sparse int8)")
    if representative is None:
        raise ConversionError("int8 quantization needs representative data (--representative-data)")
    calibrated = selective.calibrate(
        saved_model_dir, signature_key, representative, num_samples=options.num_samples, progress=progress
    )
    calibrated = dataclasses.replace(calibrated, disable_per_channel=True)
    selection = selective.resolve_keep_float(options.keep_float, calibrated) if options.keep_float else None
    content = selective.quantize_calibrated(calibrated, io_type=options.io_type, keep_float=selection)
    selective.check_loads(content)
    if not options.allow_float_fallback and not options.keep_float:
        float_ops = float_op_names(content)
        if float_ops:
            raise ConversionError(
                f"int8 conversion is not integer-only: op(s) {', '.join(float_ops)} run in float; "
                "pass --allow-float-fallback to keep them in float"
            )
    return content


def quantize_float_tflite(
    content: bytes,
    signature_key: str,
    options: ConversionOptions,
    representative: "Dataset | None" = None,
    progress: "Progress | None" = None,
) -> ConversionResult:
    """Quantize a float ``.tflite`` (e.g. the fp32 file ``compare`` already made) with the LiteRT Quantizer.

    The bytes go through the same preparation as a ``.tflite`` source (old-schema codes, missing signature,
    float16 weights; an already-quantized file is refused).
    """
    from tflite_opt.quantize import quantizer, tflite_source

    check_backend(dataclasses.replace(options, backend=Backend.QUANTIZER))
    prepared, changes = tflite_source.prepare_float_model(content)
    result = quantizer.quantize_tflite(prepared, signature_key, options, representative, progress)
    result.changes = changes + result.changes
    return result


def convert_tflite(
    source: "TfliteSource",
    options: ConversionOptions,
    representative: "Dataset | None" = None,
    progress: "Progress | None" = None,
) -> ConversionResult:
    """Quantize a float ``.tflite`` source (from :func:`tflite_opt.quantize.tflite_source.load_tflite_source`).

    ``options.backend`` ``None`` means the quantizer here, whatever the mode: it is the backend that reads a
    ``.tflite``.

    Raises:
        ConversionError: the options ask for the converter (it needs a Keras/SavedModel source), or the quantizer
            failed or quantized too little.
    """
    from tflite_opt.quantize import quantizer

    if options.backend is None:
        options = dataclasses.replace(options, backend=Backend.QUANTIZER)
    if options.resolved_backend == Backend.CONVERTER:
        raise ConversionError(
            f"{source.path} is a .tflite file: the converter backend needs the Keras or SavedModel source; "
            "quantize the .tflite with --backend quantizer (modes dynamic, int8, int16x8, int4, int4-weights, "
            "int8-weights)"
        )
    check_backend(options)
    result = quantizer.quantize_tflite(source.content, source.signature_key, options, representative, progress)
    result.changes = list(source.changes) + result.changes
    return result

"""Post-training conversion through ``tf.lite.TFLiteConverter``: fp32, dynamic, float16, int8, int16x8.

Every model reaches the converter as a SavedModel (``LoadedModel.saved_model_dir``), so Keras 3, tf_keras and
SavedModel inputs share one path and the ``.tflite`` signature keeps the model's tensor names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from tflite_opt.errors import ConversionError
from tflite_opt.modes import IoType, Mode
from tflite_opt.progress import ensure

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.models import LoadedModel
    from tflite_opt.progress import Progress
    from tflite_opt.representative_data import Dataset

DEFAULT_CALIBRATION_SAMPLES = 500
# EXPERIMENTAL_SPARSITY on int8/dynamic files makes XNNPACK fail to prepare FULLY_CONNECTED (google/XNNPACK#1419).
SPARSE_ENCODING_MODES = (Mode.FP32, Mode.FLOAT16, Mode.INT16X8)


@dataclass
class ConversionOptions:
    """What a conversion should produce (the ``convert`` flags, as a value).

    Attributes:
        mode: the post-training mode.
        io_type: int8 mode only: the type of the model's inputs and outputs (int8 = integer-only I/O).
        allow_float_fallback: int8 mode: keep ops without an int8 kernel in float instead of failing.
        keep_float: layer names, tensor names or op types to keep in float (int8 mode; selective quantization).
        num_samples: calibration samples to use (``None``: all given, at most ``DEFAULT_CALIBRATION_SAMPLES``).
        sparsity: add ``EXPERIMENTAL_SPARSITY`` (pruned models: sparse weights encoded compactly).
    """

    mode: Mode
    io_type: IoType = IoType.INT8
    allow_float_fallback: bool = False
    keep_float: Sequence[str] = field(default_factory=tuple)
    num_samples: int | None = None
    sparsity: bool = False


def convert(
    model: "LoadedModel",
    options: ConversionOptions,
    representative: "Dataset | None" = None,
    progress: "Progress | None" = None,
) -> bytes:
    """Convert a loaded model; returns the ``.tflite`` flatbuffer.

    Raises:
        ConversionError: the converter failed, or int8 could not be made integer-only (the ops are named).
    """
    return convert_saved_model(model.saved_model_dir, model.signature_key, options, representative, progress)


def convert_keras_model(
    keras_model,
    options: ConversionOptions,
    representative: "Dataset | None" = None,
    progress: "Progress | None" = None,
) -> bytes:
    """Convert an in-memory Keras 3 or tf_keras model (e.g. a fine-tuned one) through a temporary SavedModel."""
    from tflite_opt.models import ModelKind, _is_keras3_model, export_saved_model

    kind = ModelKind.KERAS3 if _is_keras3_model(keras_model) else ModelKind.TF_KERAS
    saved_model = export_saved_model(keras_model, kind)
    return convert_saved_model(saved_model, "serving_default", options, representative, progress)


def make_converter(saved_model_dir: Path, signature_key: str):
    from tflite_opt import tf_runtime

    tf = tf_runtime.import_tensorflow()
    return tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[signature_key])


def configure(converter, options: ConversionOptions, representative: "Dataset | None", progress=None) -> None:
    """Set a converter's optimizations, types and calibration data for ``options``."""
    from tflite_opt import tf_runtime

    tf = tf_runtime.import_tensorflow()
    mode = Mode(options.mode)
    if options.sparsity and mode not in SPARSE_ENCODING_MODES:
        raise ConversionError(
            f"sparse weight encoding applies to {', '.join(m.value for m in SPARSE_ENCODING_MODES)}; with "
            f"{mode.value} the XNNPACK delegate cannot run sparse weights (keep them dense: zeros still gzip well)"
        )
    if options.sparsity:
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    if mode == Mode.FP32:
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT] + (
        [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if options.sparsity else []
    )
    if mode == Mode.DYNAMIC:
        return
    if mode == Mode.FLOAT16:
        converter.target_spec.supported_types = [tf.float16]
        return
    if representative is None:
        raise ConversionError(f"mode {mode.value} needs representative data (--representative-data)")
    converter.representative_dataset = _representative_generator(representative, options.num_samples, progress)
    if mode == Mode.INT8:
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if options.allow_float_fallback:
            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        converter.target_spec.supported_ops = ops
        io_dtype = {IoType.INT8: tf.int8, IoType.UINT8: tf.uint8, IoType.FLOAT32: tf.float32}[IoType(options.io_type)]
        converter.inference_input_type = io_dtype
        converter.inference_output_type = io_dtype
    else:  # int16x8: int16 activations, int8 weights; float I/O
        ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        if options.allow_float_fallback:
            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        converter.target_spec.supported_ops = ops


def calibration_samples(representative: "Dataset", num_samples: int | None) -> "Dataset":
    limit = num_samples if num_samples is not None else DEFAULT_CALIBRATION_SAMPLES
    return representative.take(limit)


def _representative_generator(representative: "Dataset", num_samples: int | None, progress):
    samples = calibration_samples(representative, num_samples)
    progress = ensure(progress)

    def generate() -> Iterable[dict]:
        with progress.task("Calibrating", total=len(samples)) as task:
            for sample in samples.samples():
                yield sample
                task.advance()

    return generate


def convert_saved_model(
    saved_model_dir: Path,
    signature_key: str,
    options: ConversionOptions,
    representative: "Dataset | None" = None,
    progress: "Progress | None" = None,
) -> bytes:
    """Convert one signature of a SavedModel with ``options``; returns the ``.tflite`` bytes."""
    from tflite_opt import tf_runtime

    mode = Mode(options.mode)
    if options.keep_float:
        if mode != Mode.INT8:
            raise ConversionError("--keep-float applies to int8 mode only")
        from tflite_opt.selective import convert_keeping_float

        return convert_keeping_float(saved_model_dir, signature_key, options, representative, progress)
    converter = make_converter(saved_model_dir, signature_key)
    configure(converter, options, representative, progress)
    try:
        with tf_runtime.quiet_native():
            model_bytes = converter.convert()
    except Exception as exc:  # noqa: BLE001 - the converter raises ConverterError, ValueError, RuntimeError ...
        raise ConversionError(explain_failure(exc, options)) from exc
    if mode == Mode.INT8 and not options.allow_float_fallback:
        float_ops = float_op_names(model_bytes)
        if float_ops:
            raise ConversionError(
                f"int8 conversion is not integer-only: op(s) {', '.join(float_ops)} run in float; "
                "pass --allow-float-fallback to keep them in float"
            )
    return model_bytes


_OP_PATTERNS = (
    re.compile(r"'tfl\.([a-z_0-9]+)'"),
    re.compile(r"'tf\.([A-Za-z0-9_]+)'"),
    re.compile(r"op: ([A-Z][A-Z_0-9]+)"),
    re.compile(r"Quantization not yet supported for op: '?([A-Za-z_0-9.]+)"),
)


def explain_failure(exc: BaseException, options: ConversionOptions) -> str:
    """One line: what failed in the converter and what to try."""
    text = str(exc)
    mode = Mode(options.mode)
    ops: list[str] = []
    for pattern in _OP_PATTERNS:
        for match in pattern.findall(text):
            name = match.upper() if match.islower() else match
            if name not in ops:
                ops.append(name)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = next((line for line in lines if "error" in line.lower()), lines[0] if lines else type(exc).__name__)
    detail = re.sub(r"^.*?error: ", "", detail)[:300]
    if mode in (Mode.INT8, Mode.INT16X8) and not options.allow_float_fallback and ops:
        return (
            f"{mode.value} conversion failed: op(s) {', '.join(ops[:10])} cannot be quantized to {mode.value}; "
            "pass --allow-float-fallback to keep them in float"
        )
    if ops:
        return f"{mode.value} conversion failed at op(s) {', '.join(ops[:10])}: {detail}"
    return f"{mode.value} conversion failed: {detail}"


def float_op_names(model_bytes: bytes) -> list[str]:
    """Ops of a .tflite model that compute in float (the I/O QUANTIZE/DEQUANTIZE/CAST boundary excluded).

    Uses the same reading of the file as ``inspect`` (:mod:`tflite_opt.inspection`), so "integer-only" means
    one thing everywhere.
    """
    from tflite_opt.inspection import CONVERSION_OPS, analyze

    return [
        summary.op
        for summary in analyze(model_bytes)["ops"]
        if summary.op not in CONVERSION_OPS and any("float" in label for label in summary.dtypes)
    ]

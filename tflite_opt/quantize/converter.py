"""The TFLiteConverter backend: fp32, dynamic, float16, int8, int16x8 from a SavedModel.

Every model reaches the converter as a SavedModel (``LoadedModel.saved_model_dir``), so Keras 3, tf_keras and
SavedModel inputs share one path and the ``.tflite`` signature keeps the model's tensor names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from tflite_opt.errors import ConversionError, first_line
from tflite_opt.modes import IoType, Mode
from tflite_opt.progress import ensure
from tflite_opt.quantize.options import SPARSE_ENCODING_MODES, ConversionOptions, calibration_samples
from tflite_opt.verbosity import quiet_native

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.progress import Progress
    from tflite_opt.representative_data import Dataset


def make_converter(saved_model_dir: Path, signature_key: str):
    from tflite_opt.models import tf_runtime

    tf = tf_runtime.import_tensorflow()
    return tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[signature_key])


def configure(converter, options: ConversionOptions, representative: "Dataset | None", progress=None) -> None:
    """Set a converter's optimizations, types and calibration data for ``options``."""
    from tflite_opt.models import tf_runtime

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


def _representative_generator(representative: "Dataset", num_samples: int | None, progress):
    progress = ensure(progress)
    samples = calibration_samples(representative, num_samples, progress)

    def generate() -> Iterable[dict]:
        with progress.task("Calibrating", total=len(samples)) as task:
            for sample in samples.samples():
                yield sample
                task.advance()

    return generate


def convert_with_converter(
    saved_model_dir: Path,
    signature_key: str,
    options: ConversionOptions,
    representative: "Dataset | None" = None,
    progress: "Progress | None" = None,
) -> bytes:
    """Convert one signature of a SavedModel with TFLiteConverter; returns the ``.tflite`` bytes."""
    mode = Mode(options.mode)
    converter = make_converter(saved_model_dir, signature_key)
    configure(converter, options, representative, progress)
    try:
        with quiet_native():
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
    detail = first_line(re.sub(r"^.*?error: ", "", detail))
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

    Uses the same reading of the file as ``inspect`` (:mod:`tflite_opt.measure.inspection`), so "integer-only" means
    one thing everywhere.
    """
    from tflite_opt.measure.inspection import CONVERSION_OPS, analyze

    return [
        summary.op
        for summary in analyze(model_bytes)["ops"]
        if summary.op not in CONVERSION_OPS and any("float" in label for label in summary.dtypes)
    ]

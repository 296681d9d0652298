"""Per-layer int8 quantization error with TFLite's ``QuantizationDebugger``, worst layers first.

The debugger runs an instrumented int8 model in which every quantized op is followed by a ``NumericVerify`` op
that also runs the op in float *on the same (dequantized) input* and records the difference. Per layer we
report, as the TFLite debugger guide does:

* ``rmse_scale``: sqrt(mean squared error) / the output's quantization scale. Pure rounding to a uniform grid
  gives 1/sqrt(12) ≈ 0.29 (:data:`IDEAL_RMSE_SCALE`); the guide treats layers above 0.7
  (:data:`DEFAULT_THRESHOLD`) as badly quantized — typically weights with outliers that crush the other weights
  of their channel, or outputs clipped by a calibration range that does not cover the data.
* ``max_abs_error`` and ``mean_squared_error``: the debugger's ``max_abs_error`` / ``mean_squared_error``
  metrics, i.e. per-sample values averaged over the samples (the debugger aggregates every metric by its mean).

The verification is per layer: an error made by one layer does not show up again in the layers after it.
That is what makes the ranking point at the culprit — and also its blind spot: a layer whose activation range
is so wide that its small channels round to zero has ordinary RMSE/scale (the error is small *relative to its
huge scale*); look at ``scale`` for such layers.

Library code: no click, no printing; :func:`analyze` returns a :class:`DebugReport`.
"""

from __future__ import annotations

import csv
import io
import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tflite_opt.errors import ConversionError, DataError, first_line
from tflite_opt.reporting.tables import Note, TextTable
from tflite_opt.verbosity import quiet_native

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.models import LoadedModel
    from tflite_opt.progress import Progress
    from tflite_opt.quantize.attribution import Attribution
    from tflite_opt.quantize.selective import CalibratedModel, QuantizableOp
    from tflite_opt.representative_data import Dataset

IDEAL_RMSE_SCALE = 1.0 / math.sqrt(12.0)
DEFAULT_THRESHOLD = 0.7
FORMATS = ("table", "json", "csv")


@dataclass
class LayerError:
    """The quantization error of one quantized op (a "layer" in the debugger's words).

    Attributes:
        rank: 1 = worst.
        layer: the Keras layer the op belongs to (``None`` when it cannot be recovered from the tensor names).
        fused_layers: other layers fused into the same op (e.g. the BatchNorm and ReLU after a Conv2D).
        op_type: builtin op, e.g. ``CONV_2D``.
        tensor: the op's output tensor name (what ``--keep-float`` accepts as a tensor name).
        rmse_scale: sqrt(mean squared error) / output scale; ≈0.29 is pure rounding.
        max_abs_error: largest absolute error of a sample's output, averaged over samples.
        mean_squared_error: mean squared error, averaged over samples.
        scale: the output's quantization scale (its value range is about 255 × scale).
        zero_point: the output's zero point.
        num_elements: output elements per sample.
        above_threshold: ``rmse_scale`` exceeds the report's threshold.
        keep_float: the name to pass to ``--keep-float`` to keep this op in float.
    """

    rank: int
    layer: str | None
    fused_layers: tuple[str, ...]
    op_type: str
    tensor: str
    rmse_scale: float
    max_abs_error: float
    mean_squared_error: float
    scale: float
    zero_point: int
    num_elements: int
    above_threshold: bool
    keep_float: str

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "layer": self.layer,
            "fused_layers": list(self.fused_layers),
            "op": self.op_type,
            "tensor": self.tensor,
            "rmse_scale": _finite(self.rmse_scale),
            "max_abs_error": _finite(self.max_abs_error),
            "mean_squared_error": _finite(self.mean_squared_error),
            "scale": _finite(self.scale),
            "zero_point": self.zero_point,
            "num_elements": self.num_elements,
            "above_threshold": self.above_threshold,
            "keep_float": self.keep_float,
        }


@dataclass
class DebugReport:
    """Every quantized op of a model, worst RMSE/scale first.

    Attributes:
        model: what was analysed (its path).
        threshold: RMSE/scale above which a layer is flagged.
        num_samples: samples the debugger ran.
        layers: the ranking.
        attribution: the impact ranking on the final output (:mod:`tflite_opt.quantize.attribution`), when run.
    """

    model: str
    threshold: float
    num_samples: int
    layers: list[LayerError] = field(default_factory=list)
    attribution: "Attribution | None" = None

    @property
    def flagged(self) -> list[LayerError]:
        return [layer for layer in self.layers if layer.above_threshold]

    @property
    def keep_float_names(self) -> list[str]:
        """The ``--keep-float`` names to use: the set measured to recover the final output when the impact ranking
        found one, else every flagged layer (unique, worst first)."""
        if self.attribution is not None and self.attribution.recommended is not None:
            return list(self.attribution.recommended.keep_float)
        names: list[str] = []
        for layer in self.flagged:
            if layer.keep_float not in names:
                names.append(layer.keep_float)
        return names

    def keep_float_flags(self) -> str:
        """The flags as one shell-ready string, e.g. ``--keep-float dense2 --keep-float conv1``."""
        return " ".join(f"--keep-float {shlex.quote(name)}" for name in self.keep_float_names)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "threshold": self.threshold,
            "ideal_rmse_scale": IDEAL_RMSE_SCALE,
            "num_samples": self.num_samples,
            "layers": [layer.to_json_dict() for layer in self.layers],
            "keep_float": self.keep_float_names,
            "suggested_flags": self.keep_float_flags(),
            "attribution": self.attribution.to_json_dict() if self.attribution is not None else None,
        }


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def analyze(
    model: "LoadedModel",
    representative: "Dataset",
    *,
    threshold: float = DEFAULT_THRESHOLD,
    num_samples: int | None = None,
    calibrated: "CalibratedModel | None" = None,
    impact_top_k: int = 3,
    progress: "Progress | None" = None,
) -> DebugReport:
    """Run the quantization debugger on the model's int8 conversion and rank its layers.

    Args:
        model: the loaded source model.
        representative: calibration samples; the debugger runs the same samples.
        threshold: RMSE/scale above which a layer is flagged (the guide's 0.7).
        num_samples: samples to use (default: all, at most ``DEFAULT_CALIBRATION_SAMPLES``).
        calibrated: a calibration of this model to reuse (``auto`` calibrates once for every int8 trial).
        impact_top_k: candidates, by local error and by concentration, whose effect on the final output is measured
            (:func:`tflite_opt.quantize.attribution.attribute`); 0 skips the impact ranking.
        progress: progress reporter.

    Raises:
        ConversionError: calibration or quantization failed, or nothing in the model is quantized.
        DataError: the samples do not fit the model.
    """
    from tflite_opt.progress import ensure
    from tflite_opt.quantize import selective
    from tflite_opt.quantize.options import calibration_samples

    if threshold <= 0 or not math.isfinite(threshold):
        raise DataError(f"the RMSE/scale threshold must be a positive number, got {threshold}")
    progress = ensure(progress)
    if calibrated is None:
        calibrated = selective.calibrate(
            model.saved_model_dir, model.signature_key, representative, num_samples=num_samples, progress=progress
        )
    debug_model = selective.quantize_calibrated(calibrated, numeric_verify=True)
    samples = calibration_samples(representative, num_samples)
    input_order = _input_order(debug_model)
    missing = [name for name in input_order if name not in samples.inputs]
    if missing:
        raise DataError(f"{samples.source} has no samples for input(s) {', '.join(missing)}")

    rows = _debugger_rows(debug_model, samples, input_order, progress)
    layer_names = _keras_layer_names(model)
    layers = [_layer_error(row, calibrated, layer_names, threshold) for row in rows]
    layers.sort(key=lambda e: -e.rmse_scale if math.isfinite(e.rmse_scale) else math.inf)
    for rank, layer in enumerate(layers, start=1):
        layer.rank = rank
    report = DebugReport(model=str(model.path), threshold=threshold, num_samples=len(samples), layers=layers)
    if impact_top_k > 0:
        from tflite_opt.quantize.attribution import attribute

        with progress.task("Measuring each candidate's impact on the output"):
            report.attribution = attribute(
                calibrated,
                samples,
                layers,
                layer_names,
                keras_model=getattr(model, "keras_model", None),
                top_k=impact_top_k,
            )
    return report


def _debugger_rows(debug_model: bytes, samples: "Dataset", input_order: list[str], progress) -> list[dict[str, str]]:
    """Run ``QuantizationDebugger`` on the instrumented model; its per-layer statistics as CSV rows."""
    from tflite_opt.models import tf_runtime

    tf = tf_runtime.import_tensorflow()
    with progress.task("Measuring per-layer error", total=len(samples)) as task:

        def debug_dataset():
            for sample in samples.samples():
                yield [sample[name] for name in input_order]
                task.advance()

        try:
            with quiet_native():
                debugger = tf.lite.experimental.QuantizationDebugger(
                    quant_debug_model_content=debug_model, debug_dataset=debug_dataset
                )
                debugger.run()
                dump = io.StringIO()
                debugger.layer_statistics_dump(dump)
        except ValueError as exc:
            if "debug mode" in str(exc):
                raise ConversionError(
                    "nothing in this model is quantized to int8, so there is no per-layer error to measure"
                ) from exc
            raise ConversionError(f"the quantization debugger failed: {first_line(exc)}") from exc
        except RuntimeError as exc:
            raise ConversionError(f"the quantization debugger failed: {first_line(exc)}") from exc

    return list(csv.DictReader(io.StringIO(dump.getvalue())))


def _input_order(debug_model: bytes) -> list[str]:
    """Signature input names in the order of the interpreter's inputs (the debugger feeds a positional list)."""
    from tflite_opt.measure.runtime import interpreter_from_bytes

    interpreter = interpreter_from_bytes(debug_model, xnnpack=False, source="the debugger's model")
    signatures = interpreter.get_signature_list()
    details = interpreter.get_input_details()
    if not signatures:
        return [d["name"] for d in details]
    key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
    by_index = {d["index"]: name for name, d in interpreter.get_signature_runner(key).get_input_details().items()}
    return [by_index.get(d["index"], d["name"]) for d in details]


def _keras_layer_names(model: "LoadedModel") -> list[str]:
    keras_model = getattr(model, "keras_model", None)
    if keras_model is None:
        return []
    try:
        return [layer.name for layer in keras_model.layers]
    except (AttributeError, TypeError):
        return []


def _find_op(calibrated: "CalibratedModel", row: dict[str, str]) -> "QuantizableOp | None":
    name = row.get("tensor_name", "")
    candidates = [name]
    # The debug model renames the quantized copy of a tensor with a numeric suffix; the debugger strips one
    # digit, which is not enough past the ninth duplicate.
    stripped = name
    while stripped and stripped[-1].isdigit():
        stripped = stripped[:-1]
        candidates.append(stripped)
    for candidate in candidates:
        op = calibrated.op_for_tensor(candidate)
        if op is not None:
            return op
    return None


def _number(row: dict[str, str], key: str) -> float:
    try:
        return float(row.get(key, "nan"))
    except (TypeError, ValueError):
        return math.nan


def _layer_error(
    row: dict[str, str], calibrated: "CalibratedModel", layer_names: Sequence[str], threshold: float
) -> LayerError:
    op = _find_op(calibrated, row)
    scale = _number(row, "scale")
    mse = _number(row, "mean_squared_error")
    rmse_scale = math.sqrt(mse) / scale if scale > 0 and mse >= 0 else math.nan
    if op is not None:
        layer, fused = calibrated.layer_label(op, layer_names)
        tensor = op.tensor
        keep_float = layer if layer is not None else tensor
    else:
        layer, fused, tensor = None, (), row.get("tensor_name", "")
        keep_float = tensor
    zero_point = _number(row, "zero_point")
    elements = _number(row, "num_elements")
    return LayerError(
        rank=0,
        layer=layer,
        fused_layers=fused,
        op_type=row.get("op_name", "?"),
        tensor=tensor,
        rmse_scale=rmse_scale,
        max_abs_error=_number(row, "max_abs_error"),
        mean_squared_error=mse,
        scale=scale,
        zero_point=int(zero_point) if math.isfinite(zero_point) else 0,
        num_elements=int(elements) if math.isfinite(elements) else 0,
        above_threshold=math.isfinite(rmse_scale) and rmse_scale > threshold,
        keep_float=keep_float,
    )


# ---------------------------------------------------------------------------------------------------- renderers

CSV_COLUMNS = (
    "rank",
    "layer",
    "fused_layers",
    "op",
    "tensor",
    "rmse_scale",
    "max_abs_error",
    "mean_squared_error",
    "scale",
    "zero_point",
    "num_elements",
    "above_threshold",
    "keep_float",
)


def to_json(report: DebugReport) -> str:
    import json

    return json.dumps(report.to_json_dict(), indent=2) + "\n"


def to_csv(report: DebugReport) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for layer in report.layers:
        row = layer.to_json_dict()
        row["fused_layers"] = ";".join(row["fused_layers"])
        writer.writerow({key: "" if row[key] is None else row[key] for key in CSV_COLUMNS})
    return buffer.getvalue()


def short_tensor_name(tensor: str, width: int = 48) -> str:
    """The first of a fused op's ``;``-joined names, shortened from the left to ``width`` characters."""
    first = tensor.split(";")[0]
    more = "; …" if ";" in tensor else ""
    text = first + more
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def debug_table(report: DebugReport) -> TextTable:
    """The ranking, then the verdict and the flags to use."""
    rows = []
    for layer in report.layers:
        name = layer.layer or "—"
        if layer.fused_layers:
            name += f" (+{', '.join(layer.fused_layers)})"
        rows.append(
            (
                str(layer.rank),
                name,
                layer.op_type,
                _fmt(layer.rmse_scale, ".3f"),
                _fmt(layer.max_abs_error, ".4g"),
                _fmt(layer.mean_squared_error, ".3g"),
                _fmt(layer.scale, ".4g"),
                short_tensor_name(layer.tensor),
            )
        )
    notes = [
        Note(
            f"{report.num_samples} samples; RMSE/scale ≈ {IDEAL_RMSE_SCALE:.2f} is pure rounding, "
            f"above {report.threshold:g} is flagged.",
            "dim",
        )
    ]
    measured = report.attribution is not None and report.attribution.recommended is not None
    if report.flagged and measured:
        notes.append(
            Note(
                f"{len(report.flagged)} layer(s) above {report.threshold:g}; what to keep in float is "
                "measured on the final output below."
            )
        )
    elif report.flagged:
        notes.append(Note(f"{len(report.flagged)} layer(s) above {report.threshold:g}; keep them in float with:"))
        notes.append(Note(f"  {report.keep_float_flags()}", "bold"))
    else:
        notes.append(Note(f"No layer above {report.threshold:g}: int8 error is at rounding level everywhere."))
    return TextTable(
        headers=("#", "layer", "op", "RMSE/scale", "max abs err", "MSE", "scale", "tensor"),
        rows=rows,
        right=frozenset({0, 3, 4, 5, 6}),
        wrap=frozenset({7}),
        error_rows=frozenset(i for i, layer in enumerate(report.layers) if layer.above_threshold),
        notes=notes,
    )


def _fmt(value: float, spec: str) -> str:
    return "—" if value is None or not math.isfinite(value) else format(value, spec)

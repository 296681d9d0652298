"""Empirical bias correction (Nagel et al. 2019, §4.2; the empirical variant of AIMET): remove the mean output
shift that int8 weight quantization causes, measured on the calibration data, before conversion.

The converter stores every Conv2D, DepthwiseConv2D and Dense kernel as int8, symmetric per output channel
(scale = max |w| / 127, values in [-127, 127]; a BatchNorm after the layer is folded in first, which scales each
output channel and so rounds exactly the same values). Rounding is not zero-mean per channel once it meets the
data: ``E[(W_q - W) x] = ε`` shifts every output of the channel. :func:`quantize_kernel` reproduces the
converter's rounding (a test compares it with the weights in a converted file), and for each weight layer in graph
order we measure on the calibration samples

    ``ε_c = mean(layer_q(x_q))_c - mean(layer(x))_c``

where ``x`` is the layer's input in the float model, ``x_q`` its input in the model whose earlier layers already
carry quantized, corrected weights (so shifts that travel through the network are corrected where they arrive),
and both outputs are taken before the activation. ``ε`` is subtracted from the layer's bias — or, for a layer
without bias followed by a BatchNorm, added to the BatchNorm's ``moving_mean``. The returned model keeps float
weights with corrected biases; the converter then quantizes it as usual.

What this does not fix: activation quantization (only the weights' error is measured), and the variance of the
error. Whether it helps is measured, not assumed: see the README table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tflite_opt.errors import ConversionError, first_line
from tflite_opt.quantize.keras_graph import LayerGraph, layer_input, layer_kind, model_inputs, safe

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.progress import Progress
    from tflite_opt.representative_data import Dataset

WEIGHT_LAYERS = ("Conv2D", "DepthwiseConv2D", "Dense")
INT8_MAX = 127
BATCH = 64


@dataclass(frozen=True)
class BiasShift:
    """The correction applied to one layer.

    Attributes:
        layer: the weight layer.
        target: what was corrected: ``"bias"`` or ``"<batchnorm>.moving_mean"``.
        channels: output channels.
        max_abs_shift: the largest measured shift of a channel's mean output.
        relative_shift: ``max_abs_shift`` over the standard deviation of the layer's float output.
    """

    layer: str
    target: str
    channels: int
    max_abs_shift: float
    relative_shift: float

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "target": self.target,
            "channels": self.channels,
            "max_abs_shift": self.max_abs_shift,
            "relative_shift": self.relative_shift,
        }


@dataclass
class BiasCorrectionResult:
    """What :func:`apply_bias_correction` did.

    Attributes:
        model: the corrected Keras model (float weights, corrected biases; the input model is unchanged).
        corrected: one entry per corrected layer, in graph order.
        skipped: weight layers left alone, and why.
        num_samples: samples the shifts were measured on.
        seconds: wall time.
    """

    model: Any
    corrected: list[BiasShift] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    num_samples: int = 0
    seconds: float = 0.0

    @property
    def transforms(self) -> list[str]:
        """The report v2 ``transforms`` entries."""
        return ["bias_correction"] if self.corrected else []

    def summary(self) -> str:
        """One line for the user."""
        if not self.corrected:
            return "bias correction found no layer to correct (" + "; ".join(self.skipped[:3]) + ")"
        worst = max(self.corrected, key=lambda s: s.relative_shift)
        return (
            f"bias correction: {len(self.corrected)} layer(s) corrected on {self.num_samples} samples in "
            f"{self.seconds:.1f} s; largest shift {worst.max_abs_shift:.3g} in {worst.layer} "
            f"({worst.relative_shift:.1%} of its output's standard deviation)"
        )

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "corrected": [s.to_json_dict() for s in self.corrected],
            "skipped": list(self.skipped),
            "num_samples": self.num_samples,
            "seconds": self.seconds,
        }


def quantize_kernel(
    kernel: np.ndarray, depthwise: bool = False, per_tensor: bool = False, folded_scale: np.ndarray | None = None
) -> np.ndarray:
    """The kernel as the converter's int8 weights dequantize.

    Symmetric, rounded half away from zero, clamped to [-127, 127]; one scale per output channel (the last axis;
    for a DepthwiseConv2D kernel ``(h, w, C, m)`` each of the ``C × m`` channel-multiplier pairs), or one for the
    whole tensor. ``folded_scale`` is the per-output-channel factor of a BatchNorm the converter folds into the
    kernel before rounding (it only matters per tensor: per channel it cancels).
    """
    kernel = np.asarray(kernel)
    channels = kernel.shape[-2] * kernel.shape[-1] if depthwise else kernel.shape[-1]
    factor = np.ones(channels) if folded_scale is None else np.abs(np.asarray(folded_scale, dtype=np.float64))
    factor = np.where(factor > 0, factor, 1.0)
    columns = kernel.astype(np.float64).reshape(-1, channels) * factor
    largest = np.abs(columns).max() if per_tensor else np.abs(columns).max(axis=0)
    scale = np.where(largest > 0, largest / INT8_MAX, 1.0)
    q = np.clip(np.sign(columns) * np.floor(np.abs(columns) / scale + 0.5), -INT8_MAX, INT8_MAX)
    return (q * scale / factor).reshape(kernel.shape).astype(kernel.dtype)


def _folded_scale(graph: LayerGraph, layer: Any) -> np.ndarray | None:
    """gamma / sqrt(var + eps) of a BatchNorm right after a linear layer (the converter folds it into the kernel)."""
    if layer.get_config().get("activation", "linear") != "linear":
        return None
    follower, _ = graph.next_layer(layer)
    if follower is None or layer_kind(follower) != "BatchNormalization":
        return None
    weights = follower.get_weights()
    gamma = weights[0] if follower.get_config().get("scale", True) else 1.0
    epsilon = float(follower.get_config().get("epsilon", 1e-3))
    return gamma / np.sqrt(weights[-1].astype(np.float64) + epsilon)


class _Probe:
    """A layer's pre-activation output on given inputs: a twin of the layer with a linear activation."""

    def __init__(self, layer: Any) -> None:
        config = dict(layer.get_config())
        config["activation"] = "linear"
        config["name"] = f"{layer.name}_bias_probe"
        self.twin = layer.__class__.from_config(config)
        self.built = False

    def channel_means(self, weights: list[np.ndarray], inputs: np.ndarray) -> tuple[np.ndarray, float]:
        """Mean of every output channel over samples and positions, and the standard deviation of the output."""
        if not self.built:
            self.twin(inputs[:1])
            self.built = True
        self.twin.set_weights(weights)
        total = 0.0
        squares = 0.0
        rows = 0
        for start in range(0, len(inputs), BATCH):
            out = np.asarray(self.twin(inputs[start : start + BATCH]), dtype=np.float64)
            flat = out.reshape(-1, out.shape[-1])
            total = total + flat.sum(axis=0)
            squares += float(np.sum(flat * flat))
            rows += flat.shape[0]
        mean = np.asarray(total) / max(rows, 1)
        second_moment = squares / max(rows * mean.size, 1)
        return mean, float(np.sqrt(max(second_moment - float(np.mean(mean)) ** 2, 0.0)))


def _correction_target(graph: LayerGraph, layer: Any) -> tuple[str, Any] | None:
    """Where a layer's shift goes: its bias, or the moving mean of the BatchNorm right after it."""
    if layer.get_config().get("use_bias", True):
        return "bias", layer
    follower, _ = graph.next_layer(layer)
    if follower is not None and layer_kind(follower) == "BatchNormalization":
        return f"{follower.name}.moving_mean", follower
    return None


def _measure_shift(
    layer: Any, float_model: Any, quantized_model: Any, inputs: Any, rounding: dict
) -> tuple[np.ndarray, float]:
    """``mean(layer_q(x_q)) - mean(layer(x))`` per output channel, and the float output's standard deviation."""
    weights = layer.get_weights()
    quantized = [quantize_kernel(weights[0], **rounding), *weights[1:]]
    probe = _Probe(layer)
    mean_float, std = probe.channel_means(weights, layer_input(float_model, layer.name, inputs))
    mean_quantized, _ = probe.channel_means(quantized, layer_input(quantized_model, layer.name, inputs))
    return mean_quantized - mean_float, std


def _correct(model: Any, layer_name: str, target: str, shift: np.ndarray, rounding: dict | None) -> None:
    """Subtract ``shift`` from the layer's bias (or add it to the BatchNorm's moving mean); with ``rounding``, also
    round the layer's kernel as the converter will."""
    layer = model.get_layer(layer_name)
    weights = layer.get_weights()
    if rounding is not None:
        weights[0] = quantize_kernel(weights[0], **rounding)
    if target == "bias":
        weights[1] = (weights[1] - shift).astype(weights[1].dtype)
    layer.set_weights(weights)
    if target != "bias":
        bn = model.get_layer(target.split(".")[0])
        bn_weights = bn.get_weights()
        mean_index = len(bn_weights) - 2  # [gamma?, beta?, moving_mean, moving_variance]
        bn_weights[mean_index] = (bn_weights[mean_index] + shift).astype(bn_weights[mean_index].dtype)
        bn.set_weights(bn_weights)


def apply_bias_correction(
    keras_model: Any,
    calibration: "Dataset",
    *,
    num_samples: int | None = None,
    per_tensor: bool = False,
    progress: "Progress | None" = None,
) -> BiasCorrectionResult:
    """Empirical bias correction of every Conv2D/DepthwiseConv2D/Dense layer (module docstring).

    Args:
        keras_model: a Functional or Sequential Keras 3 or tf_keras model (e.g. an equalized one); not modified.
        calibration: samples keyed by input name (the ``--representative-data``).
        num_samples: samples to measure on (default: all, at most ``DEFAULT_CALIBRATION_SAMPLES``).
        per_tensor: the weights will be quantized with one scale per tensor (``--granularity tensor``).
        progress: progress reporter.

    Raises:
        ConversionError: the model is not a layer graph or cannot be cloned.
        DataError: the calibration data lacks an input.
    """
    from tflite_opt.progress import ensure
    from tflite_opt.quantize.keras_graph import clone
    from tflite_opt.quantize.options import calibration_samples

    progress = ensure(progress)
    started = time.perf_counter()
    graph = LayerGraph(keras_model)
    samples = calibration_samples(calibration, num_samples)
    inputs = model_inputs(keras_model, samples)
    corrected, quantized = clone(keras_model), clone(keras_model)
    result = BiasCorrectionResult(model=corrected, num_samples=len(samples))
    targets = [layer for layer in graph.layers if layer_kind(layer) in WEIGHT_LAYERS]
    with progress.task("Correcting biases", total=len(targets)) as task:
        for layer in targets:
            task.advance()
            target = _correction_target(graph, layer)
            if target is None or safe(layer, "input") is None:
                result.skipped.append(f"{layer.name}: no bias and no BatchNorm after it")
                continue
            rounding = {
                "depthwise": layer_kind(layer) == "DepthwiseConv2D",
                "per_tensor": per_tensor,
                "folded_scale": _folded_scale(graph, layer),
            }
            try:
                shift, std = _measure_shift(layer, keras_model, quantized, inputs, rounding)
            except (ValueError, TypeError) as exc:
                raise ConversionError(f"bias correction failed at {layer.name}: {first_line(exc)}") from exc
            _correct(corrected, layer.name, target[0], shift, None)
            _correct(quantized, layer.name, target[0], shift, rounding)
            biggest = float(np.max(np.abs(shift))) if shift.size else 0.0
            result.corrected.append(
                BiasShift(layer.name, target[0], int(shift.size), biggest, biggest / std if std > 0 else 0.0)
            )
    result.seconds = time.perf_counter() - started
    return result

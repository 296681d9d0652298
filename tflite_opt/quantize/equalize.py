"""Cross-layer equalization (Nagel, van Baalen, Blankevoort, Welling 2019, "Data-Free Quantization Through Weight
Equalization and Bias Correction") on a Keras 3 or tf_keras model, before conversion.

A *chain* is ``layer1 → [BatchNorm] → [ReLU / linear] → [pooling, padding, flatten, reshape, dropout] → layer2``
with ``layer1`` and ``layer2`` each a Conv2D, DepthwiseConv2D or Dense, every tensor on the way consumed by the
next layer only and none of them a model output. Every op between the two commutes with a positive per-channel
scale ``s``: ``relu(x / s) = relu(x) / s``, ``max``/``avg`` pooling and zero padding act per channel, and a flatten or
reshape keeps channel ``c`` at every last-axis index ``i`` with ``i % C == c`` as long as the last axis stays a
multiple of the channel count ``C``. So dividing layer1's output channel ``c`` by ``s_c`` (its kernel slice and
bias; a BatchNorm on the way gets ``moving_mean`` and ``beta`` divided too) and multiplying layer2's matching input
weights by ``s_c`` leaves the float function unchanged. DFQ picks ``s_c = sqrt(r1_c / r2_c)``, where ``r1_c`` is the
largest absolute weight of layer1's output channel (BatchNorm folded in, as the converter folds it) and ``r2_c``
that of layer2's input channel: both become ``sqrt(r1_c · r2_c)``, so a channel that one layer scaled up and the
next scaled down (an outlier channel whose range crushes its tensor's other channels in int8) is scaled back.
Chains that share a layer (conv → depthwise → conv) are equalized in turn until the scales settle.

Activations that are not positive-homogeneous end a chain. ReLU6 (``ReLU(max_value=6)``, ``Activation("relu6")``)
is handled two ways (``relu6=``):

* ``"keep"`` (default): it ends the chain — exact for every input.
* ``"unclipped"``: DFQ replaces ReLU6 by ReLU; here only those separate ReLU6 layers whose input never reaches the
  clip value on the calibration data are replaced (measured), so the float function is unchanged on that data; a
  ReLU6 that clips stays and ends its chain. Inputs beyond the calibration range may then differ.

Either way the result is checked: the new model's outputs on the calibration samples must be within
:data:`TOLERANCE` of the output range of the original's, else ``ConversionError``.

Library code: no printing; :func:`equalize_model` returns an :class:`EqualizeResult`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tflite_opt.errors import ConversionError, first_line
from tflite_opt.quantize.equalize_chains import (
    EqualizedPair,
    activation_kind,
    equalize_chains,
    find_chains,
)
from tflite_opt.quantize.keras_graph import (
    LayerGraph,
    clone,
    keras_module,
    layer_kind,
    model_inputs,
    predict,
    safe,
)

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.progress import Progress
    from tflite_opt.representative_data import Dataset

__all__ = ["EqualizeResult", "EqualizedPair", "equalize_model", "find_chains", "save_keras_model"]

TOLERANCE = 1e-4
RELU6_MODES = ("keep", "unclipped")


@dataclass
class EqualizeResult:
    """What :func:`equalize_model` did.

    Attributes:
        model: the equalized Keras model (a new model; the input model is unchanged).
        pairs: the equalized chains, in graph order.
        skipped: why other weight layers start no chain (``"conv2: its output feeds 2 layers"``).
        relu6_replaced: ReLU6 layers replaced by ReLU (``relu6="unclipped"`` only).
        iterations: passes over the chains until the scales settled.
        max_abs_diff: largest absolute difference of any output on the check samples.
        output_range: max - min of the original outputs on those samples.
        num_samples: check samples.
        seconds: wall time of the equalization and the check.
    """

    model: Any
    pairs: list[EqualizedPair] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    relu6_replaced: list[str] = field(default_factory=list)
    iterations: int = 0
    max_abs_diff: float = 0.0
    output_range: float = 0.0
    num_samples: int = 0
    seconds: float = 0.0

    @property
    def relative_diff(self) -> float:
        """``max_abs_diff`` as a share of the output range (the check's quantity)."""
        return self.max_abs_diff / self.output_range if self.output_range > 0 else 0.0

    @property
    def transforms(self) -> list[str]:
        """The report v2 ``transforms`` entries (empty when nothing was equalized)."""
        return ["equalize"] if self.pairs else []

    def summary(self) -> str:
        """One line for the user."""
        if not self.pairs:
            return "equalization found no chain to rescale (" + ("; ".join(self.skipped[:3]) or "no layers") + ")"
        names = ", ".join(f"{p.producer}→{p.consumer}" for p in self.pairs[:4])
        more = f" and {len(self.pairs) - 4} more" if len(self.pairs) > 4 else ""
        return (
            f"equalized {len(self.pairs)} chain(s) ({names}{more}) in {self.seconds:.1f} s; float outputs changed "
            f"by at most {self.max_abs_diff:.2e} ({self.relative_diff:.1e} of their range) on {self.num_samples} "
            "samples"
        )

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "pairs": [pair.to_json_dict() for pair in self.pairs],
            "skipped": list(self.skipped),
            "relu6_replaced": list(self.relu6_replaced),
            "iterations": self.iterations,
            "max_abs_diff": self.max_abs_diff,
            "output_range": self.output_range,
            "relative_diff": self.relative_diff,
            "num_samples": self.num_samples,
            "seconds": self.seconds,
        }


# -------------------------------------------------------------------------------------------- the procedure


def _relu6_layers(model: Any) -> list[tuple[Any, float]]:
    found = []
    for layer in model.layers:
        if layer_kind(layer) in ("ReLU", "Activation") and activation_kind(layer) == "relu6":
            config = layer.get_config()
            clip = float(np.asarray(config.get("max_value", 6.0) if layer_kind(layer) == "ReLU" else 6.0))
            found.append((layer, clip))
    return found


def unclipped_relu6(model: Any, inputs: Any) -> list[str]:
    """ReLU6 layers whose input stays at or below the clip value on every sample (measured)."""
    keras = keras_module(model)
    candidates = [(layer, clip) for layer, clip in _relu6_layers(model) if safe(layer, "input") is not None]
    if not candidates:
        return []
    probe = keras.Model(model.input, [layer.input for layer, _ in candidates])
    values = predict(probe, inputs)
    return [layer.name for (layer, clip), value in zip(candidates, values) if float(np.max(value)) <= clip]


def _clone(model: Any, relu6_to_relu: Sequence[str]) -> Any:
    replace = set(relu6_to_relu)

    def clone_layer(layer):
        config = layer.get_config()
        if layer.name in replace:
            if layer_kind(layer) == "ReLU":
                config["max_value"] = None
            else:
                config["activation"] = "relu"
        return layer.__class__.from_config(config)

    return clone(model, clone_layer)


def equalize_model(
    keras_model: Any,
    calibration: "Dataset",
    *,
    num_samples: int | None = None,
    relu6: str = "keep",
    tolerance: float = TOLERANCE,
    progress: "Progress | None" = None,
) -> EqualizeResult:
    """Cross-layer equalization of every chain of ``keras_model`` (module docstring), checked on ``calibration``.

    Args:
        keras_model: a Functional or Sequential Keras 3 or tf_keras model; it is not modified.
        calibration: samples keyed by input name (the ``--representative-data``).
        num_samples: check samples (default: all, at most ``DEFAULT_CALIBRATION_SAMPLES``).
        relu6: ``"keep"`` (ReLU6 ends a chain) or ``"unclipped"`` (ReLU6 layers that never clip on the
            calibration data become ReLU and chains go through them).
        tolerance: largest allowed output change, as a share of the output range.
        progress: progress reporter.

    Raises:
        ConversionError: the model is not a layer graph, or equalization changed the float outputs.
        DataError: the calibration data lacks an input.
    """
    from tflite_opt.progress import ensure
    from tflite_opt.quantize.options import calibration_samples

    if relu6 not in RELU6_MODES:
        raise ConversionError(f"relu6 handling must be one of {', '.join(RELU6_MODES)}, got {relu6!r}")
    progress = ensure(progress)
    started = time.perf_counter()
    LayerGraph(keras_model)  # refuses subclassed models before any work
    samples = calibration_samples(calibration, num_samples)
    inputs = model_inputs(keras_model, samples)
    with progress.task("Equalizing (cross-layer)"):
        reference = predict(keras_model, inputs)
        replaced = unclipped_relu6(keras_model, inputs) if relu6 == "unclipped" else []
        model = _clone(keras_model, replaced)
        chains, skipped = find_chains(model)
        pairs, iterations = equalize_chains(chains)
        outputs = predict(model, inputs)
    diff = max((float(np.max(np.abs(a - b))) for a, b in zip(reference, outputs)), default=0.0)
    low = min(float(np.min(r)) for r in reference)
    high = max(float(np.max(r)) for r in reference)
    result = EqualizeResult(
        model=model,
        pairs=pairs,
        skipped=skipped,
        relu6_replaced=list(replaced),
        iterations=iterations,
        max_abs_diff=diff,
        output_range=high - low,
        num_samples=len(samples),
        seconds=time.perf_counter() - started,
    )
    if not math.isfinite(diff) or diff > tolerance * max(result.output_range, 1e-12):
        raise ConversionError(
            f"cross-layer equalization changed the float outputs by {diff:.3g} ({result.relative_diff:.2g} of their "
            f"range, tolerance {tolerance:g}); convert without --equalize"
        )
    return result


def save_keras_model(model: Any, path: str) -> None:
    """Save a (equalized) Keras model atomically; Keras picks the format from the suffix (``.keras``/``.h5``)."""
    from tflite_opt.fileio import atomic_save

    try:
        atomic_save(path, model.save)
    except (ValueError, OSError) as exc:
        raise ConversionError(f"cannot save the equalized model to {path}: {first_line(exc)}") from exc

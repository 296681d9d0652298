"""Layer selection and per-layer weight statistics shared by pruning, clustering and QAT."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tflite_opt.errors import TrainingError, first_line

# The weights each technique works on, by tf_keras layer class name (the ones tfmot's registries prune/cluster).
KERNEL_ATTRIBUTES = {
    "Conv1D": ("kernel",),
    "Conv2D": ("kernel",),
    "Conv3D": ("kernel",),
    "Conv1DTranspose": ("kernel",),
    "Conv2DTranspose": ("kernel",),
    "Conv3DTranspose": ("kernel",),
    "DepthwiseConv2D": ("depthwise_kernel",),
    "SeparableConv1D": ("pointwise_kernel",),
    "SeparableConv2D": ("pointwise_kernel",),
    "Dense": ("kernel",),
    "Embedding": ("embeddings",),
}


@dataclass
class LayerWeights:
    """One weight tensor of one layer, and what a technique did to it.

    Attributes:
        layer: the layer name (``outer/inner`` inside nested models).
        layer_type: the layer class, e.g. ``Conv2D``.
        weight: the weight attribute, e.g. ``kernel``.
        shape: the weight's shape.
        size: number of values.
        zeros: values that are exactly 0.
        unique_values: distinct values.
        optimized: whether the technique was applied to this layer (False: skipped or not supported).
    """

    layer: str
    layer_type: str
    weight: str
    shape: tuple[int, ...]
    size: int
    zeros: int
    unique_values: int
    optimized: bool

    @property
    def sparsity(self) -> float:
        return self.zeros / self.size if self.size else 0.0


def iter_layers(model: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(qualified name, layer) for every layer, descending into nested models and tfmot wrappers."""
    for qualified, layer, _ in _walk(model, prefix):
        yield qualified, layer


def _walk(model: Any, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(qualified name, layer, the tfmot wrapper around it or the layer itself)."""
    for outer in model.layers:
        layer = outer
        while _is_tfmot_wrapper(layer):
            layer = layer.layer
        if hasattr(layer, "layers") and hasattr(layer, "get_layer"):
            yield from _walk(layer, prefix=f"{prefix}{layer.name}/")
        else:
            yield f"{prefix}{layer.name}", layer, outer


def _is_tfmot_wrapper(layer: Any) -> bool:
    return type(layer).__module__.startswith("tensorflow_model_optimization") and hasattr(layer, "layer")


def check_layer_names(model: Any, names: Sequence[str], flag: str = "--skip-layer") -> None:
    """Every name in ``names`` must be a layer of ``model`` (plain or qualified)."""
    known = {qualified for qualified, _ in iter_layers(model)} | {layer.name for _, layer in iter_layers(model)}
    unknown = [name for name in names if name not in known]
    if unknown:
        listing = ", ".join(sorted(layer.name for _, layer in iter_layers(model)))
        raise TrainingError(f"{flag} {', '.join(unknown)}: no such layer; the model's layers are {listing}")


def weight_stats(model: Any, optimized: set[str] | None = None) -> list[LayerWeights]:
    """Zero and unique-value counts of every kernel-like weight (the ones pruning/clustering touch)."""
    rows = []
    for qualified, layer, owner in _walk(model):
        for attribute in KERNEL_ATTRIBUTES.get(type(layer).__name__, ()):
            values = _weight_values(layer, attribute, owner)
            if values is None:
                continue
            rows.append(
                LayerWeights(
                    layer=qualified,
                    layer_type=type(layer).__name__,
                    weight=attribute,
                    shape=tuple(values.shape),
                    size=int(values.size),
                    zeros=int(np.count_nonzero(values == 0)),
                    unique_values=int(np.unique(values).size),
                    optimized=optimized is not None and (qualified in optimized or layer.name in optimized),
                )
            )
    return rows


def _weight_values(layer: Any, attribute: str, owner: Any) -> np.ndarray | None:
    """A weight's values; inside a QAT wrapper the attribute is a fake-quant tensor, so read the variable."""
    variable = getattr(layer, attribute, None)
    if variable is None:
        return None
    if not hasattr(variable, "assign"):
        prefix = f"{layer.name}/{attribute}"
        matches = [w for w in owner.weights if w.name.split(":")[0].endswith(prefix)]
        if len(matches) != 1:
            return None
        variable = matches[0]
    return np.asarray(variable.numpy())


def clone_wrapping(model: Any, wrap_layer: Callable[[Any], Any | None]) -> Any:
    """``tf_keras.models.clone_model`` where ``wrap_layer(layer)`` returns a wrapper or ``None`` (keep as is).

    Kept layers are reused, not re-created, so they keep their weights (as tfmot's own whole-model wrappers do);
    nested Sequential/Functional models are descended into.
    """
    import tf_keras

    def clone_function(layer):
        if isinstance(layer, tf_keras.Model):
            return tf_keras.models.clone_model(layer, clone_function=clone_function)
        wrapped = wrap_layer(layer)
        return layer if wrapped is None else wrapped

    try:
        return tf_keras.models.clone_model(model, clone_function=clone_function)
    except TrainingError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise TrainingError(f"cannot wrap model '{model.name}' for tfmot: {first_line(exc)}") from exc


def input_axis_size(layer: Any, weight: str = "kernel") -> int | None:
    """Input-channel count of a Conv/Dense kernel (the axis 2:4 structured sparsity groups along)."""
    variable = getattr(layer, weight, None)
    if variable is None:
        return None
    shape = tuple(variable.shape)
    return int(shape[-2]) if len(shape) >= 2 else None

"""Directions in weight space for the loss landscape (Li, Xu, Taylor, Studer, Goldstein 2018).

The weights that move are a Keras model's trainable weights. A direction is one array per weight. Random
directions are **filter-normalized**: a Gaussian direction whose every filter is rescaled to the norm of the same
filter of the weights, so that a step of 1 changes each filter by as much as the filter itself, whatever the
scale a layer happens to have (ReLU and BatchNorm make networks scale-invariant, which is what fools plots
of unnormalized directions). Biases and BatchNorm parameters (every weight of rank < 2) get a zero direction,
as in the paper.

A *filter* is one output unit of a kernel: the last axis of Conv/Dense kernels, the second last of transposed
convolutions (their kernels are ``(..., out, in)``), the last two of depthwise kernels (``(..., in, multiplier)``,
each input channel times each multiplier is one filter).

NumPy only; the Keras variables are read once with ``.numpy()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_TINY = 1e-12


@dataclass
class Parameter:
    """One trainable weight of the model, with its float value.

    Attributes:
        label: ``layer/weight`` (e.g. ``conv1/kernel``), unique within the model.
        layer: the owning layer's name.
        layer_class: the owning layer's class name (``Conv2D``, ``Dense``, ...).
        variable: the Keras (3 or tf_keras) variable, assigned to while the landscape is evaluated.
        value: the float weights (float32 copy, read before anything moved).
        filter_axes: the axes of ``value`` that index filters (kept when filter norms are taken).
    """

    label: str
    layer: str
    layer_class: str
    variable: Any
    value: np.ndarray
    filter_axes: tuple[int, ...]

    @property
    def is_kernel(self) -> bool:
        """Kernels (rank >= 2) get directions; biases and BatchNorm parameters stay put."""
        return self.value.ndim >= 2

    @property
    def reduce_axes(self) -> tuple[int, ...]:
        """The axes a filter spans (everything but the filter axes)."""
        return tuple(axis for axis in range(self.value.ndim) if axis not in self.filter_axes)


def _leaf_layers(model) -> list:
    """Every layer that holds weights itself, looking inside nested models (Sequential/Functional in a model)."""
    found = []
    for layer in getattr(model, "layers", []):
        if hasattr(layer, "layers") and getattr(layer, "layers", None):
            found.extend(_leaf_layers(layer))
        else:
            found.append(layer)
    return found


def _weight_name(weight) -> str:
    name = getattr(weight, "path", None) or weight.name
    name = name.split(":")[0]
    return name.rsplit("/", 1)[-1]


def filter_axes(layer_class: str, weight_name: str, rank: int) -> tuple[int, ...]:
    """The axes that index filters for a weight of ``rank`` in a layer of class ``layer_class``."""
    if rank < 2:
        return tuple(range(rank))
    if "Depthwise" in layer_class or weight_name == "depthwise_kernel":
        return (rank - 2, rank - 1)
    if layer_class.endswith("Transpose"):
        return (rank - 2,)
    return (rank - 1,)


def model_parameters(keras_model) -> list[Parameter]:
    """The trainable float weights of a Keras 3 or tf_keras model, in layer order (shared weights once)."""
    parameters: list[Parameter] = []
    seen: set[int] = set()
    labels: set[str] = set()
    for layer in _leaf_layers(keras_model):
        for weight in layer.trainable_weights:
            if id(weight) in seen:
                continue
            seen.add(id(weight))
            value = np.asarray(weight.numpy())
            if not np.issubdtype(value.dtype, np.floating):
                continue
            name = _weight_name(weight)
            label = f"{layer.name}/{name}"
            counter = 2
            while label in labels:
                label = f"{layer.name}/{name}#{counter}"
                counter += 1
            labels.add(label)
            layer_class = type(layer).__name__
            parameters.append(
                Parameter(
                    label=label,
                    layer=layer.name,
                    layer_class=layer_class,
                    variable=weight,
                    value=value.astype(np.float32),
                    filter_axes=filter_axes(layer_class, name, value.ndim),
                )
            )
    return parameters


def filter_norms(array: np.ndarray, parameter: Parameter) -> np.ndarray:
    """The L2 norm of each filter of ``array`` (shaped like ``parameter.value``), kept broadcastable."""
    squares = np.square(array.astype(np.float64))
    return np.sqrt(squares.sum(axis=parameter.reduce_axes, keepdims=True))


def random_direction(parameters: Sequence[Parameter], rng: np.random.Generator) -> list[np.ndarray]:
    """A filter-normalized Gaussian direction: each filter scaled to the norm of the weights' filter.

    Kernels only; biases and BatchNorm parameters get zeros. A filter whose weights are all zero (a pruned unit)
    gets zeros too.
    """
    direction = []
    for parameter in parameters:
        if not parameter.is_kernel:
            direction.append(np.zeros_like(parameter.value))
            continue
        gaussian = rng.standard_normal(parameter.value.shape)
        scale = filter_norms(parameter.value, parameter) / np.maximum(filter_norms(gaussian, parameter), _TINY)
        direction.append((gaussian * scale).astype(np.float32))
    return direction


def filter_normalized_distance(parameters: Sequence[Parameter], direction: Sequence[np.ndarray]) -> float:
    """How long ``direction`` is in the units of a filter-normalized direction: the root mean square, over all
    kernel filters, of ``|d_filter| / |w_filter|`` (filters with zero weights are left out).

    A filter-normalized random direction has length 1; a quantization error of 1% per filter has length 0.01.
    """
    ratios = []
    for parameter, step in zip(parameters, direction):
        if not parameter.is_kernel:
            continue
        weights = filter_norms(parameter.value, parameter).ravel()
        moved = filter_norms(step, parameter).ravel()
        keep = weights > _TINY
        ratios.append(moved[keep] / weights[keep])
    if not ratios:
        return 0.0
    values = np.concatenate(ratios)
    return float(np.sqrt(np.mean(np.square(values)))) if values.size else 0.0


def combine(directions: Sequence[Sequence[np.ndarray]], coefficients: Sequence[float]) -> list[np.ndarray]:
    """``sum_k coefficients[k] * directions[k]``, weight by weight (float32)."""
    total = [np.zeros_like(array) for array in directions[0]]
    for direction, coefficient in zip(directions, coefficients):
        if coefficient == 0:
            continue
        for index, array in enumerate(direction):
            total[index] += np.float32(coefficient) * array
    return total

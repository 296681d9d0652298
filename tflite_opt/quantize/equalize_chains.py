"""The chains of cross-layer equalization and the weight arithmetic on them (see :mod:`tflite_opt.quantize.equalize`).

A chain is ``layer1 → [BatchNorm] → [ReLU / linear] → [pooling, padding, flatten, reshape, dropout] → layer2``;
:func:`find_chains` finds them through public Keras API, :func:`equalize_chains` rescales them in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tflite_opt.quantize.keras_graph import LayerGraph, last_dim, layer_kind, safe

MAX_ITERATIONS = 20
SETTLED = 1e-3  # largest |log s| of a pass below which the scales have settled
WEIGHT_LAYERS = ("Conv2D", "DepthwiseConv2D", "Dense")
# Layers that act per channel on the last axis and commute with a positive scale.
PER_CHANNEL = frozenset(
    {
        "MaxPooling2D",
        "AveragePooling2D",
        "GlobalAveragePooling2D",
        "GlobalMaxPooling2D",
        "ZeroPadding2D",
        "Cropping2D",
        "UpSampling2D",
        "Dropout",
        "SpatialDropout2D",
    }
)
RESHAPING = frozenset({"Flatten", "Reshape"})


@dataclass(frozen=True)
class EqualizedPair:
    """One equalized chain.

    Attributes:
        producer: layer1 (its output channels were divided by the scales).
        consumer: layer2 (its matching input weights were multiplied by them).
        through: the layers between them, in order.
        channels: channels rescaled.
        largest_scale: the largest factor applied to one channel, ``max(s, 1/s)`` over the channels.
        imbalance_before: max over channels of ``r1_c / r2_c`` divided by its min, before (1 = balanced).
        imbalance_after: the same after equalization.
    """

    producer: str
    consumer: str
    through: tuple[str, ...]
    channels: int
    largest_scale: float
    imbalance_before: float
    imbalance_after: float

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "producer": self.producer,
            "consumer": self.consumer,
            "through": list(self.through),
            "channels": self.channels,
            "largest_scale": self.largest_scale,
            "imbalance_before": self.imbalance_before,
            "imbalance_after": self.imbalance_after,
        }


@dataclass
class Chain:
    """layer1 → ... → layer2, as found in a model (see the module docstring).

    Attributes:
        producer: layer1.
        through: the layers between, in order.
        consumer: layer2.
        channels: layer1's output channels ``C``.
        folded_bn: a BatchNormalization right after a linear layer1 (the converter folds it into layer1).
    """

    producer: Any
    through: list[Any]
    consumer: Any
    channels: int
    folded_bn: Any = None

    @property
    def batch_norms(self) -> list[Any]:
        return [layer for layer in self.through if layer_kind(layer) == "BatchNormalization"]


# ------------------------------------------------------------------------------------------------- the chains


def activation_kind(layer: Any) -> str:
    """``"homogeneous"``, ``"relu6"`` (a clipped ReLU that may be replaced) or the name of what ends a chain."""
    config = layer.get_config()
    kind = layer_kind(layer)
    if kind in ("LeakyReLU", "PReLU"):
        return "homogeneous"
    if kind == "ReLU":
        if float(np.asarray(config.get("threshold", 0.0) or 0.0)) != 0.0:
            return "ReLU with a threshold"
        max_value = config.get("max_value")
        return "homogeneous" if max_value is None else "relu6"
    name = config.get("activation", "linear")
    name = name if isinstance(name, str) else str((name or {}).get("config", name))
    if name in ("linear", "relu", "leaky_relu", None):
        return "homogeneous"
    return "relu6" if name == "relu6" else f"activation {name}"


def _channels_last(layer: Any) -> bool:
    return layer.get_config().get("data_format", "channels_last") in ("channels_last", None)


def _producer_ok(layer: Any) -> str:
    kind = layer_kind(layer)
    if kind not in WEIGHT_LAYERS:
        return "not a weight layer"
    if not _channels_last(layer) or layer.get_config().get("groups", 1) not in (1, None):
        return f"{layer.name}: channels-first or grouped"
    activation = activation_kind(layer)
    if activation != "homogeneous":
        return f"{layer.name}: fused {'ReLU6' if activation == 'relu6' else activation} (not positive-homogeneous)"
    return ""


def _bn_ok(layer: Any) -> bool:
    axis = layer.get_config().get("axis", -1)
    axes = [int(a) for a in (axis if isinstance(axis, (list, tuple)) else [axis])]
    rank = len(getattr(safe(layer, "input"), "shape", ()) or ())
    return len(axes) == 1 and axes[0] in (-1, rank - 1)


def find_chains(model: Any, replaceable_relu6: Sequence[str] = ()) -> tuple[list[Chain], list[str]]:
    """Every chain of ``model`` (module docstring), and why the other weight layers start none.

    Args:
        model: a Functional or Sequential Keras 3 / tf_keras model.
        replaceable_relu6: ReLU6 layers to treat as ReLU (those found never to clip).
    """
    graph = LayerGraph(model)
    chains: list[Chain] = []
    skipped: list[str] = []
    for layer in graph.layers:
        if layer_kind(layer) not in WEIGHT_LAYERS:
            continue
        reason = _producer_ok(layer)
        chain = None if reason else _walk(graph, layer, set(replaceable_relu6))
        if isinstance(chain, Chain):
            chains.append(chain)
        else:
            skipped.append(reason or chain)
    return chains, skipped


def _walk(graph: LayerGraph, producer: Any, replaceable_relu6: set[str]) -> Chain | str:
    channels = last_dim(safe(producer, "output"))
    if channels is None:
        return f"{producer.name}: its output has no known channel count"
    through: list[Any] = []
    current = producer
    while True:
        follower, why = graph.next_layer(current)
        if follower is None:
            return f"{producer.name}: " + why.replace(f"{producer.name}'s output", "its output")
        kind = layer_kind(follower)
        if kind in WEIGHT_LAYERS:
            width = last_dim(safe(follower, "input"))
            if width is None or width % channels or not _channels_last(follower):
                return f"{producer.name}: {follower.name} does not keep the channels traceable"
            if follower.get_config().get("groups", 1) not in (1, None):
                return f"{producer.name}: {follower.name} is a grouped convolution"
            linear = producer.get_config().get("activation", "linear") == "linear"
            first_bn = bool(through) and layer_kind(through[0]) == "BatchNormalization"
            folded = through[0] if linear and first_bn else None
            return Chain(producer, through, follower, channels, folded)
        if kind == "BatchNormalization":
            if not _bn_ok(follower):
                return f"{producer.name}: {follower.name} normalizes another axis than the channels"
        elif kind in ("ReLU", "LeakyReLU", "PReLU", "Activation"):
            activation = activation_kind(follower)
            if activation == "relu6" and follower.name not in replaceable_relu6:
                return f"{producer.name}: {follower.name} is a ReLU6 (not positive-homogeneous)"
            if activation not in ("homogeneous", "relu6"):
                return f"{producer.name}: {follower.name} is an {activation} (not positive-homogeneous)"
        elif kind in RESHAPING:
            width = last_dim(safe(follower, "output"))
            if width is None or width % channels:
                return f"{producer.name}: {follower.name} does not keep the channels traceable"
        elif kind not in PER_CHANNEL:
            return f"{producer.name}: {follower.name} ({kind}) mixes or changes channels"
        through.append(follower)
        current = follower


# ----------------------------------------------------------------------------------------------- the weights


def _kernel_and_bias(layer: Any) -> tuple[list[np.ndarray], np.ndarray, np.ndarray | None]:
    weights = layer.get_weights()
    use_bias = bool(layer.get_config().get("use_bias", True))
    return weights, weights[0], weights[1] if use_bias and len(weights) > 1 else None


def _bn_parts(layer: Any) -> tuple[list[np.ndarray], dict[str, int]]:
    """A BatchNormalization's weights and the index of each part (gamma/beta are absent without scale/center)."""
    config = layer.get_config()
    names = (["gamma"] if config.get("scale", True) else []) + (["beta"] if config.get("center", True) else [])
    names += ["moving_mean", "moving_variance"]
    return layer.get_weights(), {name: i for i, name in enumerate(names)}


def _producer_ranges(chain: Chain) -> np.ndarray:
    _, kernel, _ = _kernel_and_bias(chain.producer)
    ranges = np.abs(kernel).reshape(-1, chain.channels).max(axis=0).astype(np.float64)
    if chain.folded_bn is not None:
        weights, index = _bn_parts(chain.folded_bn)
        epsilon = float(chain.folded_bn.get_config().get("epsilon", 1e-3))
        gamma = np.abs(weights[index["gamma"]]) if "gamma" in index else 1.0
        ranges = ranges * gamma / np.sqrt(weights[index["moving_variance"]].astype(np.float64) + epsilon)
    return ranges


def _consumer_view(chain: Chain, kernel: np.ndarray) -> np.ndarray:
    """layer2's kernel as ``(taps, D // C, C, outputs)``: axis 2 is the producer's channel."""
    width = kernel.shape[-2]
    taps = int(np.prod(kernel.shape[:-2])) if kernel.ndim > 2 else 1
    return kernel.reshape(taps, width // chain.channels, chain.channels, kernel.shape[-1])


def _consumer_ranges(chain: Chain) -> np.ndarray:
    _, kernel, _ = _kernel_and_bias(chain.consumer)
    return np.abs(_consumer_view(chain, kernel)).max(axis=(0, 1, 3)).astype(np.float64)


def _balancing_scales(chain: Chain) -> np.ndarray:
    r1, r2 = _producer_ranges(chain), _consumer_ranges(chain)
    scales = np.ones_like(r1)
    live = (r1 > 0) & (r2 > 0) & np.isfinite(r1) & np.isfinite(r2)
    scales[live] = np.sqrt(r1[live] / r2[live])
    return scales


def imbalance(chain: Chain) -> float:
    """max over channels of ``r1_c / r2_c`` divided by its min (1 = balanced)."""
    r1, r2 = _producer_ranges(chain), _consumer_ranges(chain)
    live = (r1 > 0) & (r2 > 0)
    if not live.any():
        return 1.0
    ratio = r1[live] / r2[live]
    return float(ratio.max() / ratio.min())


def _rescale(chain: Chain, scales: np.ndarray) -> None:
    """Divide layer1's output channels (and every BatchNorm on the way) by ``scales``; multiply layer2's inputs."""
    weights, kernel, bias = _kernel_and_bias(chain.producer)
    shape = kernel.shape
    weights[0] = (kernel.reshape(-1, chain.channels) / scales).reshape(shape).astype(kernel.dtype)
    if bias is not None:
        weights[1] = (bias / scales).astype(bias.dtype)
    chain.producer.set_weights(weights)
    for bn in chain.batch_norms:
        bn_weights, index = _bn_parts(bn)
        width = bn_weights[index["moving_mean"]].shape[0]
        tiled = np.tile(scales, width // chain.channels)
        for part in ("beta", "moving_mean"):
            if part in index:
                bn_weights[index[part]] = (bn_weights[index[part]] / tiled).astype(bn_weights[index[part]].dtype)
        bn.set_weights(bn_weights)
    weights, kernel, _ = _kernel_and_bias(chain.consumer)
    view = _consumer_view(chain, kernel) * scales[None, None, :, None]
    weights[0] = view.reshape(kernel.shape).astype(kernel.dtype)
    chain.consumer.set_weights(weights)


def equalize_chains(chains: Sequence[Chain]) -> tuple[list[EqualizedPair], int]:
    before = [imbalance(chain) for chain in chains]
    total = [np.ones(chain.channels) for chain in chains]
    iterations = 0
    while iterations < MAX_ITERATIONS:
        iterations += 1
        worst = 0.0
        for position, chain in enumerate(chains):
            scales = _balancing_scales(chain)
            _rescale(chain, scales)
            total[position] *= scales
            worst = max(worst, float(np.abs(np.log(scales)).max(initial=0.0)))
        if worst < SETTLED:
            break
    pairs = [
        EqualizedPair(
            producer=chain.producer.name,
            consumer=chain.consumer.name,
            through=tuple(layer.name for layer in chain.through),
            channels=chain.channels,
            largest_scale=float(np.max(np.maximum(scales, 1 / scales))),
            imbalance_before=imbalance_before,
            imbalance_after=imbalance(chain),
        )
        for chain, scales, imbalance_before in zip(chains, total, before)
    ]
    return pairs, iterations

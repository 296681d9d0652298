"""The loss the tfmot fine-tunes train with (``--loss``): the model's compiled cross-entropy, the flag, or one
detected from the output layer's activation."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from tflite_opt.progress import ensure


class LossChoice(str, Enum):
    """``--loss`` values. ``auto``: the model's compiled loss, else cross-entropy matching the output layer."""

    AUTO = "auto"
    SPARSE_LOGITS = "sparse-ce-logits"
    SPARSE_PROBABILITIES = "sparse-ce-probabilities"
    BINARY_LOGITS = "binary-ce-logits"
    BINARY_PROBABILITIES = "binary-ce-probabilities"


LOSS_NAMES = [choice.value for choice in LossChoice]


@dataclass
class LossSpec:
    """A classification loss on class-id labels."""

    binary: bool
    from_logits: bool
    source: str

    def describe(self) -> str:
        name = "binary_crossentropy" if self.binary else "sparse_categorical_crossentropy"
        return f"{name}(from_logits={self.from_logits})"


def output_layer(model: Any):
    """The layer that produces a tf_keras model's (single) output, looking inside nested models."""
    layer = model.get_layer(model.output_names[0]) if getattr(model, "output_names", None) else model.layers[-1]
    while hasattr(layer, "output_names") and hasattr(layer, "get_layer"):
        layer = layer.get_layer(layer.output_names[0])
    return layer


def _activation_name(layer: Any) -> str:
    if type(layer).__name__ == "Softmax":
        return "softmax"
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", str(activation or "linear"))


def choose_loss(source_model: Any, base_model: Any, num_classes: int, choice: str, progress=None) -> LossSpec:
    """The loss to fine-tune with.

    ``auto``: the source model's compiled loss when it is a cross-entropy on class ids (categorical
    cross-entropy becomes its sparse twin, because labels are class ids), otherwise cross-entropy whose
    ``from_logits`` follows the output layer's activation (softmax/sigmoid -> probabilities).
    """
    choice = LossChoice(choice)
    if choice != LossChoice.AUTO:
        return LossSpec(
            binary=choice in (LossChoice.BINARY_LOGITS, LossChoice.BINARY_PROBABILITIES),
            from_logits=choice in (LossChoice.SPARSE_LOGITS, LossChoice.BINARY_LOGITS),
            source="flag",
        )
    compiled = compiled_loss(source_model)
    if compiled is not None:
        if compiled.binary == (num_classes == 1):
            return compiled
        ensure(progress).warn(
            f"the model's compiled loss {compiled.describe()} does not fit its {num_classes}-wide output; "
            "choosing the loss from the output layer (pass --loss to choose)"
        )
    activation = _activation_name(output_layer(base_model))
    if num_classes == 1:
        return LossSpec(binary=True, from_logits=activation != "sigmoid", source="detected")
    return LossSpec(binary=False, from_logits=activation != "softmax", source="detected")


_SPARSE = {
    "sparsecategoricalcrossentropy",
    "sparse_categorical_crossentropy",
    "categoricalcrossentropy",
    "categorical_crossentropy",
}
_BINARY = {"binarycrossentropy", "binary_crossentropy"}


def compiled_loss(model: Any) -> LossSpec | None:
    """The model's compiled cross-entropy loss as a ``LossSpec`` (``None`` if uncompiled or another loss)."""
    loss = getattr(model, "loss", None)
    if isinstance(loss, dict) and len(loss) == 1:
        loss = next(iter(loss.values()))
    if isinstance(loss, (list, tuple)) and len(loss) == 1:
        loss = loss[0]
    if loss is None or isinstance(loss, (dict, list, tuple)):
        return None
    if isinstance(loss, str):
        name, from_logits = loss, False
    elif callable(loss) and hasattr(loss, "get_config"):
        name = type(loss).__name__
        try:
            from_logits = bool(loss.get_config().get("from_logits", False))
        except Exception:  # noqa: BLE001 - a custom loss with a broken get_config
            return None
        fn = getattr(loss, "fn", None)  # LossFunctionWrapper around a function
        if name == "LossFunctionWrapper" and fn is not None:
            name = getattr(fn, "__name__", name)
    else:
        name, from_logits = getattr(loss, "__name__", ""), False
    key = name.lower()
    if key in _SPARSE:
        return LossSpec(binary=False, from_logits=from_logits, source="compiled")
    if key in _BINARY:
        return LossSpec(binary=True, from_logits=from_logits, source="compiled")
    return None


def keras_loss_and_metric(tf_keras, spec: LossSpec):
    """The tf_keras loss object and the matching accuracy metric for ``spec``."""
    if spec.binary:
        loss = tf_keras.losses.BinaryCrossentropy(from_logits=spec.from_logits)
        metric = tf_keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0 if spec.from_logits else 0.5)
    else:
        loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=spec.from_logits)
        metric = tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    return loss, metric

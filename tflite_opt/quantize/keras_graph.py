"""A Keras 3 / tf_keras Functional or Sequential model read as a graph through public API only, and run on named
samples: what cross-layer equalization and bias correction walk and measure."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from tflite_opt.errors import ConversionError, DataError, first_line

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.representative_data import Dataset


def layer_kind(layer: Any) -> str:
    """The layer's class name (``Conv2D``): the same in Keras 3 and tf_keras."""
    return type(layer).__name__


class LayerGraph:
    """Who consumes which layer's output, read through public Keras API (works for Keras 3 and tf_keras)."""

    def __init__(self, model: Any) -> None:
        try:
            layers = list(model.layers)
            outputs = list(model.outputs)
            config = model.get_config()
        except (AttributeError, ValueError, NotImplementedError, TypeError) as exc:
            raise ConversionError(
                f"{getattr(model, 'name', 'the model')} is not a Functional or Sequential model "
                f"({first_line(exc)}); equalization and bias correction need one: save the model as one"
            ) from exc
        self.layers = layers
        self.output_ids = {id(tensor) for tensor in outputs}
        shared = {
            entry.get("name")
            for entry in (config.get("layers") or [])
            if isinstance(entry, dict) and len(entry.get("inbound_nodes") or []) > 1
        }
        self.shared = shared
        self.consumers: dict[int, list[Any]] = {}
        for layer in layers:
            for tensor in flat(safe(layer, "input")):
                self.consumers.setdefault(id(tensor), []).append(layer)

    def next_layer(self, layer: Any) -> tuple[Any | None, str]:
        """The one layer consuming ``layer``'s output, or ``(None, why not)``."""
        if layer.name in self.shared:
            return None, f"{layer.name} is called more than once"
        output = safe(layer, "output")
        if output is None or isinstance(output, (list, tuple, dict)):
            return None, f"{layer.name} has no single output"
        if id(output) in self.output_ids:
            return None, f"{layer.name}'s output is a model output"
        consumers = self.consumers.get(id(output), [])
        if len(consumers) != 1:
            return None, f"{layer.name}'s output feeds {len(consumers)} layers"
        follower = consumers[0]
        if len(flat(safe(follower, "input"))) != 1 or follower.name in self.shared:
            return None, f"{follower.name} has several inputs or calls"
        return follower, ""


def safe(layer: Any, attribute: str) -> Any:
    """``layer.input``/``layer.output``, or ``None`` where Keras has none (a layer never called)."""
    try:
        return getattr(layer, attribute)
    except (AttributeError, ValueError, RuntimeError):
        return None


def flat(value: Any) -> list[Any]:
    """Tensors of a nested list/tuple/dict, in order (dict values in their order)."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [t for v in value.values() for t in flat(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in flat(v)]
    return [value]


def last_dim(tensor: Any) -> int | None:
    """The channel (last) axis of a tensor of rank >= 2, when known."""
    shape = getattr(tensor, "shape", None)
    if shape is None or len(shape) < 2 or shape[-1] is None:
        return None
    return int(shape[-1])


def keras_module(model: Any) -> Any:
    """The Keras (3 or tf_keras) that built ``model``."""
    from tflite_opt.models import tf_runtime
    from tflite_opt.models.loading import is_keras3_model

    return tf_runtime.import_keras3() if is_keras3_model(model) else tf_runtime.import_tf_keras()


def model_inputs(model: Any, samples: "Dataset") -> Any:
    """The samples as the Keras model takes them: one array, a list in the order of ``model.inputs``, or a dict
    for a model built with named (dict) inputs.

    Raises:
        DataError: an input has no samples.
    """
    from tflite_opt.models.loading import is_keras3_model

    tensors = list(model.inputs)
    names = [t.name for t in tensors] if is_keras3_model(model) else list(model.input_names)
    missing = [name for name in names if name not in samples.inputs]
    if missing:
        raise DataError(f"{samples.source or 'the calibration data'} has no samples for input(s) {', '.join(missing)}")
    arrays = [np.asarray(samples.inputs[name], dtype=np.float32) for name in names]
    structure = safe(model, "input")
    if isinstance(structure, dict):
        by_tensor = {id(tensor): array for tensor, array in zip(tensors, arrays)}
        return {key: by_tensor[id(tensor)] for key, tensor in structure.items()}
    if isinstance(structure, (list, tuple)) or len(arrays) > 1:
        return arrays
    return arrays[0]


def _batches(inputs: Any, batch_size: int):
    if isinstance(inputs, dict):
        count = len(next(iter(inputs.values())))
        for start in range(0, count, batch_size):
            yield {key: value[start : start + batch_size] for key, value in inputs.items()}
    elif isinstance(inputs, list):
        for start in range(0, len(inputs[0]), batch_size):
            yield [value[start : start + batch_size] for value in inputs]
    else:
        for start in range(0, len(inputs), batch_size):
            yield inputs[start : start + batch_size]


def predict(model: Any, inputs: Any, batch_size: int = 256) -> list[np.ndarray]:
    """Every output of ``model`` on ``inputs`` (from :func:`model_inputs`) as float64 arrays, in a fixed order.

    Calls the model eagerly batch by batch: for the small probe models built here that is much faster than
    ``model.predict``, which traces a new function for every model.
    """
    chunks: list[list[np.ndarray]] = []
    for batch in _batches(inputs, batch_size):
        outputs = model(batch, training=False)
        if isinstance(outputs, dict):
            outputs = [outputs[key] for key in sorted(outputs)]
        chunks.append([np.asarray(o, dtype=np.float64) for o in flat(outputs)])
    return [np.concatenate(parts) for parts in zip(*chunks)]


def layer_input(model: Any, layer_name: str, inputs: Any) -> np.ndarray:
    """What a (single-input) layer of ``model`` receives on ``inputs``."""
    keras = keras_module(model)
    probe = keras.Model(model.input, model.get_layer(layer_name).input)
    (values,) = predict(probe, inputs)
    return values.astype(np.float32)


def clone(model: Any, clone_layer: Any = None) -> Any:
    """A new model of the same graph and layer names with the same weights (``clone_layer``: Keras'
    ``clone_function``, e.g. to change one layer's config).

    Raises:
        ConversionError: the model cannot be cloned.
    """
    keras = keras_module(model)

    def same(layer):
        return layer.__class__.from_config(layer.get_config())

    try:
        copy = keras.models.clone_model(model, clone_function=clone_layer or same)
        copy.set_weights(model.get_weights())
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise ConversionError(
            f"cannot copy {getattr(model, 'name', 'the model')} to rescale it: {first_line(exc)}"
        ) from exc
    return copy

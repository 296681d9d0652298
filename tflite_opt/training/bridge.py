"""The Keras 3 -> tf_keras bridge: tfmot wraps tf_keras layers only, so Keras 3 models are rebuilt in tf_keras.

A Keras 3 Sequential or Functional model of built-in layers is rebuilt layer by layer: each layer's
``get_config()`` feeds the tf_keras layer class of the same name, the functional graph is replayed with tf_keras
symbolic tensors (Keras 3's own graph walk, so shared layers, multi-input layers and nested models keep their
wiring), and the weights are copied. The bridge then proves itself: both models run on a batch of real samples
and their outputs must agree within ``tolerance`` before any training starts.

Anything that cannot be rebuilt (a subclassed model, a custom layer, a raw ``keras.ops`` call in a functional
graph, a Keras-3-only option with a non-default value) raises ``TrainingError`` naming the layer.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tflite_opt.compat import tf as compat_tf
from tflite_opt.errors import TrainingError, first_line
from tflite_opt.models.loading import is_keras3_model

DEFAULT_TOLERANCE = 1e-5

# tf_keras' base Layer accepts these keyword arguments besides trainable/name/dtype/dynamic.
_BASE_LAYER_KWARGS = {
    "trainable",
    "name",
    "dtype",
    "dynamic",
    "input_dim",
    "input_shape",
    "batch_input_shape",
    "batch_size",
    "weights",
    "activity_regularizer",
    "autocast",
    "implementation",
}
_FLOAT_POLICIES = {"float16", "bfloat16", "float32", "float64", "mixed_float16", "mixed_bfloat16"}
# Nested objects inside a layer config, by the tf_keras module that can rebuild them.
_OBJECT_MODULES = {
    "initializer": "initializers",
    "regularizer": "regularizers",
    "constraint": "constraints",
}


@dataclass
class BridgeReport:
    """How the bridge went.

    Attributes:
        layers: number of layers rebuilt.
        max_abs_diff: largest absolute difference between the Keras 3 and tf_keras outputs on the check batch.
        samples: samples in the check batch.
        tolerance: the limit ``max_abs_diff`` had to stay within.
    """

    layers: int
    max_abs_diff: float
    samples: int
    tolerance: float = DEFAULT_TOLERANCE


def check_bridgeable(model: Any) -> None:
    """Raise ``TrainingError`` naming every layer of a Keras 3 model the bridge cannot rebuild.

    Cheap (no TensorFlow work): run it before loading data or training so the user hears about a custom layer
    at once.
    """
    problems = _unbridgeable(model)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise TrainingError(
            f"cannot bridge Keras 3 model '{model.name}' to tf_keras for tfmot: {shown}. The bridge handles "
            "Sequential and Functional models of built-in Keras layers; rebuild the model that way, or build "
            "and save it with tf_keras (import tf_keras)"
        )


def _unbridgeable(model: Any, prefix: str = "") -> list[str]:
    import keras

    functional = _functional_of(model)
    if functional is None:
        if isinstance(model, keras.Sequential):
            return [f"Sequential model '{prefix}{model.name}' is not built (it has no input shape)"]
        return [
            f"model '{prefix}{model.name}' is a subclassed model (class {type(model).__name__}); only Sequential "
            "and Functional models can be bridged"
        ]
    problems: list[str] = []
    for operation in functional.operations:
        if isinstance(operation, keras.layers.InputLayer):
            continue
        label = f"{prefix}{operation.name}"
        if isinstance(operation, keras.Model):
            problems.extend(_unbridgeable(operation, prefix=f"{label}/"))
            continue
        if not isinstance(operation, keras.layers.Layer):
            problems.append(
                f"operation '{label}' ({type(operation).__name__}, a raw keras.ops call) has no tf_keras layer; "
                "use the equivalent keras.layers layer in the model"
            )
            continue
        if _twin_class(operation) is None:
            problems.append(
                f"layer '{label}' ({type(operation).__module__}.{type(operation).__name__}) has no tf_keras twin"
            )
    return problems


def _functional_of(model: Any):
    """The Functional graph behind a Keras 3 Functional or built Sequential model (``None`` if subclassed)."""
    import keras
    from keras.src.models.functional import Functional

    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    if isinstance(model, Functional):
        return model
    return None


def _twin_class(layer: Any):
    """The tf_keras layer class that mirrors a built-in Keras 3 layer, or ``None``."""
    import tf_keras

    module = type(layer).__module__
    if not module.startswith("keras.src.layers"):
        return None
    return getattr(tf_keras.layers, type(layer).__name__, None)


def to_tf_keras(
    model: Any,
    sample_inputs: Mapping[str, np.ndarray] | None = None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> tuple[Any, BridgeReport]:
    """Rebuild a Keras 3 Sequential/Functional model as a tf_keras model with identical weights.

    Args:
        model: a Keras 3 model.
        sample_inputs: real samples keyed by input name (a single array is enough for a one-input model); the
            outputs of both models on these are compared. ``None`` uses random inputs in [0, 1).
        tolerance: the largest absolute output difference accepted.

    Returns:
        The tf_keras model and a ``BridgeReport``.

    Raises:
        TrainingError: the model or one of its layers cannot be rebuilt, or the outputs differ.
    """
    import tf_keras

    if not is_keras3_model(model):
        raise TrainingError(f"model '{getattr(model, 'name', '?')}' is not a Keras 3 model; it needs no bridge")
    check_bridgeable(model)
    rebuilt, layers = _rebuild(model, tf_keras)
    feed = _check_batch(model, sample_inputs)
    expected = _flat_outputs(model(_arrange(model, feed), training=False))
    got = _flat_outputs(rebuilt(_arrange_tf_keras(rebuilt, feed), training=False))
    if len(expected) != len(got):
        raise TrainingError(
            f"bridged model has {len(got)} outputs but the Keras 3 model has {len(expected)}; cannot fine-tune it"
        )
    diff = 0.0
    for want, have in zip(expected, got):
        if want.shape != have.shape:
            raise TrainingError(
                f"bridged model's output has shape {have.shape} but the Keras 3 model's has {want.shape}"
            )
        if want.size:
            diff = max(diff, float(np.max(np.abs(want.astype(np.float64) - have.astype(np.float64)))))
    samples = len(next(iter(feed.values())))
    if not np.isfinite(diff) or diff > tolerance:
        raise TrainingError(
            f"the tf_keras rebuild of '{model.name}' does not reproduce the Keras 3 model: outputs differ by "
            f"{diff:.3g} (limit {tolerance:g}) on {samples} samples; save the model with tf_keras instead"
        )
    return rebuilt, BridgeReport(layers=layers, max_abs_diff=diff, samples=samples, tolerance=tolerance)


def _rebuild(model: Any, tf_keras) -> tuple[Any, int]:
    """Replay a Keras 3 functional graph with tf_keras layers; returns (tf_keras model, layers rebuilt)."""
    import keras
    from keras import tree

    functional = _functional_of(model)
    twins: dict[int, Any] = {}
    count = 0

    def twin_of(operation):
        nonlocal count
        key = id(operation)
        if key not in twins:
            if isinstance(operation, keras.Model):
                twins[key], inner = _rebuild(operation, tf_keras)
                count += inner
            else:
                twins[key] = _make_twin(operation, tf_keras)
                count += 1
        return twins[key]

    inputs = [
        tf_keras.Input(
            batch_shape=tuple(tensor.shape),
            dtype=_dtype_name(tensor.dtype),
            name=tensor.name,
        )
        for tensor in functional.inputs
    ]
    try:
        outputs = compat_tf.run_through_graph(functional, inputs, operation_fn=twin_of)
    except TrainingError:
        raise
    except Exception as exc:  # noqa: BLE001 - a tf_keras layer refused the Keras 3 wiring
        raise TrainingError(f"cannot rebuild '{model.name}' in tf_keras: {first_line(exc)}") from exc
    input_struct = tree.pack_sequence_as(compat_tf.functional_inputs_struct(functional), inputs)
    rebuilt = tf_keras.Model(inputs=input_struct, outputs=outputs, name=model.name)
    for operation in functional.operations:
        if id(operation) in twins and not isinstance(operation, keras.Model):
            _copy_weights(operation, twins[id(operation)])
    return rebuilt, count


def _make_twin(layer: Any, tf_keras):
    cls = _twin_class(layer)
    if cls is None:  # pragma: no cover - check_bridgeable ran first
        raise TrainingError(f"layer '{layer.name}' ({type(layer).__name__}) has no tf_keras twin")
    config = translate_config(layer.get_config(), cls, layer_name=layer.name, tf_keras=tf_keras)
    try:
        return cls.from_config(config)
    except Exception as exc:  # noqa: BLE001 - from_config raises TypeError/ValueError for unknown settings
        raise TrainingError(
            f"layer '{layer.name}' ({type(layer).__name__}) cannot be rebuilt in tf_keras: {first_line(exc)}"
        ) from exc


def translate_config(config: dict, cls: type, *, layer_name: str, tf_keras) -> dict:
    """A Keras 3 layer config made acceptable to the tf_keras class ``cls``.

    Dtype policies become their names, nested initializers/regularizers/constraints become the legacy
    ``{"class_name", "config"}`` form with only the arguments tf_keras knows, and options tf_keras lacks are
    dropped when they hold a neutral value (``None``/``False``/``0``); a non-neutral one is an error, because
    dropping it would change what the layer computes.
    """
    accepted = _accepted_arguments(cls)
    result: dict[str, Any] = {}
    for key, value in config.items():
        if key == "dtype":
            result[key] = _policy_name(value, layer_name)
            continue
        if isinstance(value, dict) and "class_name" in value:
            kind = next((k for suffix, k in _OBJECT_MODULES.items() if key.endswith(suffix)), None)
            if kind is not None:
                value = _translate_object(value, getattr(tf_keras, kind), lenient=kind == "initializers")
        if key not in accepted:
            if _is_neutral(value):
                continue
            raise TrainingError(
                f"layer '{layer_name}' ({cls.__name__}) sets {key}={value!r}, which tf_keras' {cls.__name__} "
                "does not support; remove that option to fine-tune with tfmot"
            )
        result[key] = value
    return result


def _translate_object(value: dict, module, *, lenient: bool) -> dict:
    class_name = value["class_name"]
    config = dict(value.get("config") or {})
    target = getattr(module, class_name, None)
    if target is not None and inspect.isclass(target):
        accepted = _accepted_arguments(target)
        # Initializers never run (the weights are copied), so their Keras-3-only arguments are simply dropped.
        config = {k: v for k, v in config.items() if k in accepted or (not lenient and not _is_neutral(v))}
    return {"class_name": class_name, "config": config}


def _accepted_arguments(cls: type) -> set[str]:
    accepted: set[str] = set()
    for klass in inspect.getmro(cls):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            parameters = inspect.signature(init).parameters
        except (TypeError, ValueError):  # pragma: no cover - C-implemented __init__
            continue
        accepted.update(name for name, p in parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
        if not any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
            break
    accepted.discard("self")
    return accepted | _BASE_LAYER_KWARGS


def _is_neutral(value: Any) -> bool:
    return value is None or value is False or (isinstance(value, (int, float)) and value == 0) or value in ("", {}, [])


def _policy_name(value: Any, layer_name: str) -> str:
    name = value
    if isinstance(value, dict):
        name = (value.get("config") or {}).get("name", "float32")
    elif hasattr(value, "name"):
        name = value.name
    name = str(name)
    if name not in _FLOAT_POLICIES:
        raise TrainingError(
            f"layer '{layer_name}' uses the dtype policy '{name}' (a Keras 3 quantized layer?), which tf_keras "
            "cannot rebuild; fine-tune the float model instead"
        )
    return name


def _dtype_name(dtype: Any) -> str:
    return dtype if isinstance(dtype, str) else getattr(dtype, "name", str(dtype))


def _copy_weights(source: Any, target: Any) -> None:
    """Copy a Keras 3 layer's weights into its tf_keras twin (by weight name when unambiguous)."""
    src = list(source.weights)
    dst = list(target.weights)
    if len(src) != len(dst):
        raise TrainingError(
            f"layer '{source.name}' has {len(src)} weights in Keras 3 but {len(dst)} in tf_keras; cannot bridge it"
        )
    src_names = [_short_name(v.path if hasattr(v, "path") else v.name) for v in src]
    dst_names = [_short_name(v.name) for v in dst]
    if len(set(src_names)) == len(src_names) and set(src_names) == set(dst_names):
        by_name = {name: v for name, v in zip(src_names, src)}
        pairs = [(by_name[name], v) for name, v in zip(dst_names, dst)]
    else:
        pairs = list(zip(src, dst))
    for src_var, dst_var in pairs:
        value = np.asarray(src_var.numpy() if hasattr(src_var, "numpy") else src_var)
        if tuple(value.shape) != tuple(dst_var.shape):
            raise TrainingError(
                f"layer '{source.name}': weight {_short_name(dst_var.name)} has shape {tuple(value.shape)} in "
                f"Keras 3 but {tuple(dst_var.shape)} in tf_keras; cannot bridge it"
            )
        dst_var.assign(value)


def _short_name(name: str) -> str:
    return str(name).split("/")[-1].split(":")[0]


def _check_batch(model: Any, sample_inputs: Mapping[str, np.ndarray] | np.ndarray | None) -> dict[str, np.ndarray]:
    """Samples for the output comparison, keyed by the model's input names."""
    functional = _functional_of(model)
    names = [tensor.name for tensor in functional.inputs]
    if sample_inputs is None:
        rng = np.random.default_rng(0)
        feed = {}
        for tensor in functional.inputs:
            shape = tuple(4 if d is None else int(d) for d in tensor.shape)
            feed[tensor.name] = rng.random(shape).astype(_dtype_name(tensor.dtype))
        return feed
    if isinstance(sample_inputs, np.ndarray):
        sample_inputs = {names[0]: sample_inputs}
    if len(names) == 1 and len(sample_inputs) == 1:
        return {names[0]: np.asarray(next(iter(sample_inputs.values())))}
    missing = [n for n in names if n not in sample_inputs]
    if missing:
        raise TrainingError(
            f"bridge check: no samples for input(s) {', '.join(missing)}; the model's inputs are {', '.join(names)}"
        )
    return {name: np.asarray(sample_inputs[name]) for name in names}


def _arrange(model: Any, feed: dict[str, np.ndarray]):
    from keras import tree

    functional = _functional_of(model)
    flat = [feed[tensor.name] for tensor in functional.inputs]
    return tree.pack_sequence_as(compat_tf.functional_inputs_struct(functional), flat)


def _arrange_tf_keras(model: Any, feed: dict[str, np.ndarray]):
    import tensorflow as tf

    flat = [feed[name] for name in model.input_names]
    return tf.nest.pack_sequence_as(compat_tf.tf_keras_nested_inputs(model), flat)


def _flat_outputs(outputs: Any) -> list[np.ndarray]:
    import tensorflow as tf

    return [np.asarray(t) for t in tf.nest.flatten(outputs)]


def _clone_with_weights(keras, template: Any, model: Any):
    """The template's architecture with ``model``'s weights, matched by layer name; None when they do not fit."""
    try:
        rebuilt = keras.models.clone_model(template)
        sources = {layer.name: layer for layer in model.layers}
        for layer in rebuilt.layers:
            weights = layer.get_weights()
            if not weights:
                continue
            source = sources.get(layer.name)
            if source is None:
                return None
            new = source.get_weights()
            if [w.shape for w in new] != [w.shape for w in weights]:
                return None
            layer.set_weights(new)
        return rebuilt
    except Exception:  # noqa: BLE001 - any mismatch means: use the other way back
        return None


def _rebuild_from_h5(keras, model: Any):
    import shutil
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="tflite_opt_bridge_"))
    try:
        model.save(str(folder / "model.h5"))
        return keras.saving.load_model(str(folder / "model.h5"), compile=False)
    except Exception as exc:  # noqa: BLE001 - h5 writing and Keras 3's legacy reader raise many types
        raise TrainingError(f"Keras 3 cannot rebuild '{model.name}': {first_line(exc)}") from exc
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def to_keras3(
    model: Any,
    sample_inputs: Mapping[str, np.ndarray] | None = None,
    *,
    template: Any = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> tuple[Any, BridgeReport]:
    """The way back: a (stripped) tf_keras model as a Keras 3 model, for writing Keras 3 ``.keras`` files.

    With ``template`` (the Keras 3 model the tf_keras one was bridged from, same architecture after
    ``strip_pruning``/``strip_clustering``) the template is cloned and given the fine-tuned weights layer by layer.
    Otherwise, or if that fails, Keras 3's own reader of legacy ``.h5`` files rebuilds it. Either way the outputs
    are checked like ``to_tf_keras`` does.

    Raises:
        TrainingError: Keras 3 cannot rebuild the model, or its outputs differ.
    """
    from tflite_opt.models import tf_runtime

    keras = tf_runtime.import_keras3()
    rebuilt = _clone_with_weights(keras, template, model) if template is not None else None
    if rebuilt is None:
        rebuilt = _rebuild_from_h5(keras, model)
    names = list(model.input_names)
    if sample_inputs is None:
        rng = np.random.default_rng(0)
        feed = {
            name: rng.random(tuple(4 if d is None else int(d) for d in tensor.shape)).astype(tensor.dtype.name)
            for name, tensor in zip(names, model.inputs)
        }
    elif len(names) == 1 and len(sample_inputs) == 1:
        feed = {names[0]: np.asarray(next(iter(sample_inputs.values())))}
    else:
        feed = {name: np.asarray(sample_inputs[name]) for name in names}
    expected = _flat_outputs(model(_arrange_tf_keras(model, feed), training=False))
    got = _flat_outputs(rebuilt(_arrange(rebuilt, feed), training=False))
    diff = max(
        (float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) for a, b in zip(expected, got) if a.size),
        default=0.0,
    )
    samples = len(next(iter(feed.values())))
    if len(expected) != len(got) or not np.isfinite(diff) or diff > tolerance:
        raise TrainingError(
            f"the Keras 3 rebuild of '{model.name}' does not reproduce the tf_keras model (outputs differ by "
            f"{diff:.3g}, limit {tolerance:g})"
        )
    return rebuilt, BridgeReport(layers=len(rebuilt.layers), max_abs_diff=diff, samples=samples, tolerance=tolerance)

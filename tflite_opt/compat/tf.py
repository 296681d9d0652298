"""TensorFlow 2.21 / tf_keras 2.21 / Keras 3 / tfmot 0.8 internals.

Imported lazily by the converter, selective quantization and the training bridge; nothing here imports TensorFlow
at module level (the callers have imported it by then).
"""

from __future__ import annotations

from typing import Any

from tflite_opt.compat import require

TENSORFLOW = ("tensorflow", "2.21")
KERAS = ("keras", "3")
TFMOT = ("tensorflow-model-optimization", "0.8")


def _require(obj: Any, attribute: str, versions: tuple[str, str] = TENSORFLOW) -> Any:
    return require(obj, attribute, package=versions[0], written_for=versions[1])


# --- TFLiteConverter: calibrate-only conversion and the MLIR quantizer (what QuantizationDebugger does) --------


def set_calibrate_only(converter: Any) -> None:
    """Stop the conversion after calibration: the result is the float model with recorded ranges."""
    _require(converter, "_experimental_calibrate_only")
    converter._experimental_calibrate_only = True  # noqa: SLF001 - QuantizationDebugger's route


def per_channel_disabled(converter: Any) -> bool:
    return bool(getattr(converter, "_experimental_disable_per_channel", False))


def _lite_convert() -> Any:
    from tensorflow.lite.python import convert as lite_convert

    return lite_convert


def mlir_quantize(content: bytes, **kwargs: Any) -> bytes:
    """``tensorflow.lite.python.convert.mlir_quantize`` on a calibrated model."""
    return bytes(_require(_lite_convert(), "mlir_quantize")(content, **kwargs))


def deduplicate_buffers(content: bytes) -> bytes:
    """Share identical constant buffers, as ``TFLiteConverter`` does after quantizing."""
    return bytes(_require(_lite_convert(), "deduplicate_readonly_buffers")(content))


def mlir_sparsify(content: bytes) -> bytes:
    """Encode sparse weights (``EXPERIMENTAL_SPARSITY``) in an already converted model."""
    return bytes(_require(_lite_convert(), "mlir_sparsify")(content))


# --- Keras 3 functional graphs (the Keras 3 -> tf_keras bridge) ----------------------------------------------


def run_through_graph(functional: Any, inputs: Any, operation_fn: Any) -> Any:
    """Replay a Keras 3 functional graph, mapping each operation through ``operation_fn``."""
    return _require(functional, "_run_through_graph", KERAS)(inputs, operation_fn=operation_fn)


def functional_inputs_struct(functional: Any) -> Any:
    """The nesting of a Keras 3 functional model's inputs (a dict, list or single tensor)."""
    return _require(functional, "_inputs_struct", KERAS)


def tf_keras_nested_inputs(model: Any) -> Any:
    """The nesting of a tf_keras model's inputs."""
    return _require(model, "_nested_inputs", ("tf-keras", "2.21"))


# --- tfmot registries ----------------------------------------------------------------------------------------


def clustering_weights_map(registry: Any) -> dict:
    """Layer class -> the weight names tfmot's clustering registry clusters."""
    return _require(registry, "_LAYERS_WEIGHTS_MAP", TFMOT)


def prunable_weight_names(registry: Any, layer: Any) -> list:
    """The weight names tfmot's pruning registry prunes for ``layer``."""
    return _require(registry, "_weight_names", TFMOT)(layer)

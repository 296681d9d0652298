"""Model loading: every kind of Keras/SavedModel source, detected without TensorFlow, loaded with the right Keras.

``tf_runtime`` beside it is the one module that imports TensorFlow.
"""

from tflite_opt.models.loading import (
    DEFAULT_SIGNATURE,
    LoadedModel,
    ModelKind,
    detect_kind,
    is_keras3_model,
    keras_input_specs,
    load_model,
    with_input_shapes,
)

__all__ = [
    "DEFAULT_SIGNATURE",
    "LoadedModel",
    "ModelKind",
    "detect_kind",
    "is_keras3_model",
    "keras_input_specs",
    "load_model",
    "with_input_shapes",
]

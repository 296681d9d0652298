"""The one place that imports TensorFlow, sets TF_USE_LEGACY_KERAS and silences TensorFlow's logs.

TensorFlow is heavy (seconds to import): only conversion and training paths call ``import_tensorflow``;
``--help``, ``inspect`` and ``evaluate`` never do.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

_VERBOSE = False


def set_verbose(verbose: bool) -> None:
    """Show TensorFlow's own logs (and tracebacks) when ``verbose``; hide them otherwise."""
    global _VERBOSE
    _VERBOSE = verbose
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        os.environ.setdefault("GLOG_minloglevel", "3")


def is_verbose() -> bool:
    return _VERBOSE


def import_tensorflow(legacy_keras: bool = False):
    """Import and return the ``tensorflow`` module.

    Args:
        legacy_keras: the caller needs tf_keras (tfmot, tf_keras model files). ``TF_USE_LEGACY_KERAS=1`` must be
            set before TensorFlow's first import for ``tf.keras`` to be tf_keras; after that it cannot change, so
            callers reach Keras 3 through ``import keras`` and tf_keras through ``import tf_keras`` explicitly.
    """
    if legacy_keras and "tensorflow" not in sys.modules:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    if not _VERBOSE:
        set_verbose(False)
    import tensorflow as tf

    if not _VERBOSE:
        tf.get_logger().setLevel(logging.ERROR)
        tf.autograph.set_verbosity(0)
        try:
            import absl.logging

            absl.logging.set_verbosity(absl.logging.ERROR)
        except ImportError:  # pragma: no cover - absl ships with TensorFlow
            pass
        warnings.filterwarnings("ignore", module=r"(tensorflow|tf_keras|keras|tensorflow_model_optimization)(\.|$)")
    return tf


def import_tf_keras():
    """Import tf_keras (Keras 2), the Keras tfmot works with."""
    import_tensorflow(legacy_keras=True)
    import tf_keras

    return tf_keras


def import_keras3():
    """Import Keras 3 (the ``keras`` package) on the TensorFlow backend."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import_tensorflow()
    import keras

    return keras


def import_tfmot():
    """Import tensorflow_model_optimization (which needs tf_keras)."""
    import_tensorflow(legacy_keras=True)
    import tensorflow_model_optimization as tfmot

    return tfmot

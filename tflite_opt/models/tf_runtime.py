"""The one place that imports TensorFlow and sets TF_USE_LEGACY_KERAS (on the paths that need tf_keras).

TensorFlow is heavy (seconds to import): only conversion and training paths call ``import_tensorflow``;
``--help``, ``inspect`` and ``evaluate`` never do.
"""

from __future__ import annotations

import logging
import os
import sys

from tflite_opt.verbosity import is_verbose, quiet_native, set_verbose


def import_tensorflow(legacy_keras: bool = False):
    """Import and return the ``tensorflow`` module.

    Args:
        legacy_keras: the caller needs tf_keras (tfmot, tf_keras model files). ``TF_USE_LEGACY_KERAS=1`` must be
            set before TensorFlow's first import for ``tf.keras`` to be tf_keras; after that it cannot change, so
            callers reach Keras 3 through ``import keras`` and tf_keras through ``import tf_keras`` explicitly.
    """
    if legacy_keras and "tensorflow" not in sys.modules:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    if not is_verbose():
        set_verbose(False)
    if "tensorflow" in sys.modules:
        import tensorflow as tf
    else:
        with quiet_native():
            import tensorflow as tf

    if not is_verbose():
        tf.get_logger().setLevel(logging.ERROR)
        tf.autograph.set_verbosity(0)
        try:
            import absl.logging

            absl.logging.set_verbosity(absl.logging.ERROR)
        except ImportError:  # pragma: no cover - absl ships with TensorFlow
            pass
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

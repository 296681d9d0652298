"""The one place that imports TensorFlow, sets TF_USE_LEGACY_KERAS and silences TensorFlow's logs.

TensorFlow is heavy (seconds to import): only conversion and training paths call ``import_tensorflow``;
``--help``, ``inspect`` and ``evaluate`` never do.
"""

from __future__ import annotations

import contextlib
import io
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
    if "tensorflow" in sys.modules:
        import tensorflow as tf
    else:
        with quiet_native():
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


@contextlib.contextmanager
def quiet_native():
    """Silence what TensorFlow's C++ code writes to file descriptors 1 and 2 for the duration (unless ``-v``).

    The converter and calibrator print status lines ("fully_quantize: ...") and absl logs straight to the file
    descriptors, past ``TF_CPP_MIN_LOG_LEVEL``. stdout carries our data (``--format json > report.json``) and
    stderr our progress and errors, so both must stay clean. Python-level writes to ``sys.stderr`` keep reaching
    the terminal: ``sys.stderr`` is pointed at a duplicate of the original descriptor.
    With ``-v`` stdout noise goes to stderr instead.
    """
    if _VERBOSE:
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError):
            pass
    try:
        saved_out, saved_err = os.dup(1), os.dup(2)
    except OSError:  # no real descriptors (embedded use)
        with contextlib.redirect_stdout(io.StringIO()):
            yield
        return
    sink = os.open(os.devnull, os.O_WRONLY)
    replacement_err = None
    try:
        if _is_fd(sys.stderr, 2):
            replacement_err = os.fdopen(os.dup(saved_err), "w", buffering=1)
        os.dup2(sink, 1)
        os.dup2(sink, 2)
        with contextlib.ExitStack() as stack:
            stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
            if replacement_err is not None:
                stack.enter_context(contextlib.redirect_stderr(replacement_err))
            yield
    finally:
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        for fd in (saved_out, saved_err, sink):
            os.close(fd)
        if replacement_err is not None:
            replacement_err.close()


def _is_fd(stream, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, ValueError, OSError):
        return False

"""How much of TensorFlow's and LiteRT's own output reaches the user: ``-v`` shows it, the default hides it.

No TensorFlow import here: the LiteRT-only paths (``inspect``, ``evaluate``) silence the XNNPACK banner with it.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys

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


def hide_library_warnings() -> None:
    """Hide the Python warnings TensorFlow, Keras and tfmot raise (deprecations, tracing notes) for this process.

    Called once by the CLI, which owns the process; library code never changes the warnings filters.
    """
    import warnings

    warnings.filterwarnings("ignore", module=r"(tensorflow|tf_keras|keras|tensorflow_model_optimization)(\.|$)")


def is_verbose() -> bool:
    return _VERBOSE


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


def silence_native_stderr() -> None:
    """From now on, send what native code writes to file descriptor 2 to /dev/null (unless ``-v``); Python's
    ``sys.stderr`` keeps reaching the terminal through a duplicate of the descriptor. stdout is untouched.

    For a multi-worker run, whose gRPC and coordination-service threads log at any time, until the very end of
    the process (a worker that outlives the coordination leader logs failed heartbeats as it exits). Called by
    the CLI, which owns the process; does nothing when ``sys.stderr`` is not descriptor 2 (embedded use, tests).
    """
    if _VERBOSE or not _is_fd(sys.stderr, 2):
        return
    try:
        sys.stderr.flush()
        visible = os.dup(2)
    except (OSError, ValueError):
        return
    sink = os.open(os.devnull, os.O_WRONLY)
    sys.stderr = os.fdopen(visible, "w", buffering=1, encoding=sys.stderr.encoding, errors=sys.stderr.errors)
    os.dup2(sink, 2)
    os.close(sink)

"""TensorFlow Lite Micro internals (``tflite-micro`` 0.dev20261023182759): its interpreter wrapper and its log lines.

Two things here depend on how this tflite-micro build works inside, not on a documented API:

* the C++ ``InterpreterWrapper`` (``runtime._runtime``) is created directly. The public ``Interpreter`` does the
  same, but first converts the whole flatbuffer to Python objects to count resource variables, on every
  construction; the arena search builds one interpreter per probe, so the count is made once here instead.
* TFLM says why a model does not load only in log lines (``MicroPrintf`` -> ``vfprintf(stderr)``), never in the
  exception (always "TFLM failed to allocate tensors"). :func:`captured_native_output` collects those lines from
  file descriptors 1 and 2, and the ``parse_*`` functions read them.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tflite_opt.compat import CompatibilityError, require
from tflite_opt.environment import package_version

PACKAGE = "tflite-micro"
WRITTEN_FOR = "0.dev20261023182759"
WRAPPER_METHODS = (
    "SetInputTensor",
    "Invoke",
    "GetOutputTensor",
    "GetInputTensorDetails",
    "GetOutputTensorDetails",
    "PrintAllocations",
)

_MISSING_OP = re.compile(r"Didn't find op for (?:builtin|custom) opcode '([^']+)'")
_NODE_FAILED = re.compile(r"Node (\S+) \(number \d+\) failed to (prepare|invoke|init)")
_ARENA_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
# Lines TFLM writes when the arena is too small (and only then).
_OUT_OF_ARENA = re.compile(
    r"Failed to (?:resize buffer|allocate|create)|Failed starting model allocation|available \d+|"
    r"missing: \d+|[Aa]rena size is too small"
)
_SOURCE_PREFIX = re.compile(r"^\S+\.(?:cc|h|cpp)(?::\d+)?\s+")


def _require(obj: Any, attribute: str) -> Any:
    return require(obj, attribute, package=PACKAGE, written_for=WRITTEN_FOR)


def runtime_module() -> Any:
    """``tflite_micro.python.tflite_micro.runtime``, or a one-line error saying how to install it."""
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError as exc:
        raise CompatibilityError(
            f"the TensorFlow Lite Micro interpreter is not installed ({exc}); pip install {PACKAGE}=={WRITTEN_FOR}"
        ) from exc
    return runtime


def version() -> str | None:
    """The installed tflite-micro version (``None`` when it is not installed)."""
    return package_version(PACKAGE, "tflite_micro")


def count_resource_variables(content: bytes) -> int:
    """Distinct resource variables (VAR_HANDLE shared names) the interpreter must make room for."""
    return int(runtime_module().count_resource_variables(content))


def interpreter_wrapper(content: bytes, arena_size: int, resource_variables: int) -> Any:
    """A TFLM interpreter wrapper over ``content`` with an arena of ``arena_size`` bytes, tensors allocated.

    Raises:
        RuntimeError: TFLM could not allocate (the reason is in its log, see :func:`captured_native_output`).
        MemoryError: the host could not allocate the arena.
    """
    runtime = runtime_module()
    native = _require(runtime, "_runtime")
    config = _require(_require(native, "PythonInterpreterConfig"), "kAllocationRecording")
    wrapper_type = _require(native, "InterpreterWrapper")
    for method in WRAPPER_METHODS:
        _require(wrapper_type, method)
    # (model, custom op registerers, arena bytes, resource variables, config, alt. decompression memory)
    return wrapper_type(content, [], int(arena_size), int(resource_variables), config, 0)


@dataclass
class NativeLog:
    """What TFLM's C++ code wrote while a :func:`captured_native_output` block ran (filled when it ends)."""

    text: str = ""


@contextlib.contextmanager
def captured_native_output(echo: bool = False) -> Iterator[NativeLog]:
    """Collect what native code writes to file descriptors 1 and 2 for the duration (nothing reaches the user).

    stdout carries our data (``--format json``) and stderr our progress, so TFLM's log lines must not reach
    either; unlike :func:`tflite_opt.verbosity.quiet_native` they are kept, because they are the only place
    that says which op is missing or refused. Python-level writes to ``sys.stderr`` (progress bars on other
    threads) keep reaching the terminal through a duplicate of the original descriptor.

    Args:
        echo: also write the collected text to the original stderr afterwards (``-v``).
    """
    log = NativeLog()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.flush()
    try:
        saved_out, saved_err = os.dup(1), os.dup(2)
    except OSError:  # no real descriptors (embedded use): nothing native can be captured
        yield log
        return
    sink = tempfile.TemporaryFile()
    replacement_err = None
    try:
        if _is_fd(sys.stderr, 2):
            replacement_err = os.fdopen(os.dup(saved_err), "w", buffering=1)
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        with contextlib.ExitStack() as stack:
            stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
            if replacement_err is not None:
                stack.enter_context(contextlib.redirect_stderr(replacement_err))
            yield log
    finally:
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        if replacement_err is not None:
            replacement_err.close()
        sink.seek(0)
        log.text = sink.read().decode("utf-8", "replace")
        sink.close()
        if echo and log.text:
            os.write(2, log.text.encode("utf-8"))


def _is_fd(stream: Any, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, ValueError, OSError):
        return False


def parse_missing_ops(log: str) -> list[str]:
    """Ops TFLM has no kernel for ("Didn't find op for builtin opcode 'GELU'"), in the order logged."""
    return list(dict.fromkeys(_MISSING_OP.findall(log)))


def parse_failed_node(log: str) -> tuple[str, str] | None:
    """``(op, reason)`` of the node that failed to prepare or run, the reason being the line logged before it.

    E.g. ``("CONV_2D", "Hybrid models are not supported on TFLite Micro.")``.
    """
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for number, line in enumerate(lines):
        match = _NODE_FAILED.search(line)
        if match:
            reason = _SOURCE_PREFIX.sub("", lines[number - 1]) if number else f"failed to {match.group(2)}"
            return match.group(1), reason
    return None


def is_out_of_arena(log: str) -> bool:
    """Whether the log says the arena was too small."""
    return bool(_OUT_OF_ARENA.search(log))


def parse_arena_total(log: str) -> int | None:
    """The recording allocator's "Arena allocation total N bytes" (``PrintAllocations``), if logged."""
    match = _ARENA_TOTAL.search(log)
    return int(match.group(1)) if match else None


def first_reason(log: str) -> str:
    """The first log line, without its source-file prefix (for an error message)."""
    for line in log.splitlines():
        if line.strip():
            return _SOURCE_PREFIX.sub("", line.strip())
    return ""

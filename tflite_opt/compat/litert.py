"""LiteRT interpreter internals (``ai_edge_litert`` 2.3): the C++ wrapper behind ``Interpreter``.

The public ``Interpreter`` API describes subgraph 0 only and re-allocates on every signature-runner call;
batched evaluation and latency timing drive the wrapper directly, by subgraph.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tflite_opt.compat import require

if TYPE_CHECKING:  # pragma: no cover
    from ai_edge_litert.interpreter import Interpreter

PACKAGE = "ai-edge-litert"
WRITTEN_FOR = "2.3"
WRAPPER_METHODS = (
    "AllocateTensors",
    "ResizeInputTensor",
    "SetTensor",
    "Invoke",
    "GetTensor",
    "GetSubgraphIndexFromSignature",
)


def _require(obj: Any, attribute: str) -> Any:
    return require(obj, attribute, package=PACKAGE, written_for=WRITTEN_FOR)


def interpreter_wrapper(interpreter: "Interpreter") -> Any:
    """The interpreter's C++ wrapper (``Interpreter._interpreter``), checked for the methods we call."""
    wrapper = _require(interpreter, "_interpreter")
    for method in WRAPPER_METHODS:
        _require(wrapper, method)
    return wrapper


def tensor_details(interpreter: "Interpreter", index: int, subgraph: int) -> dict:
    """``get_tensor_details`` for one tensor of any subgraph (the public API covers subgraph 0 only)."""
    return _require(interpreter, "_get_tensor_details")(index, subgraph)


def signature_list(interpreter: "Interpreter") -> dict:
    """Every signature with its input/output name -> tensor index maps."""
    return _require(interpreter, "_get_full_signature_list")()


def signature_subgraph(interpreter: "Interpreter", key: str) -> int:
    """The subgraph that runs signature ``key``."""
    return int(interpreter_wrapper(interpreter).GetSubgraphIndexFromSignature(key))

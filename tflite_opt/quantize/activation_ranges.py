"""The activation side of int8 attribution, measured on a calibrated float ``.tflite``: which ops read which tensors
(the *output boundary* of an op: the pass-through ops its output flows through and the layers that consume them),
and how concentrated each activation tensor's range is across its channels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.quantize.selective import CalibratedModel
    from tflite_opt.representative_data import Dataset

# Ops that move values per channel (or only reshape them): an outlier range passes through them unchanged.
PASS_THROUGH = frozenset(
    {
        "MAX_POOL_2D",
        "AVERAGE_POOL_2D",
        "PAD",
        "PADV2",
        "MIRROR_PAD",
        "RESHAPE",
        "SQUEEZE",
        "EXPAND_DIMS",
        "RELU",
        "RELU6",
        "RELU_N1_TO_1",
        "RELU_0_TO_1",
        "LEAKY_RELU",
        "RESIZE_NEAREST_NEIGHBOR",
        "RESIZE_BILINEAR",
        "SPACE_TO_DEPTH",
        "DEPTH_TO_SPACE",
        "STRIDED_SLICE",
        "SLICE",
    }
)


@dataclass(frozen=True)
class GraphOp:
    """An op of subgraph 0 with the tensors it reads and writes (indices)."""

    index: int
    op_type: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def read_graph(content: bytes) -> list[GraphOp]:
    """Every op of a ``.tflite`` model's main subgraph (builtin names; custom ops by their code)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    builtin = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    ops = []
    for position, op in enumerate(model.subgraphs[0].operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        number = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        op_type = builtin.get(number, f"BUILTIN_{number}")
        if op_type == "CUSTOM" and code.customCode:
            op_type = code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode)
        inputs = tuple(int(i) for i in (op.inputs if op.inputs is not None else []) if int(i) >= 0)
        outputs = tuple(int(i) for i in (op.outputs if op.outputs is not None else []) if int(i) >= 0)
        ops.append(GraphOp(position, op_type, inputs, outputs))
    return ops


def boundary_ops(graph: Sequence[GraphOp], start: int) -> list[int]:
    """Op ``start``, the pass-through ops its output flows through, and the ops that consume them (indices)."""
    by_index = {op.index: op for op in graph}
    readers: dict[int, list[int]] = {}
    for op in graph:
        for tensor in op.inputs:
            readers.setdefault(tensor, []).append(op.index)
    found = [start]
    frontier = [start]
    while frontier:
        current = by_index[frontier.pop()]
        for tensor in current.outputs:
            for reader in readers.get(tensor, []):
                if reader in found or by_index[reader].op_type in ("QUANTIZE", "DEQUANTIZE"):
                    continue
                found.append(reader)
                if by_index[reader].op_type in PASS_THROUGH:
                    frontier.append(reader)
    return found


def concentration(low: np.ndarray, high: np.ndarray) -> float | None:
    """Largest per-channel range / median per-channel range (dead channels left out of the median)."""
    ranges = np.asarray(high, dtype=np.float64) - np.asarray(low, dtype=np.float64)
    if ranges.size < 2 or not np.all(np.isfinite(ranges)):
        return None
    live = ranges[ranges > 0]
    if live.size == 0:
        return None
    return float(ranges.max() / np.median(live))


def channel_concentrations(calibrated: "CalibratedModel", samples: "Dataset", batch: int = 64) -> dict[str, float]:
    """Every quantizable op's output tensor -> its concentration, measured on the calibrated float model."""
    from tflite_opt.measure.runtime import interpreter_from_bytes

    interpreter = interpreter_from_bytes(
        calibrated.content, xnnpack=False, preserve_all_tensors=True, source="the calibrated model"
    )
    signatures = interpreter.get_signature_list()
    key = "serving_default" if "serving_default" in signatures else next(iter(signatures), None)
    if key is None:
        return {}
    runner = interpreter.get_signature_runner(key)
    index = {d["name"]: d["index"] for d in interpreter.get_tensor_details()}
    tensors = [op.tensor for op in calibrated.ops if op.tensor in index]
    lows: dict[str, np.ndarray] = {}
    highs: dict[str, np.ndarray] = {}
    for inputs in samples.batches(batch):
        runner(**{name: np.asarray(value, dtype=np.float32) for name, value in inputs.items()})
        for name in tensors:
            value = interpreter.get_tensor(index[name])
            if value.ndim < 2 or value.dtype.kind != "f":
                continue
            flat = value.reshape(-1, value.shape[-1])
            low, high = flat.min(axis=0), flat.max(axis=0)
            lows[name] = np.minimum(lows[name], low) if name in lows else low
            highs[name] = np.maximum(highs[name], high) if name in highs else high
    found = {name: concentration(lows[name], highs[name]) for name in lows}
    return {name: value for name, value in found.items() if value is not None}

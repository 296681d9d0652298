"""Small, checked rewrites of a ``.tflite`` flatbuffer (LiteRT's object API, ``ai_edge_litert.tools.flatbuffer_utils``).

Each function takes a mutable ``ModelT`` and returns how many things it changed, so callers can say what they did.
No TensorFlow here: a float ``.tflite`` is prepared for the LiteRT Quantizer, and the quantizer's output tidied, with
LiteRT and NumPy only.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import numpy as np

DEFAULT_SIGNATURE = "serving_default"
# BuiltinOperator codes above this live only in ``builtin_code``; ``deprecated_builtin_code`` then holds 127.
PLACEHOLDER_FOR_GREATER_OP_CODES = 127
FLOAT16, FLOAT32 = 1, 0  # schema TensorType values


@functools.lru_cache(maxsize=1)
def builtin_names() -> dict[int, str]:
    """BuiltinOperator code -> name (``CONV_2D``), from LiteRT's generated schema."""
    from ai_edge_litert.schema_py_generated import BuiltinOperator

    return {value: name for name, value in vars(BuiltinOperator).items() if not name.startswith("_")}


def builtin_code(name: str) -> int:
    return next(code for code, op in builtin_names().items() if op == name)


def read(content: bytes) -> Any:
    """The model as a mutable ``ModelT`` (buffers are views on ``content`` until replaced)."""
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(content))


def write(model: Any) -> bytes:
    from ai_edge_litert.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def op_name(model: Any, op: Any) -> str:
    """The op's builtin name, or its custom code."""
    code = model.operatorCodes[op.opcodeIndex]
    number = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    name = builtin_names().get(number, f"BUILTIN_{number}")
    if name == "CUSTOM" and code.customCode:
        custom = code.customCode
        return custom.decode("utf-8", "replace") if isinstance(custom, bytes) else str(custom)
    return name


def tensor_name(tensor: Any) -> str:
    name = tensor.name
    if isinstance(name, bytes):
        return name.decode("utf-8", "replace")
    return name or ""


def has_data(model: Any, tensor: Any) -> bool:
    """Whether a tensor is a constant (its buffer holds data)."""
    if not 0 < tensor.buffer < len(model.buffers):
        return False
    data = model.buffers[tensor.buffer].data
    return data is not None and len(data) > 0


def normalize_operator_codes(model: Any) -> int:
    """Put every operator code in the current form: the real op in ``builtin_code``.

    Files written before the extended builtin codes (TFLite < 2.4, e.g. MediaPipe-era models) hold the op only in
    ``deprecated_builtin_code`` and leave ``builtin_code`` at 0 (ADD). Runtimes read ``max`` of the two; the LiteRT
    Quantizer reads ``builtin_code`` only, sees nothing but ADDs, and returns the file unchanged.

    Returns:
        The number of operator codes rewritten.
    """
    changed = 0
    for code in model.operatorCodes or []:
        number = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        deprecated = min(number, PLACEHOLDER_FOR_GREATER_OP_CODES)
        if code.builtinCode != number or code.deprecatedBuiltinCode != deprecated:
            code.builtinCode, code.deprecatedBuiltinCode = number, deprecated
            changed += 1
    return changed


def add_missing_signature(model: Any, key: str = DEFAULT_SIGNATURE) -> bool:
    """Give a model without any SignatureDef one for subgraph 0, named after its input/output tensors.

    Returns:
        Whether a signature was added.
    """
    from ai_edge_litert import schema_py_generated as schema

    if model.signatureDefs:
        return False
    subgraph = model.subgraphs[0]

    def tensor_map(indices: Iterable[int]) -> list:
        maps = []
        for index in indices:
            entry = schema.TensorMapT()
            entry.name = tensor_name(subgraph.tensors[index])
            entry.tensorIndex = int(index)
            maps.append(entry)
        return maps

    signature = schema.SignatureDefT()
    signature.signatureKey = key
    signature.subgraphIndex = 0
    signature.inputs = tensor_map(subgraph.inputs or [])
    signature.outputs = tensor_map(subgraph.outputs or [])
    model.signatureDefs = [signature]
    return True


def fold_float16_weights(model: Any) -> int:
    """Replace ``float16 constant -> DEQUANTIZE`` by the float32 constant (exact: every float16 is a float32).

    The converter's float16 mode stores weights this way; the quantizer sees only the DEQUANTIZE ops' float32
    outputs, which are not constants, and quantizes nothing. The float16 tensors and buffers are dropped.

    Returns:
        The number of weight tensors folded.
    """
    folded = 0
    for subgraph in model.subgraphs:
        graph_outputs = set(subgraph.outputs or [])
        kept = []
        for op in subgraph.operators:
            source = subgraph.tensors[op.inputs[0]] if op.inputs is not None and len(op.inputs) == 1 else None
            if (
                op_name(model, op) == "DEQUANTIZE"
                and source is not None
                and source.type == FLOAT16
                and has_data(model, source)
                and op.outputs[0] not in graph_outputs
            ):
                values = np.frombuffer(bytes(model.buffers[source.buffer].data), dtype=np.float16)
                target = subgraph.tensors[op.outputs[0]]
                target.buffer = _new_buffer(model, values.astype(np.float32).tobytes())
                target.type = FLOAT32
                folded += 1
                continue
            kept.append(op)
        subgraph.operators = kept
    if folded:
        drop_unused_tensors(model)
    return folded


def feed_shape_ops_from_quantized(model: Any) -> int:
    """Let SHAPE ops read the int8 tensor instead of a DEQUANTIZE of it (SHAPE reads dimensions, not values).

    The LiteRT Quantizer does not know SHAPE, so in a static int8 model it dequantizes SHAPE's input back to
    float: the file is then not integer-only (Keras 3's Flatten computes its target shape with SHAPE). DEQUANTIZE
    ops left without a consumer are removed.

    Returns:
        The number of SHAPE ops rewired.
    """
    rewired = 0
    for subgraph in model.subgraphs:
        producer = {out: op for op in subgraph.operators if op.outputs is not None for out in op.outputs}
        for op in subgraph.operators:
            if op_name(model, op) != "SHAPE" or not op.inputs:
                continue
            source = producer.get(op.inputs[0])
            if source is not None and op_name(model, source) == "DEQUANTIZE":
                op.inputs = [source.inputs[0], *list(op.inputs)[1:]]
                rewired += 1
        if rewired:
            _drop_dead_dequantize(model, subgraph)
    if rewired:
        drop_unused_tensors(model)
    return rewired


def _drop_dead_dequantize(model: Any, subgraph: Any) -> None:
    consumed = {i for op in subgraph.operators if op.inputs is not None for i in op.inputs}
    consumed |= set(subgraph.outputs or [])
    subgraph.operators = [
        op for op in subgraph.operators if not (op_name(model, op) == "DEQUANTIZE" and op.outputs[0] not in consumed)
    ]


def _new_buffer(model: Any, data: bytes) -> int:
    from ai_edge_litert import schema_py_generated as schema

    buffer = schema.BufferT()
    buffer.data = np.frombuffer(data, dtype=np.uint8)
    model.buffers.append(buffer)
    return len(model.buffers) - 1


def drop_unused_tensors(model: Any) -> None:
    """Remove tensors no op, subgraph input/output or signature refers to, then buffers no tensor refers to."""
    for index, subgraph in enumerate(model.subgraphs):
        used = set(subgraph.inputs or []) | set(subgraph.outputs or [])
        for op in subgraph.operators:
            used |= {int(i) for i in (op.inputs if op.inputs is not None else []) if i >= 0}
            used |= {int(i) for i in (op.outputs if op.outputs is not None else []) if i >= 0}
            used |= {int(i) for i in (op.intermediates if op.intermediates is not None else []) if i >= 0}
        for signature in model.signatureDefs or []:
            if signature.subgraphIndex == index:
                used |= {m.tensorIndex for m in (signature.inputs or []) + (signature.outputs or [])}
        order = sorted(used)
        new_index = {old: new for new, old in enumerate(order)}

        def remap(indices):
            return None if indices is None else [new_index[int(i)] if i >= 0 else int(i) for i in indices]

        subgraph.tensors = [subgraph.tensors[i] for i in order]
        subgraph.inputs, subgraph.outputs = remap(subgraph.inputs), remap(subgraph.outputs)
        for op in subgraph.operators:
            op.inputs, op.outputs = remap(op.inputs), remap(op.outputs)
            op.intermediates = remap(op.intermediates)
        for signature in model.signatureDefs or []:
            if signature.subgraphIndex == index:
                for entry in (signature.inputs or []) + (signature.outputs or []):
                    entry.tensorIndex = new_index[entry.tensorIndex]
    _drop_unused_buffers(model)


def _drop_unused_buffers(model: Any) -> None:
    used = {0} | {t.buffer for s in model.subgraphs for t in s.tensors} | {m.buffer for m in model.metadata or []}
    order = sorted(b for b in used if b < len(model.buffers))
    new_index = {old: new for new, old in enumerate(order)}
    model.buffers = [model.buffers[i] for i in order]
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            tensor.buffer = new_index[tensor.buffer]
    for metadata in model.metadata or []:
        metadata.buffer = new_index[metadata.buffer]

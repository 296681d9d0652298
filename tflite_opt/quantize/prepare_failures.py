"""One-line explanations of a quantized file that converts but fails to *prepare* in LiteRT.

The commonest: int16x8 stops at ``kernel_util.cc: no_integer_overflow_from_quantization was not true. Node number
15 (DEPTHWISE_CONV_2D) failed to prepare``. Preparing an op with a fused ReLU6 (or ReLU_N1_TO_1) quantizes the
activation's bound, ``6 / output_scale``, into an int32; when the op's calibrated output range is tiny (the layer
outputs almost nothing on the calibration data: a dead channel group, a BatchNorm that switched it off) that
quotient passes 2^31. int16 scales are 256× finer than int8 ones, so int16x8 overflows first: it needs an output
range above ``6 · 65535 / 2^31 ≈ 1.8e-4``, int8 above ``6 · 255 / 2^31 ≈ 7e-7``.

:func:`explain_prepare_failure` names the layer (from the op's tensor names), the range and what to try;
:func:`check_prepares` runs the check on a converted file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tflite_opt.errors import ConversionError, first_line

_NODE = re.compile(r"Node number (\d+) \(([A-Za-z0-9_]+)\) failed to prepare")
_OVERFLOW = "no_integer_overflow_from_quantization"
INT32_MAX = 2**31 - 1
# ActivationFunctionType -> the bound that prepare quantizes.
FUSED_BOUNDS = {1: ("ReLU", 0.0), 2: ("ReLU_N1_TO_1", 1.0), 3: ("ReLU6", 6.0)}
LEVELS = {"int16": 65535, "int8": 255}


@dataclass(frozen=True)
class FailedNode:
    """What the failing op is."""

    index: int
    op_type: str
    layer: str | None
    scale: float | None
    dtype: str
    activation: str | None
    bound: float | None


def _read_node(content: bytes, index: int, op_type: str) -> FailedNode | None:
    from ai_edge_litert import schema_py_generated as schema

    from tflite_opt.quantize.selective import CalibratedModel, QuantizableOp

    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
        subgraph = model.subgraphs[0]
        operators = subgraph.operators or []
    except Exception:  # noqa: BLE001 - the generated reader raises struct/index errors
        return None
    if not 0 <= index < len(operators):
        return None
    tensors = subgraph.tensors or []
    produced = {int(i) for op in operators for i in (op.outputs if op.outputs is not None else [])}

    def name(i: int) -> str:
        raw = tensors[i].name
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")

    ops = []
    for position, op in enumerate(operators):
        outputs = [int(i) for i in (op.outputs if op.outputs is not None else []) if int(i) >= 0]
        constants = [int(i) for i in (op.inputs if op.inputs is not None else []) if int(i) >= 0 and i not in produced]
        names = tuple(n for n in [name(i) for i in outputs] + [name(i) for i in constants] if n)
        ops.append(QuantizableOp(position, "?", names[0] if names else "", names))
    layer = _layer_name(CalibratedModel(content=b"", ops=ops), ops[index])
    op = operators[index]
    output = tensors[int(op.outputs[0])] if op.outputs is not None and len(op.outputs) else None
    quantization = getattr(output, "quantization", None)
    scales = getattr(quantization, "scale", None)
    scale = float(scales[0]) if scales is not None and len(scales) else None
    dtype = {schema.TensorType.INT16: "int16", schema.TensorType.INT8: "int8"}.get(getattr(output, "type", None), "?")
    fused = getattr(op.builtinOptions, "fusedActivationFunction", None)
    activation, bound = FUSED_BOUNDS.get(int(fused), (None, None)) if fused is not None else (None, None)
    return FailedNode(index, op_type, layer, scale, dtype, activation, bound)


_WEIGHT_LEAVES = ("depthwise", "convolution", "MatMul", "Conv2D", "DepthwiseConv2dNative", "BiasAdd")


def _layer_name(calibrated, op) -> str | None:
    """The layer that owns the op's weights (``dw`` of ``m/dw_1/depthwise``), with the layers fused into it."""
    convention = calibrated.convention
    scopes: list[str] = []
    owner = None
    for name in op.names:
        for segment in name.split(";"):
            scope = convention.layer_scope(segment)
            if scope is None:
                continue
            layer = convention.layer_name(scope)
            if layer not in scopes:
                scopes.append(layer)
            if owner is None and segment.rsplit("/", 1)[-1] in _WEIGHT_LEAVES:
                owner = layer
    if owner is None:
        owner, _ = calibrated.layer_label(op)
    if owner is None:
        return None
    fused = [layer for layer in scopes if layer != owner]
    return f"{owner} (+{', '.join(fused)})" if fused else owner


def explain_prepare_failure(message: str, content: bytes, mode: str = "int16x8") -> str:
    """One line: which layer failed to prepare, what overflowed, what to try (else the message's first line).

    Args:
        message: the interpreter's error (``RuntimeError`` text of ``allocate_tensors``).
        content: the file that failed.
        mode: the mode that made it, for the message.
    """
    match = _NODE.search(message)
    if match is None or _OVERFLOW not in message:
        return f"the {mode} file does not prepare in LiteRT: {first_line(message)}"
    node = _read_node(content, int(match[1]), match[2])
    where = f"{match[2]}, node {match[1]}"
    if node is None or node.scale is None or node.bound is None or node.bound == 0.0:
        return (
            f"the {mode} file does not prepare in LiteRT: {where} overflows int32 while quantizing its "
            "activation bounds; calibrate with data that exercises it, or try --mode int8 or dynamic"
        )
    layer = f"layer {node.layer} ({where})" if node.layer else f"node {match[1]} ({match[2]})"
    levels = LEVELS.get(node.dtype, LEVELS["int16"])
    output_range = node.scale * levels
    needed = node.bound * levels / INT32_MAX
    int8_fits = node.dtype == "int16" and output_range > node.bound * LEVELS["int8"] / INT32_MAX
    other = "--mode int8 (its coarser scale fits)" if int8_fits else "--mode dynamic or float16"
    return (
        f"{mode} cannot run: {layer} has a calibrated output range of only {output_range:.2g}, so its fused "
        f"{node.activation} bound ({node.bound:g}) is {node.bound / node.scale:.2g} steps of the {node.dtype} scale "
        f"and overflows int32 (the range must exceed {needed:.1g}); calibrate with data that activates it, or use "
        f"{other}"
    )


def check_prepares(content: bytes, mode: str = "int16x8") -> None:
    """Allocate the file with LiteRT's builtin kernels (what every runtime prepares).

    Raises:
        ConversionError: it does not prepare; the message is :func:`explain_prepare_failure`'s line.
    """
    from tflite_opt.measure.runtime import interpreter_from_bytes

    try:
        interpreter_from_bytes(content, xnnpack=False, source=f"the {mode} model").allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        raise ConversionError(explain_prepare_failure(str(exc), content, mode)) from exc

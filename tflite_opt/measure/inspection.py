"""What is inside a ``.tflite`` file: tensors, ops and the dtypes they run in, weights, integer-only or not.

The flatbuffer is read with :mod:`tflite_opt.measure.flatbuffer` (a small reader with the method names of
LiteRT's generated schema, without the ~20 ms import of ``ai_edge_litert.schema_py_generated``) rather than from
the interpreter's node list: once XNNPACK is applied the interpreter adds ``DELEGATE`` nodes, while the file holds
exactly the ops the converter wrote. The interpreter is still created first, because its verifier is what
rejects truncated or damaged files with a clear message. No TensorFlow import here.

Definitions used throughout (the README repeats them):

* **weights**: constant tensors (tensors whose buffer holds data). ``weight_bytes`` sums their buffers by dtype
  (shared buffers counted once); the zero share (``sparsity``) counts only kernels — constant tensors of rank
  >= 2 with a float or 8/16-bit integer dtype — since biases and shape constants are never pruned. A quantized
  weight is zero when it equals its zero point. Sparse-encoded kernels count against their dense shape.
* **the dtype an op runs in**: the dtype of its first non-constant input, plus ``(int8 weights)`` when its
  kernel is stored in another type (dynamic-range and int16x8 ops); conversions (``QUANTIZE``,
  ``DEQUANTIZE``, ``CAST``) show ``from->to``.
* **integer-only**: every tensor that an op reads or writes, and every model input/output, is an integer or bool
  tensor. ``QUANTIZE``/``DEQUANTIZE`` at float inputs/outputs therefore make a model *not* integer-only.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tflite_opt.errors import EvaluationError
from tflite_opt.measure import flatbuffer
from tflite_opt.specs import TensorSpec

# schema TensorType enum -> NumPy-style dtype names
TENSOR_TYPE_NAMES = {
    0: "float32",
    1: "float16",
    2: "int32",
    3: "uint8",
    4: "int64",
    5: "string",
    6: "bool",
    7: "int16",
    8: "complex64",
    9: "int8",
    10: "float64",
    11: "complex128",
    12: "uint64",
    13: "resource",
    14: "variant",
    15: "uint32",
    16: "uint16",
    17: "int4",
    18: "bfloat16",
    19: "int2",
    20: "uint4",
    21: "float8_e4m3fn",
    22: "float8_e5m2",
}
INTEGER_DTYPES = {
    "int2",
    "int4",
    "uint4",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "bool",
}
FLOAT_DTYPES = {"float16", "float32", "float64", "bfloat16", "float8_e4m3fn", "float8_e5m2"}
# Kernel dtypes counted as "weights" for sparsity (int32/int64 are biases, shapes and indices).
KERNEL_DTYPES = {"float16", "float32", "float64", "bfloat16", "int8", "uint8", "int16", "int4", "uint4", "int2"}
CONVERSION_OPS = {"QUANTIZE", "DEQUANTIZE", "CAST"}
_NUMPY_VIEW = {
    "float16": np.float16,
    "float32": np.float32,
    "float64": np.float64,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
}


@dataclass
class OpSummary:
    """How often an op occurs and the dtypes its instances run in.

    Attributes:
        op: builtin op name (``CONV_2D``) or the custom code of a custom op.
        count: number of instances across all subgraphs.
        dtypes: dtype label -> number of instances running in it, e.g. ``{"int8": 2}``.
    """

    op: str
    count: int
    dtypes: dict[str, int]


@dataclass
class ModelInspection:
    """The contents of one ``.tflite`` file.

    Attributes:
        path: where the file came from (for display).
        size_bytes: file size.
        sha256: hex digest of the file.
        signature: the signature key the inputs/outputs belong to (``None`` = tensor names).
        inputs: model inputs by signature name, with stored dtype, scale and zero point.
        outputs: model outputs, likewise.
        ops: op histogram, most frequent first.
        weight_bytes: dtype -> bytes of constant tensors stored in that dtype.
        weight_tensors: dtype -> number of constant tensors of that dtype.
        sparsity: share of zero values among kernel weights, ``None`` if the model has no kernels.
        integer_only: every tensor ops touch is an integer/bool tensor (see module docstring).
        mode: the post-training mode the file looks like (fp32, dynamic, float16, int8, int16x8) or ``None``.
        subgraphs: number of subgraphs.
    """

    path: str
    size_bytes: int
    sha256: str
    signature: str | None
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    ops: list[OpSummary]
    weight_bytes: dict[str, int]
    weight_tensors: dict[str, int]
    sparsity: float | None
    integer_only: bool
    mode: str | None
    subgraphs: int = 1
    warnings: list[str] = field(default_factory=list)

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the ``inspect --format json`` output)."""

        def tensor(spec: TensorSpec) -> dict[str, Any]:
            return {
                "name": spec.name,
                "shape": [None if d is None else int(d) for d in spec.shape],
                "dtype": spec.dtype,
                "scale": spec.scale,
                "zero_point": spec.zero_point,
            }

        return {
            "path": self.path,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "signature": self.signature,
            "inputs": [tensor(s) for s in self.inputs],
            "outputs": [tensor(s) for s in self.outputs],
            "ops": [{"op": o.op, "count": o.count, "dtypes": dict(o.dtypes)} for o in self.ops],
            "weight_bytes": dict(self.weight_bytes),
            "weight_tensors": dict(self.weight_tensors),
            "sparsity": self.sparsity,
            "integer_only": self.integer_only,
            "mode": self.mode,
            "subgraphs": self.subgraphs,
        }


@dataclass
class _Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    buffer: int
    constant: bool


def _buffer_bytes(model, index: int, content: bytes) -> memoryview | None:
    """The data of buffer ``index``: inline in the flatbuffer, or (files > 2 GB) at an offset in the file."""
    buffer = model.Buffers(index)
    if buffer is None:
        return None
    offset, size = int(buffer.Offset()), int(buffer.Size())
    if offset > 1 and size > 0:
        return memoryview(content)[offset : offset + size]
    if buffer.DataLength() == 0:
        return None
    data = buffer.DataAsNumpy()
    return memoryview(data) if isinstance(data, np.ndarray) else None


def analyze(content: bytes, *, source: str = "model") -> dict[str, Any]:
    """Parse the flatbuffer: op histogram, weights, sparsity, integer-only, mode.

    ``content`` must already have passed the interpreter's verifier (:func:`inspect_model` does that).

    Returns:
        dict with keys ``ops``, ``weight_bytes``, ``weight_tensors``, ``sparsity``, ``integer_only``, ``mode``,
        ``subgraphs``.
    """
    try:
        model = flatbuffer.Model.GetRootAs(content, 0)
        return _analyze(model, content)
    except EvaluationError:
        raise
    except Exception as exc:  # noqa: BLE001 - a file the verifier accepted but the flatbuffer reader cannot walk
        raise EvaluationError(f"cannot read the flatbuffer of {source}: {exc}") from exc


def _analyze(model, content: bytes) -> dict[str, Any]:
    tally = _Tally(model, content)
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        tensors = [tally.add_tensor(subgraph.Tensors(t)) for t in range(subgraph.TensorsLength())]
        tally.add_io(subgraph, tensors)
        for o in range(subgraph.OperatorsLength()):
            tally.add_op(subgraph.Operators(o), tensors)

    ops = [
        OpSummary(name, sum(counter.values()), dict(sorted(counter.items())))
        for name, counter in tally.histogram.items()
    ]
    ops.sort(key=lambda o: (-o.count, o.op))
    return {
        "ops": ops,
        "weight_bytes": dict(sorted(tally.weight_bytes.items())),
        "weight_tensors": dict(sorted(tally.weight_tensors.items())),
        "sparsity": (tally.zero_count / tally.kernel_count) if tally.kernel_count else None,
        "integer_only": tally.integer_only,
        "mode": _quantizer_mode(ops, tally.weight_bytes) or _infer_mode(tally.heavy_labels, tally.has_float16_weights),
        "subgraphs": int(model.SubgraphsLength()),
    }


LOW_BIT_DTYPES = ("int4", "uint4", "int2")


def _quantizer_mode(ops: list[OpSummary], weight_bytes: dict[str, int]) -> str | None:
    """The LiteRT Quantizer's modes, which the activation/kernel rule below cannot tell: int4 weights (run by the
    kernels, or only stored and DEQUANTIZEd: weight-only) and int8 weight-only files (int8 constants behind
    DEQUANTIZE, float compute). Their float16 block scales must not read as a float16 file."""
    low_bit = any(weight_bytes.get(dtype) for dtype in LOW_BIT_DTYPES)
    dequantized = {label.split("->")[0] for o in ops if o.op == "DEQUANTIZE" for label in o.dtypes}
    if low_bit:
        return "int4-weights" if dequantized & set(LOW_BIT_DTYPES) else "int4"
    computes_int8 = any(("int8" in label) for o in ops if o.op not in CONVERSION_OPS for label in o.dtypes)
    if weight_bytes.get("int8") and "int8" in dequantized and not computes_int8:
        return "int8-weights"
    return None


class _Tally:
    """What :func:`analyze` counts, tensor by tensor and op by op over every subgraph."""

    def __init__(self, model, content: bytes) -> None:
        self.model = model
        self.content = content
        self.op_names = flatbuffer.operator_names(model)
        self._buffers: dict[int, memoryview | None] = {}
        self.histogram: dict[str, Counter] = {}
        self.weight_bytes: Counter = Counter()
        self.weight_tensors: Counter = Counter()
        self.counted_buffers: set[int] = set()
        self.zero_count = 0
        self.kernel_count = 0
        self.integer_only = True
        self.heavy_labels: list[tuple[str, str | None]] = []  # (activation dtype, weight dtype) of ops with kernels
        self.has_float16_weights = False

    def data_of(self, buffer_index: int) -> memoryview | None:
        if buffer_index not in self._buffers:
            inside = 0 < buffer_index < self.model.BuffersLength()
            self._buffers[buffer_index] = _buffer_bytes(self.model, buffer_index, self.content) if inside else None
        return self._buffers[buffer_index]

    def add_tensor(self, tensor) -> _Tensor:
        dtype = TENSOR_TYPE_NAMES.get(int(tensor.Type()), f"type{tensor.Type()}")
        shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
        buffer_index = int(tensor.Buffer())
        data = self.data_of(buffer_index)
        if data is not None:
            self.weight_tensors[dtype] += 1
            if buffer_index not in self.counted_buffers:
                self.counted_buffers.add(buffer_index)
                self.weight_bytes[dtype] += len(data)
            if dtype == "float16":
                self.has_float16_weights = True
            if len(shape) >= 2 and dtype in KERNEL_DTYPES:
                zeros, total = _count_zeros(data, dtype, tensor.Quantization())
                if tensor.Sparsity() is not None:
                    # Sparse-encoded (EXPERIMENTAL_SPARSITY) weights store only the non-zero blocks:
                    # every dense element that is not stored is a zero.
                    dense = int(np.prod(shape))
                    zeros, total = dense - (total - zeros), dense
                self.zero_count += zeros
                self.kernel_count += total
        name = (tensor.Name() or b"").decode("utf-8", "replace")
        return _Tensor(name, dtype, shape, buffer_index, data is not None)

    def add_io(self, subgraph, tensors: list[_Tensor]) -> None:
        io_tensors = [int(i) for i in subgraph.InputsAsNumpy()] if subgraph.InputsLength() else []
        io_tensors += [int(i) for i in subgraph.OutputsAsNumpy()] if subgraph.OutputsLength() else []
        for index in io_tensors:
            if index >= 0 and tensors[index].dtype not in INTEGER_DTYPES:
                self.integer_only = False

    def add_op(self, op, tensors: list[_Tensor]) -> None:
        code = int(op.OpcodeIndex())
        name = self.op_names[code] if code < len(self.op_names) else "UNKNOWN"
        inputs = [tensors[int(i)] for i in (op.InputsAsNumpy() if op.InputsLength() else []) if int(i) >= 0]
        outputs = [tensors[int(i)] for i in (op.OutputsAsNumpy() if op.OutputsLength() else []) if int(i) >= 0]
        if any(t.dtype not in INTEGER_DTYPES for t in inputs + outputs):
            self.integer_only = False
        label, activation, weight = _op_label(name, inputs, outputs)
        self.histogram.setdefault(name, Counter())[label] += 1
        if weight is not None or any(t.constant and len(t.shape) >= 2 and t.dtype in KERNEL_DTYPES for t in inputs):
            self.heavy_labels.append((activation, weight))


def _op_label(name: str, inputs: list[_Tensor], outputs: list[_Tensor]) -> tuple[str, str, str | None]:
    """(label, activation dtype, differing kernel dtype) of one op instance."""
    variable = [t for t in inputs if not t.constant]
    if variable:
        activation = variable[0].dtype
    elif outputs:
        activation = outputs[0].dtype
    elif inputs:
        activation = inputs[0].dtype
    else:
        activation = "none"
    if name in CONVERSION_OPS and inputs and outputs:
        return f"{inputs[0].dtype}->{outputs[0].dtype}", activation, None
    kernels = [t.dtype for t in inputs if t.constant and len(t.shape) >= 2 and t.dtype in KERNEL_DTYPES]
    weight = next((d for d in kernels if d != activation), None)
    if weight is not None:
        return f"{activation} ({weight} weights)", activation, weight
    return activation, activation, None


def _count_zeros(data: memoryview | None, dtype: str, quantization) -> tuple[int, int]:
    if data is None or dtype not in _NUMPY_VIEW:
        return 0, 0
    values = np.frombuffer(data, dtype=_NUMPY_VIEW[dtype])
    if dtype in FLOAT_DTYPES:
        return int(np.count_nonzero(values == 0)), int(values.size)
    zero_points = None
    if quantization is not None and quantization.ZeroPointLength():
        zero_points = quantization.ZeroPointAsNumpy()
    if zero_points is None or len(zero_points) == 0 or not np.any(zero_points):
        return int(np.count_nonzero(values == 0)), int(values.size)
    # Asymmetric per-tensor weights (old uint8 models): zero is the zero point. Per-axis asymmetric weights
    # do not occur in converter output; treat their first zero point as representative.
    return int(np.count_nonzero(values == int(zero_points[0]))), int(values.size)


def _infer_mode(heavy: list[tuple[str, str | None]], has_float16_weights: bool) -> str | None:
    if not heavy:
        return None
    activations = {a for a, _ in heavy}
    weights = {w for _, w in heavy if w is not None}
    if "int16" in activations:
        return "int16x8"
    if activations & {"int8", "uint8"}:
        return "int8"
    if activations & FLOAT_DTYPES and weights & {"int8", "uint8"}:
        return "dynamic"
    if has_float16_weights:
        return "float16"
    if activations <= FLOAT_DTYPES:
        return "fp32"
    return None


def file_digest(content: bytes) -> str:
    """sha256 hex digest of a file's bytes."""
    return hashlib.sha256(content).hexdigest()


def inspect_model(content: bytes, *, path: str = "model", signature: str | None = None) -> ModelInspection:
    """Describe one ``.tflite`` model.

    Args:
        content: the file's bytes (see :func:`tflite_opt.measure.runtime.read_model_bytes`).
        path: shown in messages and in the result.
        signature: signature key whose inputs/outputs to list (default ``serving_default``/the first).

    Raises:
        EvaluationError: the file is not a valid ``.tflite`` model.
    """
    from tflite_opt.measure import runtime

    info = runtime.load_signature(content, signature=signature, source=path)
    details = analyze(content, source=path)
    return ModelInspection(
        path=path,
        size_bytes=len(content),
        sha256=file_digest(content),
        signature=info.key,
        inputs=info.input_specs,
        outputs=info.output_specs,
        **details,
    )

"""Selective int8 quantization: calibrate once, then quantize with chosen layers, tensors or op types kept float.

This is the TFLite quantization debugger's "selective quantization" (``QuantizationDebugOptions`` with
``denylisted_nodes`` / ``denylisted_ops``): the model is converted with calibration only
(calibrate-only, exactly what ``QuantizationDebugger(converter=...)`` does), and the calibrated
float model is quantized by the MLIR quantizer (``mlir_quantize``) with the denylists. Calibration, the slow
part, runs once; every quantization from it (plain int8, int8 with some layers in float, the debugger's
instrumented model) takes a fraction of a second. ``tflite-opt auto`` relies on that.

Naming what to keep in float (``--keep-float NAME``), in this order:

* an op type as ``inspect`` prints it (``MEAN``, ``FULLY_CONNECTED``): every op of that type
  (``denylisted_ops``; in lower case too, when no layer or tensor has that name);
* an op's output tensor name as ``debug`` prints it: that op (``denylisted_nodes``);
* a layer name: every op whose tensor names carry that layer's name scope. An op's names are its output
  tensor's and those of its constant inputs (weights, bias), so a layer is found even when its output tensor was
  renamed to the signature output (``StatefulPartitionedCall:0``), and every layer fused into an op (Conv2D +
  BatchNorm + ReLU) finds that op.

Layer scopes follow the exporter's convention (:class:`ScopeConvention`). tf_keras writes
``<model>/<layer>/MatMul``. A Keras 3 export traces the model again, so TensorFlow uniquifies every scope with a
numeric suffix: ``<model>_1/<layer>_1/MatMul`` — and, with Keras' automatic names, layer ``dense`` becomes
``dense_1`` while layer ``dense_1`` becomes ``dense_1_2``. So when every layer scope carries a suffix, a layer
name matches the scopes that are that name plus exactly one ``_<digits>``; otherwise names match as they are.
Either way a name that fits no scope that way gets the other reading as a fallback.

The MLIR quantizer silently ignores names it does not know; here a name that matches nothing is a
``ConversionError`` listing the closest names.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from tflite_opt.compat import tf as compat_tf
from tflite_opt.errors import ConversionError, first_line
from tflite_opt.modes import IoType, Mode
from tflite_opt.verbosity import quiet_native

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.progress import Progress
    from tflite_opt.quantize.options import ConversionOptions
    from tflite_opt.representative_data import Dataset

# Ops that only move data between quantized tensors or carry no arithmetic worth keeping in float.
BOUNDARY_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})
_SUFFIX_RE = re.compile(r"^(?P<base>.+)(?P<suffix>_\d+)$")


@dataclass(frozen=True)
class ScopeConvention:
    """How a model's tensor names spell its layers.

    Attributes:
        root: the outermost scope nearly every name starts with (the model's own name), or ``None``.
        suffixed: every layer scope carries a uniquifying ``_<digits>`` suffix (Keras 3 exports).
    """

    root: str | None = None
    suffixed: bool = False

    def layer_scope(self, segment: str) -> str | None:
        """The layer-level scope of one name: the first component under the root (``m/dense/MatMul`` -> dense)."""
        parts = segment.split("/")
        if self.root is not None and len(parts) >= 3 and parts[0] == self.root:
            return parts[1] or None
        if len(parts) >= 2:
            return parts[0] or None
        return None

    def layer_name(self, scope: str) -> str:
        """The layer name a scope stands for (its uniquifying suffix removed)."""
        match = _SUFFIX_RE.match(scope) if self.suffixed else None
        return match["base"] if match else scope


def detect_convention(ops: Sequence["QuantizableOp"]) -> ScopeConvention:
    """Find the root scope and whether layer scopes are suffixed (see the module docstring)."""
    segments = [segment for op in ops for name in op.names for segment in name.split(";")]
    deep = [segment.split("/") for segment in segments if segment.count("/") >= 2]
    root = None
    if deep:
        first, count = Counter(parts[0] for parts in deep).most_common(1)[0]
        if count * 2 >= len(deep):
            root = first
    convention = ScopeConvention(root=root)
    scopes = {convention.layer_scope(segment) for segment in segments} - {None}
    if scopes and all(_SUFFIX_RE.match(scope) for scope in scopes):
        return ScopeConvention(root=root, suffixed=True)
    return convention


@dataclass(frozen=True)
class QuantizableOp:
    """One op of the calibrated model that produces a float tensor (so the quantizer decides its type).

    Attributes:
        index: position in subgraph 0.
        op_type: builtin name, e.g. ``FULLY_CONNECTED`` (custom ops: their custom code).
        tensor: name of its (first) output tensor: the key of ``denylisted_nodes``.
        names: every tensor name the op carries: its outputs, then its constant inputs (weights, bias).
    """

    index: int
    op_type: str
    tensor: str
    names: tuple[str, ...]

    def components(self, root: str | None = None) -> tuple[str, ...]:
        """Scope components of every name, leaf op names and ``root`` left out, in order of appearance."""
        found: list[str] = []
        for name in self.names:
            for segment in name.split(";"):
                parts = segment.split("/")[:-1]
                if root is not None and parts[:1] == [root]:
                    parts = parts[1:]
                for part in parts:
                    if part and part not in found:
                        found.append(part)
        return tuple(found)

    def primary_scope(self, convention: ScopeConvention) -> str | None:
        """The layer scope the op most likely belongs to: that of its weights, else of its output tensor.

        A fused op (Conv2D + BatchNorm + ReLU) is named after its last layer (``relu1/Relu;bn1/...``) while its
        weights carry the scope of the layer that owns them (``conv1/convolution``).
        """
        for name in (*self.names[1:], self.names[0]):
            scope = convention.layer_scope(name.split(";")[0])
            if scope is not None:
                return scope
        return None


@dataclass
class CalibratedModel:
    """A model converted with calibration statistics, ready to be quantized any number of ways.

    Attributes:
        content: the calibrated float ``.tflite`` (it carries min/max statistics; not meant to be deployed).
        ops: the ops whose type the quantizer decides, in graph order.
        disable_per_channel: the converter's per-channel setting (the quantizer must use the same).
        num_samples: calibration samples used.
    """

    content: bytes
    ops: list[QuantizableOp]
    disable_per_channel: bool = False
    num_samples: int = 0

    @property
    def op_types(self) -> list[str]:
        return sorted({op.op_type for op in self.ops})

    def op_for_tensor(self, tensor: str) -> QuantizableOp | None:
        """The op whose output tensor is called ``tensor``."""
        return next((op for op in self.ops if op.tensor == tensor), None)

    @cached_property
    def convention(self) -> ScopeConvention:
        return detect_convention(self.ops)

    @cached_property
    def _components(self) -> dict[int, tuple[str, ...]]:
        return {op.index: op.components(self.convention.root) for op in self.ops}

    @cached_property
    def _layer_ops_cache(self) -> dict[str, list[QuantizableOp]]:
        return {}

    def layer_ops(self, name: str) -> list[QuantizableOp]:
        """The ops a layer called ``name`` took part in (empty when no scope fits; module docstring)."""
        cache = self._layer_ops_cache
        if name not in cache:
            components = self._components
            readings = [lambda c: c == name]
            suffixed = lambda c: (m := _SUFFIX_RE.match(c)) is not None and m["base"] == name  # noqa: E731
            readings.insert(0 if self.convention.suffixed else 1, suffixed)
            cache[name] = []
            for reading in readings:
                found = [op for op in self.ops if any(reading(c) for c in components[op.index])]
                if found:
                    cache[name] = found
                    break
        return list(cache[name])

    def layer_label(self, op: QuantizableOp, layer_names: Sequence[str] = ()) -> tuple[str | None, tuple[str, ...]]:
        """The layer an op belongs to (as ``--keep-float`` accepts it) and the other layers fused into it.

        Args:
            op: one of :attr:`ops`.
            layer_names: the Keras model's layer names, when known; otherwise the op's scope is used.

        Returns:
            ``(layer, fused)``; ``layer`` is ``None`` when no name selects this op.
        """
        convention = self.convention
        primary_scope = op.primary_scope(convention)
        if layer_names:
            involved = [name for name in layer_names if op in self.layer_ops(name)]
            if not involved:
                return None, ()
            primary = next(
                (
                    name
                    for name in involved
                    if primary_scope is not None and convention.layer_name(primary_scope) == name
                ),
                involved[0],
            )
            return primary, tuple(name for name in involved if name != primary)
        if primary_scope is None:
            return None, ()
        name = convention.layer_name(primary_scope)
        return (name, ()) if op in self.layer_ops(name) else (None, ())


@dataclass
class KeepFloatSelection:
    """What ``--keep-float`` names resolved to.

    Attributes:
        nodes: output tensor names for ``denylisted_nodes``.
        op_types: op types for ``denylisted_ops``.
        matches: each requested name -> the tensors (or the op type) it selected.
    """

    nodes: tuple[str, ...] = ()
    op_types: tuple[str, ...] = ()
    matches: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.nodes or self.op_types)


def read_quantizable_ops(content: bytes) -> list[QuantizableOp]:
    """The float-producing ops of a (calibrated) ``.tflite`` model's main subgraph, with their tensor names.

    Raises:
        ConversionError: the bytes are not a readable ``.tflite`` flatbuffer.
    """
    from ai_edge_litert import schema_py_generated as schema

    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    except Exception as exc:  # noqa: BLE001 - the generated reader raises struct/index errors
        raise ConversionError(f"cannot read the calibrated model: {exc}") from exc
    builtin = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    float_types = {schema.TensorType.FLOAT32, schema.TensorType.FLOAT16}
    subgraph = model.subgraphs[0]
    tensors = subgraph.tensors or []
    produced = {int(i) for op in subgraph.operators or [] for i in (op.outputs if op.outputs is not None else [])}

    def name_of(index: int) -> str:
        raw = tensors[index].name
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")

    def is_constant(index: int) -> bool:
        if index < 0 or index in produced:
            return False
        buffer = model.buffers[tensors[index].buffer] if model.buffers else None
        return buffer is not None and (
            (buffer.data is not None and len(buffer.data) > 0) or bool(getattr(buffer, "size", 0))
        )

    ops: list[QuantizableOp] = []
    for position, op in enumerate(subgraph.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        number = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        op_type = builtin.get(number, f"BUILTIN_{number}")
        if op_type == "CUSTOM" and code.customCode:
            op_type = code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode)
        outputs = [int(i) for i in (op.outputs if op.outputs is not None else []) if int(i) >= 0]
        if op_type in BOUNDARY_OPS or not outputs or tensors[outputs[0]].type not in float_types:
            continue
        inputs = [int(i) for i in (op.inputs if op.inputs is not None else [])]
        names = [name_of(i) for i in outputs] + [name_of(i) for i in inputs if is_constant(i)]
        ops.append(QuantizableOp(position, op_type, name_of(outputs[0]), tuple(n for n in names if n)))
    return ops


def calibrate(
    saved_model_dir: Path,
    signature_key: str,
    representative: "Dataset",
    *,
    num_samples: int | None = None,
    progress: "Progress | None" = None,
) -> CalibratedModel:
    """Convert a SavedModel signature with calibration only (no quantization yet).

    Args:
        saved_model_dir: the model (``LoadedModel.saved_model_dir``).
        signature_key: its serving signature.
        representative: calibration samples (validated against the model's inputs).
        num_samples: samples to use (default: all, at most ``DEFAULT_CALIBRATION_SAMPLES``).
        progress: progress reporter.

    Raises:
        ConversionError: the converter failed.
    """
    from tflite_opt.quantize import converter as backend
    from tflite_opt.quantize.options import ConversionOptions, calibration_samples

    if representative is None:
        raise ConversionError("int8 quantization needs representative data (--representative-data)")
    converter = backend.make_converter(saved_model_dir, signature_key)
    options = ConversionOptions(
        mode=Mode.INT8, io_type=IoType.FLOAT32, allow_float_fallback=True, num_samples=num_samples
    )
    backend.configure(converter, options, representative, progress)
    # What QuantizationDebugger(converter=...) sets: stop after calibration, quantize with the MLIR quantizer.
    converter.experimental_mlir_quantizer = True
    compat_tf.set_calibrate_only(converter)
    try:
        with quiet_native():
            content = converter.convert()
    except Exception as exc:  # noqa: BLE001 - the converter raises many types
        raise ConversionError(backend.explain_failure(exc, options)) from exc
    return CalibratedModel(
        content=bytes(content),
        ops=read_quantizable_ops(content),
        disable_per_channel=compat_tf.per_channel_disabled(converter),
        num_samples=len(calibration_samples(representative, num_samples)),
    )


def _candidates(calibrated: CalibratedModel) -> list[str]:
    convention = calibrated.convention
    names: list[str] = list(calibrated.op_types)
    for op in calibrated.ops:
        for scope in op.components(convention.root):
            candidate = convention.layer_name(scope)
            if candidate not in names:
                names.append(candidate)
    names += [op.tensor for op in calibrated.ops if op.tensor not in names]
    return names


def resolve_keep_float(names: Iterable[str], calibrated: CalibratedModel) -> KeepFloatSelection:
    """Turn ``--keep-float`` names into denylists (see the module docstring for the matching rules).

    Raises:
        ConversionError: a name matches nothing; the message lists the closest names.
    """
    nodes: list[str] = []
    op_types: list[str] = []
    matches: dict[str, tuple[str, ...]] = {}
    present_types = set(calibrated.op_types)
    for raw in names:
        name = str(raw).strip()
        if not name:
            raise ConversionError("--keep-float needs a non-empty layer, tensor or op type name")
        if name in present_types:
            if name not in op_types:
                op_types.append(name)
            matches[name] = (name,)
            continue
        exact = [op.tensor for op in calibrated.ops if op.tensor == name]
        selected = exact or [op.tensor for op in calibrated.layer_ops(name)]
        if not selected and name.upper() in present_types:  # "mean" for MEAN, when no layer is called so
            op_type = name.upper()
            if op_type not in op_types:
                op_types.append(op_type)
            matches[name] = (op_type,)
            continue
        if not selected:
            close = difflib.get_close_matches(name, _candidates(calibrated), n=5, cutoff=0.5)
            hint = f"; close names: {', '.join(close)}" if close else ""
            raise ConversionError(
                f"--keep-float {name!r} matches no layer, tensor or op type of the model{hint} "
                "(run 'tflite-opt debug' to list the quantized layers)"
            )
        for tensor in selected:
            if tensor not in nodes:
                nodes.append(tensor)
        matches[name] = tuple(selected)
    return KeepFloatSelection(tuple(nodes), tuple(op_types), matches)


def quantize_calibrated(
    calibrated: CalibratedModel,
    *,
    io_type: IoType | str = IoType.INT8,
    keep_float: KeepFloatSelection | None = None,
    numeric_verify: bool = False,
) -> bytes:
    """Quantize a calibrated model to int8, keeping ``keep_float`` in float.

    Args:
        calibrated: from :func:`calibrate`.
        io_type: type of the model's inputs and outputs (``int8``/``uint8``: integer I/O; ``float32``).
        keep_float: ops to leave in float (from :func:`resolve_keep_float`).
        numeric_verify: build the debugger's instrumented model (``NumericVerify`` after every quantized op;
            float I/O) instead of a deployable one.

    Raises:
        ConversionError: the quantizer failed.
    """
    from tflite_opt.models import tf_runtime

    tf = tf_runtime.import_tensorflow()
    io = IoType(io_type)
    io_dtype = {IoType.INT8: tf.int8, IoType.UINT8: tf.uint8, IoType.FLOAT32: tf.float32}[io]
    if numeric_verify:
        io_dtype = tf.float32
    selection = keep_float or KeepFloatSelection()
    try:
        with quiet_native():
            content = compat_tf.mlir_quantize(
                calibrated.content,
                disable_per_channel=calibrated.disable_per_channel,
                input_data_type=io_dtype,
                output_data_type=io_dtype,
                enable_numeric_verify=numeric_verify,
                denylisted_ops=list(selection.op_types) or None,
                denylisted_nodes=list(selection.nodes) or None,
            )
            if not numeric_verify:
                content = compat_tf.deduplicate_buffers(content)
    except Exception as exc:  # noqa: BLE001 - the quantizer raises RuntimeError/ValueError with C++ text
        raise ConversionError(f"int8 quantization failed: {first_line(exc)}") from exc
    return bytes(content)


def check_loads(content: bytes) -> None:
    """Make sure the LiteRT interpreter can load and allocate the model.

    Raises:
        ConversionError: it cannot.
    """
    from tflite_opt.errors import EvaluationError
    from tflite_opt.measure.runtime import interpreter_from_bytes

    try:
        interpreter_from_bytes(content, xnnpack=False, source="the selectively quantized model").allocate_tensors()
    except EvaluationError as exc:
        raise ConversionError(f"the selectively quantized model does not load in LiteRT: {exc}") from exc
    except (ValueError, RuntimeError) as exc:
        raise ConversionError(f"the selectively quantized model does not load in LiteRT: {first_line(exc)}") from exc


def convert_keeping_float(
    saved_model_dir: Path,
    signature_key: str,
    options: "ConversionOptions",
    representative: "Dataset | None",
    progress: "Progress | None" = None,
) -> bytes:
    """int8 conversion with ``options.keep_float`` kept in float (``convert --mode int8 --keep-float NAME``).

    Raises:
        ConversionError: no representative data, an unknown name, or a quantizer/runtime failure.
    """
    if representative is None:
        raise ConversionError("--keep-float needs representative data (--representative-data)")
    calibrated = calibrate(
        saved_model_dir, signature_key, representative, num_samples=options.num_samples, progress=progress
    )
    selection = resolve_keep_float(options.keep_float, calibrated)
    content = quantize_calibrated(calibrated, io_type=options.io_type, keep_float=selection)
    if options.sparsity:
        content = _sparsify(content)
    check_loads(content)
    return content


def _sparsify(content: bytes) -> bytes:
    from tflite_opt.models import tf_runtime

    tf_runtime.import_tensorflow()
    with quiet_native():
        return compat_tf.mlir_sparsify(content)

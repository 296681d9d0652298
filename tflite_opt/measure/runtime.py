"""The one LiteRT interpreter factory, and a model's inputs/outputs described by signature name.

No TensorFlow here: ``inspect`` and ``evaluate`` run on LiteRT (``ai_edge_litert``) and NumPy only.

Tensors are matched by *signature* name (the keys of the ``serving_default`` signature that the converter writes
for Keras and SavedModel sources, e.g. ``'image'``, ``'meta'``, ``'digit'``), never by position: the converter
is free to reorder a subgraph's inputs and outputs. A file without any signature falls back to the tensor names
of subgraph 0.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tflite_opt.compat import litert
from tflite_opt.errors import DataError, EvaluationError, first_line
from tflite_opt.specs import TensorSpec

if TYPE_CHECKING:  # pragma: no cover
    from ai_edge_litert.interpreter import Interpreter

DEFAULT_SIGNATURE = "serving_default"


def read_model_bytes(path: str | os.PathLike) -> bytes:
    """Read a ``.tflite`` file.

    Raises:
        EvaluationError: the file is missing, unreadable or empty.
    """
    path = Path(path)
    try:
        content = path.read_bytes()
    except FileNotFoundError as exc:
        raise EvaluationError(f"{path} does not exist") from exc
    except IsADirectoryError as exc:
        raise EvaluationError(f"{path} is a directory, not a .tflite file") from exc
    except OSError as exc:
        raise EvaluationError(f"cannot read {path}: {exc.strerror}") from exc
    if not content:
        raise EvaluationError(f"{path} is empty (0 bytes); it is not a .tflite model — re-export it")
    return content


def interpreter_from_bytes(
    content: bytes, *, threads: int = 1, xnnpack: bool = True, source: str = "model", preserve_all_tensors: bool = False
) -> "Interpreter":
    """Create a LiteRT interpreter from a model's bytes.

    Bytes go through ``model_content`` rather than ``model_path`` because that path runs the flatbuffer
    verifier, so a truncated or damaged file fails here with a clear message instead of crashing later.

    Args:
        content: the ``.tflite`` flatbuffer.
        threads: ``num_threads`` of the interpreter (CPU kernels and XNNPACK).
        xnnpack: apply the default XNNPACK delegate (``OpResolverType.AUTO``); ``False`` uses the builtin
            kernels only (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``, the ``--no-xnnpack`` flag).
        source: what to call the model in error messages (usually its path).
        preserve_all_tensors: keep every intermediate tensor readable after invoke (activation statistics).

    Raises:
        EvaluationError: the bytes are empty or not a valid ``.tflite`` flatbuffer, or the interpreter
            cannot be created (e.g. an op without a kernel).
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if not content:
        raise EvaluationError(f"{source} is empty (0 bytes); it is not a .tflite model")
    if threads < 1:
        raise EvaluationError(f"the thread count must be at least 1, got {threads}")
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        return Interpreter(
            model_content=bytes(content),
            num_threads=threads,
            experimental_op_resolver_type=resolver,
            experimental_preserve_all_tensors=preserve_all_tensors,
        )
    except (ValueError, RuntimeError) as exc:
        raise EvaluationError(_load_message(source, exc)) from exc


# LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." once per process, straight to file
# descriptor 2, when the first interpreter with XNNPACK is allocated; that line is noise for our users (stderr
# carries our progress and errors), so that allocation is silenced unless -v.
_xnnpack_banner_due = True


def xnnpack_banner_due(xnnpack: bool = True) -> bool:
    """Whether preparing an interpreter (with XNNPACK when ``xnnpack``) now is the one that prints LiteRT's banner.

    Hiding it swaps file descriptors 1 and 2 for the whole process, which only the main thread does: code that
    prepares interpreters on several threads prepares that first one on the main thread before starting the others
    (:func:`tflite_opt.measure.workers.run_batches` does).
    """
    return xnnpack and _xnnpack_banner_due


def _allocate_quietly(wrapper, subgraph: int, xnnpack: bool) -> None:
    """AllocateTensors; the process's first allocation with XNNPACK is silenced (on the main thread, unless -v)."""
    global _xnnpack_banner_due
    if xnnpack_banner_due(xnnpack) and threading.current_thread() is threading.main_thread():
        from tflite_opt.verbosity import quiet_native

        with quiet_native():
            wrapper.AllocateTensors(subgraph)
    else:
        wrapper.AllocateTensors(subgraph)
    if xnnpack:
        _xnnpack_banner_due = False


def _load_message(source: str, exc: Exception) -> str:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if "not a valid Flatbuffer" in reason:
        return f"{source} is not a valid .tflite file (damaged or truncated flatbuffer); re-export or re-download it"
    return _missing_kernel_message(source, reason) or f"LiteRT cannot load {source}: {first_line(reason)}"


_UNRESOLVED_CUSTOM_OP = re.compile(r"unresolved custom op: (\S+?)\.?(?:\s|$)")
_MISSING_BUILTIN = re.compile(r"Didn't find op for builtin opcode '([^']+)' version '(\d+)'")


def _missing_kernel_message(source: str, reason: str) -> str | None:
    """LiteRT's "unresolved custom op" / "didn't find op for builtin" errors (at creation, allocation or the
    first invoke, depending on the op) said as what the user can do about them; ``None`` for other errors."""
    custom = _UNRESOLVED_CUSTOM_OP.search(reason)
    if custom and custom.group(1).startswith("Flex"):
        return (
            f"{source} uses the TensorFlow op {custom.group(1)[4:]} (a Select TF / Flex op), which this LiteRT "
            "interpreter cannot run; convert without SELECT_TF_OPS, or run it where the Flex delegate is linked"
        )
    if custom:
        return (
            f"{source} uses the custom op {custom.group(1)}, which this LiteRT build has no kernel for; running it "
            f"needs a custom op resolver that registers {custom.group(1)} (an application or LiteRT build with the "
            "kernel linked in); 'tflite-opt inspect' still reads the file"
        )
    builtin = _MISSING_BUILTIN.search(reason)
    if builtin:
        return (
            f"{source} uses the builtin op {builtin.group(1)} version {builtin.group(2)}, which this LiteRT build "
            "has no kernel for; upgrade ai-edge-litert, or convert with the TensorFlow version it matches"
        )
    return None


def _run_message(doing: str, source: str, exc: Exception) -> str:
    return _missing_kernel_message(source, " ".join(str(exc).split())) or f"LiteRT {doing} {source}: {first_line(exc)}"


@dataclass(frozen=True)
class TensorBinding:
    """One signature input/output and where it lives in the interpreter.

    Attributes:
        spec: the tensor as stored (name = signature name, dtype = stored dtype, scale/zero point if quantized).
        index: tensor index in the signature's subgraph.
        shape_signature: the stored shape with ``-1`` for dimensions that may be resized.
    """

    spec: TensorSpec
    index: int
    shape_signature: tuple[int, ...]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def is_quantized(self) -> bool:
        """Integer tensor with a scale: real values are ``(q - zero_point) * scale``."""
        return bool(self.spec.scale) and np.dtype(self.spec.dtype).kind in "iu"

    @property
    def batch_resizable(self) -> bool:
        return len(self.shape_signature) > 0 and self.shape_signature[0] == -1

    def data_spec(self) -> TensorSpec:
        """The tensor as the user's data sees it: quantized tensors hold real (float32) values."""
        if self.is_quantized:
            return TensorSpec(self.spec.name, self.spec.shape, "float32")
        return self.spec


@dataclass(frozen=True)
class SignatureInfo:
    """A model's inputs and outputs, by signature name.

    Attributes:
        key: the signature key (``None`` when the file has no signature and tensor names are used).
        subgraph_index: the subgraph that runs this signature.
        inputs: input bindings in the signature's order.
        outputs: output bindings in the signature's order.
    """

    key: str | None
    subgraph_index: int
    inputs: tuple[TensorBinding, ...]
    outputs: tuple[TensorBinding, ...]

    @property
    def input_specs(self) -> list[TensorSpec]:
        """Inputs as stored (dtype, scale, zero point)."""
        return [binding.spec for binding in self.inputs]

    @property
    def output_specs(self) -> list[TensorSpec]:
        """Outputs as stored (dtype, scale, zero point)."""
        return [binding.spec for binding in self.outputs]

    @property
    def data_specs(self) -> list[TensorSpec]:
        """Inputs as data loaders should validate them (quantized inputs take float samples)."""
        return [binding.data_spec() for binding in self.inputs]

    @property
    def batch_resizable(self) -> bool:
        """Every input's leading axis is ``-1``: samples can be run in batches of any size."""
        return bool(self.inputs) and all(binding.batch_resizable for binding in self.inputs)

    @property
    def fixed_batch(self) -> int:
        """The batch size the inputs are stored with (1 for almost every converted model)."""
        sizes = {binding.spec.shape[0] for binding in self.inputs if binding.spec.shape}
        sizes.discard(None)
        return int(sizes.pop()) if len(sizes) == 1 else 1


def _spec_from_details(name: str, details: Mapping) -> TensorSpec:
    shape_signature = [int(d) for d in details.get("shape_signature", details["shape"])]
    shape = tuple(None if d < 0 else d for d in shape_signature)
    dtype = np.dtype(details["dtype"]).name
    scale, zero_point = details.get("quantization", (0.0, 0))
    params = details.get("quantization_parameters") or {}
    scales = params.get("scales")
    if scales is not None and len(scales) > 1:
        # Per-axis quantized I/O is not something converters emit; describe it by its first channel.
        scale, zero_point = float(scales[0]), int(params["zero_points"][0])
    if not scale:
        return TensorSpec(name, shape, dtype)
    return TensorSpec(name, shape, dtype, scale=float(scale), zero_point=int(zero_point))


def _binding(interpreter: "Interpreter", name: str, index: int, subgraph: int) -> TensorBinding:
    details = litert.tensor_details(interpreter, index, subgraph)
    shape_signature = tuple(int(d) for d in details.get("shape_signature", details["shape"]))
    return TensorBinding(_spec_from_details(name, details), int(index), shape_signature)


def describe_signature(interpreter: "Interpreter", signature: str | None = None) -> SignatureInfo:
    """Describe the inputs and outputs of one signature of a loaded interpreter.

    Args:
        interpreter: from :func:`interpreter_from_bytes`.
        signature: the signature key; default ``serving_default`` if present, else the only/first signature,
            else (no signature in the file) the tensor names of subgraph 0.

    Raises:
        EvaluationError: the requested signature does not exist.
    """
    signatures = litert.signature_list(interpreter)
    if signature is not None and signature not in signatures:
        available = ", ".join(repr(k) for k in signatures) or "none"
        raise EvaluationError(f"the model has no signature {signature!r}; its signatures are {available}")
    if not signatures:
        inputs = tuple(_binding(interpreter, d["name"], d["index"], 0) for d in interpreter.get_input_details())
        outputs = tuple(_binding(interpreter, d["name"], d["index"], 0) for d in interpreter.get_output_details())
        return SignatureInfo(None, 0, inputs, outputs)
    key = signature or (DEFAULT_SIGNATURE if DEFAULT_SIGNATURE in signatures else next(iter(signatures)))
    definition = signatures[key]
    subgraph = litert.signature_subgraph(interpreter, key)
    inputs = tuple(_binding(interpreter, n, i, subgraph) for n, i in definition["inputs"].items())
    outputs = tuple(_binding(interpreter, n, i, subgraph) for n, i in definition["outputs"].items())
    return SignatureInfo(key, subgraph, inputs, outputs)


def quantize(
    values: np.ndarray, spec: TensorSpec, scratch: dict | None = None, *, nonnegative: bool = False
) -> np.ndarray:
    """Real values -> the stored integer type of a quantized input, as TFLite's QUANTIZE op does it.

    ``q = clamp(round(x / scale) + zero_point)`` with round-half-away-from-zero (``std::round``).

    ``scratch``: a dict the caller keeps between calls (one per thread): the temporaries and the result are then
    reused arrays rather than new ones — fresh arrays of a batch's size cost more in page faults than the
    arithmetic — and the result is only valid until the next call with the same ``scratch``.

    ``nonnegative``: the caller knows that no value is below zero (the data's minimum): the sign of 0.5 is then
    not looked for, two passes fewer (the same integers; -0.0 rounds to 0 either way).
    """
    dtype = np.dtype(spec.dtype)
    info = np.iinfo(dtype)
    values = np.asarray(values, dtype=np.float32)
    zero_point = int(spec.zero_point or 0)
    # Rounded values are clipped to the range left after the zero point, and converted to an integer type wide
    # enough for it before the zero point is added in integers.
    wide_dtype = np.dtype(np.int16 if dtype.itemsize == 1 else np.int32) if zero_point else dtype
    shape = values.shape
    key = (shape, dtype.str, wide_dtype.str)
    buffers = scratch.get(key) if scratch is not None and values.ndim else None
    if buffers is None:
        wide = np.empty(shape, wide_dtype) if zero_point else None
        buffers = (np.empty(shape, np.float32), np.empty(shape, np.float32), wide, np.empty(shape, dtype))
        if scratch is not None and values.ndim:
            scratch[key] = buffers
    scaled, half, wide, result = buffers
    # trunc(s + copysign(0.5, s)) is sign(s) * floor(|s| + 0.5) bit for bit: |s| + 0.5 rounds like s + 0.5
    # with the sign mirrored, and the sum has the sign of s. copysign(0.5, s) is built from the bits (s's sign
    # bit on 0.5's pattern): the same values as np.copysign, which is about 6x slower than these two integer ops.
    # The truncation is the float -> integer conversion's own (toward zero), after clipping to integer bounds
    # (which commutes with it): seven passes over the batch, one fewer without a zero point and two fewer for
    # data known to be nonnegative.
    np.divide(values, np.float32(spec.scale), out=scaled)
    if nonnegative:
        np.add(scaled, np.float32(0.5), out=scaled)
    else:
        half_bits = half.view(np.uint32)
        np.bitwise_and(scaled.view(np.uint32), np.uint32(0x80000000), out=half_bits)
        np.bitwise_or(half_bits, np.uint32(0x3F000000), out=half_bits)
        np.add(scaled, half, out=scaled)
    np.clip(scaled, np.float32(info.min - zero_point), np.float32(info.max - zero_point), out=scaled)
    if wide is None:
        np.copyto(result, scaled, casting="unsafe")
    else:
        np.copyto(wide, scaled, casting="unsafe")
        np.add(wide, wide_dtype.type(zero_point), out=result, casting="unsafe")
    return result if result.ndim else result[()]


def dequantize(values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """A quantized output's integers -> real values ``(q - zero_point) * scale`` as float32."""
    return (values.astype(np.float32) - np.float32(spec.zero_point or 0)) * np.float32(spec.scale)


def prepare_inputs(
    signature: SignatureInfo,
    sample_inputs: Mapping[str, np.ndarray],
    batch: int,
    *,
    source: str = "model",
    scratch: dict | None = None,
    nonnegative: frozenset[str] = frozenset(),
) -> dict[str, np.ndarray]:
    """Real-valued samples -> stored-dtype arrays of exactly ``batch`` rows (quantized, padded by repetition).

    ``scratch``: see :func:`quantize` (the quantized arrays are then valid until the next call); each input
    gets buffers of its own in it.
    ``nonnegative``: inputs whose data has no value below zero (see :func:`quantize`).

    Raises:
        DataError: an input is missing from ``sample_inputs``.
    """
    arrays = {}
    for binding in signature.inputs:
        if binding.name not in sample_inputs:
            raise DataError(f"no data for input '{binding.name}' of {source}")
        values = np.asarray(sample_inputs[binding.name])
        if binding.is_quantized:
            buffers = None if scratch is None else scratch.setdefault(binding.name, {})
            values = quantize(values, binding.spec, buffers, nonnegative=binding.name in nonnegative)
        else:
            values = values.astype(np.dtype(binding.spec.dtype), copy=False)
        if len(values) < batch:
            values = np.concatenate([values, np.repeat(values[-1:], batch - len(values), axis=0)])
        arrays[binding.name] = values
    return arrays


class ModelRunner:
    """One interpreter bound to one signature: resize the batch, set inputs, invoke, read outputs.

    The public ``SignatureRunner`` resizes and re-allocates on every call and, while it lives, blocks
    ``allocate_tensors``; this runner drives the same interpreter wrapper calls, but allocates only when
    the batch size changes, which is what fast batched evaluation and latency timing need.
    """

    def __init__(
        self,
        content: bytes,
        *,
        threads: int = 1,
        xnnpack: bool = True,
        signature: str | None = None,
        source: str = "model",
        input_shapes: Mapping[str, tuple[int | None, ...]] | None = None,
    ) -> None:
        from tflite_opt.measure.input_shapes import resize_signature

        self.source = source
        self.xnnpack = xnnpack
        self._content = content
        self._plan = None
        self.interpreter = interpreter_from_bytes(content, threads=threads, xnnpack=xnnpack, source=source)
        # --input-shape: dynamic axes get their sizes here and are resized to them in prepare().
        self.signature = resize_signature(describe_signature(self.interpreter, signature), input_shapes, source)
        self._resized = bool(input_shapes)
        self._wrapper = litert.interpreter_wrapper(self.interpreter)
        self._subgraph = self.signature.subgraph_index
        self.batch_size: int | None = None

    @property
    def inputs(self) -> tuple[TensorBinding, ...]:
        return self.signature.inputs

    @property
    def outputs(self) -> tuple[TensorBinding, ...]:
        return self.signature.outputs

    def prepare(self, batch_size: int | None = None) -> int:
        """Resize every input's batch axis (when the model allows it) and allocate tensors.

        Args:
            batch_size: wanted samples per invoke; ignored for models whose batch axis is fixed.

        Returns:
            The batch size the interpreter now runs with.
        """
        if batch_size is not None and self.signature.batch_resizable:
            batch = int(batch_size)
        else:
            batch = self.signature.fixed_batch
        if batch == self.batch_size:
            return batch
        self._check_memory(batch)
        try:
            if self.signature.batch_resizable or self._resized:
                lead = [batch] if self.signature.batch_resizable else []
                for binding in self.inputs:
                    shape = lead + [max(int(d), 1) for d in binding.shape_signature[len(lead) :]]
                    self._wrapper.ResizeInputTensor(
                        binding.index, np.array(shape, dtype=np.int32), False, self._subgraph
                    )
            _allocate_quietly(self._wrapper, self._subgraph, self.xnnpack)
        except (ValueError, RuntimeError) as exc:
            raise EvaluationError(_run_message("cannot prepare", self.source, exc)) from exc
        self.batch_size = batch
        return batch

    def _check_memory(self, batch: int) -> None:
        """Refuse a batch whose tensors cannot fit in the memory available, before LiteRT allocates them."""
        from tflite_opt.measure import resources

        resizable = self.signature.batch_resizable
        if self._plan is None:
            self._plan = resources.plan_of(self._content, resizable=resizable) or False
        if self._plan:
            resources.check_fits(
                self._plan, batch=batch, xnnpack=self.xnnpack, source=self.source, batch_resizable=resizable
            )

    def set_inputs(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Copy stored-dtype arrays (already quantized where needed) into the inputs, by name."""
        for binding in self.inputs:
            value = np.ascontiguousarray(arrays[binding.name], dtype=np.dtype(binding.spec.dtype))
            try:
                self._wrapper.SetTensor(binding.index, value, self._subgraph)
            except ValueError as exc:
                raise EvaluationError(
                    f"input '{binding.name}' of {self.source} rejects an array of shape {value.shape}: "
                    f"{first_line(exc)}"
                ) from exc

    def invoke(self) -> None:
        """Run the model once on the inputs set last (the GIL is released while it runs)."""
        try:
            self._wrapper.Invoke(self._subgraph)
        except (ValueError, RuntimeError) as exc:
            raise EvaluationError(_run_message("failed to run", self.source, exc)) from exc

    def get_outputs(self) -> dict[str, np.ndarray]:
        """Copies of every output in its stored dtype, by signature name."""
        return {b.name: self._wrapper.GetTensor(b.index, self._subgraph) for b in self.outputs}

    def run(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Set inputs, invoke, return outputs (stored dtypes)."""
        self.set_inputs(arrays)
        self.invoke()
        return self.get_outputs()


def load_signature(content: bytes, *, signature: str | None = None, source: str = "model") -> SignatureInfo:
    """Load a model just to describe its inputs and outputs (no delegate, no allocation).

    Raises:
        EvaluationError: the file is not a loadable ``.tflite`` model or lacks the signature.
    """
    interpreter = interpreter_from_bytes(content, xnnpack=False, source=source)
    return describe_signature(interpreter, signature)

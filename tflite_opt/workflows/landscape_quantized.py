"""The quantization direction: where a ``.tflite`` file's weights sit relative to the Keras model's.

The direction is ``dequantized file weights - float weights``, kernel by kernel, in the Keras model's own
parametrization, so that ``w + 1.0 * direction`` is the weight-quantized model evaluated in float.

Reading the file: every constant tensor is read from the flatbuffer (LiteRT's generated schema) and
dequantized — int8/int16/int4 with per-tensor or per-channel scales and zero points, float16 as is.

Mapping back to the Keras layers is done by value, not by name: the converter renames, transposes (Conv
kernels ``HWIO -> OHWI``, Dense ``(in, out) -> (out, in)``) and folds BatchNorm into the preceding kernel (each
output channel multiplied by ``gamma / sqrt(var + eps)``). So each Keras kernel is matched to the file's constant
of the same size that, in some layout, equals it up to one scale per filter. The scales are taken from a float32
conversion of the same model (where the match is exact), then the quantized file's kernel is divided by them:
that is the exact inverse of the folding, because BatchNorm at inference is a per-channel affine map.

Biases are left out of the direction: int8 stores them in int32 with a scale of ``input scale x weight
scale`` and float16 to 3 significant digits, errors that are orders of magnitude below the kernels'.

NumPy and LiteRT's schema only.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tflite_opt.errors import ConversionError
from tflite_opt.workflows.landscape_directions import Parameter

# schema TensorType -> (name, NumPy dtype of the stored values); int4 is unpacked from two values per byte.
_STORED = {
    0: ("float32", np.float32),
    1: ("float16", np.float16),
    3: ("uint8", np.uint8),
    7: ("int16", np.int16),
    9: ("int8", np.int8),
    17: ("int4", None),
}
REFERENCE_TOLERANCE = 1e-3  # relative residual of a float32 kernel against the Keras kernel (folding rounding)
QUANTIZED_TOLERANCE = 0.5  # relative error a quantized kernel may have and still be "this kernel"
_BLOCKWISE = 2  # schema QuantizationDetails.BlockwiseQuantization
_TINY = 1e-12


@dataclass
class FileConstant:
    """A constant tensor of a ``.tflite`` file, dequantized to float."""

    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    values: np.ndarray


@dataclass
class KernelShift:
    """How far quantization moved one kernel.

    Attributes:
        label: the Keras weight (``conv1/kernel``).
        tensor: the file's tensor it was matched to (``None``: not found in the file).
        dtype: the dtype the file stores it in (``int8``, ``float16``, ``float32`` = left in float, ...).
        relative_change: ``|dequantized - float| / |float|`` over the whole kernel.
    """

    label: str
    tensor: str | None
    dtype: str | None
    relative_change: float | None

    def to_json_dict(self) -> dict:
        return {
            "weight": self.label,
            "tensor": self.tensor,
            "dtype": self.dtype,
            "relative_change": self.relative_change,
        }


@dataclass
class QuantizationDirection:
    """The direction from the float weights to the file's dequantized weights, and what was matched."""

    direction: list[np.ndarray]
    kernels: list[KernelShift] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _unpack_int4(raw: np.ndarray, count: int) -> np.ndarray:
    """Two signed 4-bit values per byte, the low nibble first (TFLite's packing)."""
    values = np.empty(raw.size * 2, dtype=np.int8)
    values[0::2] = raw & 0x0F
    values[1::2] = raw >> 4
    return np.where(values >= 8, values - 16, values).astype(np.int8)[:count]


def _tensor_data(model, tensor, content: bytes) -> np.ndarray | None:
    buffer = model.Buffers(int(tensor.Buffer())) if 0 < int(tensor.Buffer()) < model.BuffersLength() else None
    if buffer is None:
        return None
    offset, size = int(buffer.Offset()), int(buffer.Size())
    if offset > 1 and size > 0:  # files over 2 GB keep buffers after the flatbuffer
        return np.frombuffer(content, dtype=np.uint8, count=size, offset=offset)
    if buffer.DataLength() == 0:
        return None
    return buffer.DataAsNumpy()


def _dequantize(tensor, raw: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    kind = int(tensor.Type())
    dtype_name, numpy_dtype = _STORED[kind]
    count = int(np.prod(shape)) if shape else 1
    if dtype_name == "int4":
        stored = _unpack_int4(raw, count)
    else:
        stored = np.frombuffer(raw.tobytes(), dtype=numpy_dtype, count=count)
    stored = stored.reshape(shape).astype(np.float32)
    quantization = tensor.Quantization()
    if dtype_name.startswith("float"):
        return stored
    if quantization is None or not quantization.ScaleLength():
        return None  # integers without a scale are indices or shapes, not weights
    if int(quantization.DetailsType()) == _BLOCKWISE:
        return None
    scale = quantization.ScaleAsNumpy().astype(np.float32)
    zero = quantization.ZeroPointAsNumpy().astype(np.float32) if quantization.ZeroPointLength() else np.zeros(1)
    if scale.size > 1:
        axis = int(quantization.QuantizedDimension())
        view = [1] * len(shape)
        view[axis] = scale.size
        scale = scale.reshape(view)
        zero = zero.reshape(view) if zero.size == scale.size else zero.ravel()[:1]
    return (stored - zero) * scale


def file_constants(content: bytes) -> list[FileConstant]:
    """The constant tensors of rank >= 2 that can hold weights (float, int8/int16/int4 with scales), dequantized.

    Raises:
        ConversionError: the bytes are not a readable ``.tflite`` flatbuffer.
    """
    from ai_edge_litert.schema_py_generated import Model

    try:
        model = Model.GetRootAs(content, 0)
        found: list[FileConstant] = []
        for s in range(model.SubgraphsLength()):
            subgraph = model.Subgraphs(s)
            for t in range(subgraph.TensorsLength()):
                tensor = subgraph.Tensors(t)
                shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
                if len(shape) < 2 or int(tensor.Type()) not in _STORED or tensor.Sparsity() is not None:
                    continue
                raw = _tensor_data(model, tensor, content)
                if raw is None:
                    continue
                values = _dequantize(tensor, raw, shape)
                if values is not None:
                    name = (tensor.Name() or b"").decode("utf-8", "replace")
                    found.append(FileConstant(t, name, _STORED[int(tensor.Type())][0], shape, values))
    except ConversionError:
        raise
    except Exception as exc:  # noqa: BLE001 - the schema reader raises plain errors on a damaged file
        raise ConversionError(f"cannot read the weights of the converted file: {exc}") from exc
    return found


def _merges_only(source: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether reshaping ``source`` to ``target`` only merges neighbouring axes (and adds/drops 1s)."""

    def cumulative(shape):
        return set(np.cumprod([d for d in shape if d != 1]).tolist())

    return cumulative(target) <= cumulative(source)


def _layouts(parameter: Parameter, target: tuple[int, ...], preferred: bool):
    """Axis orders of a Keras kernel to try against a file tensor of shape ``target``: with ``preferred``, filters
    first (TFLite's OHWI, FC ``(out, in)``) and as is (depthwise ``1HW(I*M)``); else every other order."""
    rank, shape = parameter.value.ndim, parameter.value.shape
    rest = tuple(axis for axis in range(rank) if axis not in parameter.filter_axes)
    first = [parameter.filter_axes + rest, tuple(range(rank))]
    if preferred:
        orders = first
    else:
        orders = [o for o in itertools.permutations(range(rank)) if o not in first] if rank <= 5 else []
    for order in dict.fromkeys(tuple(o) for o in orders):
        if _merges_only(tuple(shape[a] for a in order), target):
            yield order


def _in_keras_layout(constant: FileConstant, order: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    permuted = tuple(shape[a] for a in order)
    return constant.values.reshape(permuted).transpose(np.argsort(order))


def _fit(parameter: Parameter, values: np.ndarray, scale: np.ndarray | None) -> tuple[np.ndarray, float]:
    """(per-filter scale, relative residual) of ``values ~ scale * kernel``; ``scale`` fitted when ``None``."""
    kernel = parameter.value.astype(np.float64)
    values = values.astype(np.float64)
    axes = parameter.reduce_axes
    if scale is None:
        energy = np.square(kernel).sum(axis=axes, keepdims=True)
        scale = np.where(
            energy > _TINY, (values * kernel).sum(axis=axes, keepdims=True) / np.maximum(energy, _TINY), 1.0
        )
        residual = np.linalg.norm(values - scale * kernel) / max(float(np.linalg.norm(values)), _TINY)
        return scale, float(residual)
    unfolded = np.where(np.abs(scale) > _TINY, values / np.where(np.abs(scale) > _TINY, scale, 1.0), kernel)
    residual = np.linalg.norm(unfolded - kernel) / max(float(np.linalg.norm(kernel)), _TINY)
    return scale, float(residual)


@dataclass
class _Match:
    constant: FileConstant
    order: tuple[int, ...]
    values: np.ndarray  # the constant in the Keras kernel's layout
    scale: np.ndarray  # per filter
    residual: float


def _best(
    parameter: Parameter,
    constants: Sequence[FileConstant],
    scale: np.ndarray | None,
    tolerance: float,
    hint: _Match | None = None,
) -> _Match | None:
    """The constant (and layout) that best equals ``parameter`` up to per-filter ``scale`` (fitted when
    ``None``), under ``tolerance``. Tries the ``hint`` (same name and layout in another file) first, then the
    usual layouts of every same-size constant, then every other layout."""
    shape = parameter.value.shape
    sized = [c for c in constants if c.values.size == parameter.value.size]
    passes = []
    if hint is not None:
        passes.append(
            [(c, hint.order) for c in sized if c.name == hint.constant.name and c.shape == hint.constant.shape]
        )
    for preferred in (True, False):
        passes.append([(c, order) for c in sized for order in _layouts(parameter, c.shape, preferred)])
    best = None
    for pairs in passes:
        for constant, order in pairs:
            values = _in_keras_layout(constant, order, shape)
            fitted, residual = _fit(parameter, values, scale)
            if residual < tolerance and (best is None or residual < best.residual):
                best = _Match(constant, order, values, fitted, residual)
        if best is not None:
            return best
    return None


def quantization_direction(
    parameters: Sequence[Parameter], quantized: bytes, reference: bytes, *, source: str = "the converted file"
) -> QuantizationDirection:
    """The direction ``dequantized(quantized file) - float weights`` for every kernel of ``parameters``.

    Args:
        parameters: the model's weights (:func:`~tflite_opt.workflows.landscape_directions.model_parameters`).
        quantized: the quantized ``.tflite`` bytes.
        reference: a float32 conversion of the same model (gives the BatchNorm folding scales exactly).
        source: the quantized file, for messages.

    Raises:
        ConversionError: no kernel of the model could be found in the file (a file of another model).
    """
    return direction_from_constants(parameters, file_constants(quantized), file_constants(reference), source=source)


def direction_from_constants(
    parameters: Sequence[Parameter],
    quantized: Sequence[FileConstant],
    reference: Sequence[FileConstant],
    *,
    source: str = "the converted file",
) -> QuantizationDirection:
    """:func:`quantization_direction` on constants already read from the two files."""
    direction = [np.zeros_like(p.value) for p in parameters]
    result = QuantizationDirection(direction)
    taken: set[int] = set()
    missing = []
    for index, parameter in enumerate(parameters):
        if not parameter.is_kernel:
            continue
        folded = _best(parameter, reference, None, REFERENCE_TOLERANCE)
        scale = folded.scale if folded is not None else None
        candidates = [c for c in quantized if c.index not in taken]
        match = _best(parameter, candidates, scale, QUANTIZED_TOLERANCE if scale is not None else 1.0, folded)
        if match is None:
            missing.append(parameter.label)
            result.kernels.append(KernelShift(parameter.label, None, None, None))
            continue
        taken.add(match.constant.index)
        if match.constant.dtype != "float32":  # float32 in the file: this kernel was left in float
            safe = np.where(np.abs(match.scale) > _TINY, match.scale, 1.0)
            unfolded = np.where(np.abs(match.scale) > _TINY, match.values / safe, parameter.value)
            direction[index] = (unfolded - parameter.value).astype(np.float32)
        change = float(np.linalg.norm(direction[index]) / max(float(np.linalg.norm(parameter.value)), _TINY))
        result.kernels.append(KernelShift(parameter.label, match.constant.name, match.constant.dtype, change))
    _check_found(parameters, missing, source, result)
    return result


def _check_found(
    parameters: Sequence[Parameter], missing: list[str], source: str, result: QuantizationDirection
) -> None:
    kernels = [p.label for p in parameters if p.is_kernel]
    if kernels and len(missing) == len(kernels):
        raise ConversionError(
            f"none of the model's kernels ({', '.join(kernels[:3])}{', ...' if len(kernels) > 3 else ''}) were "
            f"found in {source}; is it a conversion of this model?"
        )
    if missing:
        result.warnings.append(
            f"{len(missing)} kernel(s) not found in {source} ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}); their quantization direction is taken as zero"
        )

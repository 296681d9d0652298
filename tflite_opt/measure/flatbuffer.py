"""A read-only ``.tflite`` flatbuffer reader: the part of LiteRT's generated schema that inspection reads.

``ai_edge_litert.schema_py_generated`` (and the ``flatbuffers`` package under it) takes ~20 ms to import — a
noticeable share of ``tflite-opt evaluate`` on a small model — and its per-field calls cost more than the walk
needs. The classes here offer the same (CamelCase) method names and return the same values for the fields
:mod:`~tflite_opt.measure.inspection` and :mod:`~tflite_opt.measure.resources` use: defaults for absent scalars,
``None`` for absent tables and strings, length 0 and (for ``...AsNumpy``) ``0`` for absent vectors, NumPy views
of the file's bytes otherwise. ``tests/test_flatbuffer_reader.py`` compares them with the generated classes on
real files, and :data:`BUILTIN_OPERATORS` with the generated ``BuiltinOperator``.

Unlike the generated code, an offset or vector that points outside the buffer raises :class:`FlatbufferError`
(or ``struct.error``; ``IndexError`` for a table index past its vector) at once instead of reading whatever
bytes lie there; :func:`~tflite_opt.measure.inspection.analyze` turns any of them into an ``EvaluationError``.
"""

from __future__ import annotations

import struct

import numpy as np

# schema BuiltinOperator, by code (0, 1, ...): the builtin op names.
BUILTIN_OPERATORS: tuple[str, ...] = tuple(
    """
    ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE EMBEDDING_LOOKUP FLOOR
    FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D LOCAL_RESPONSE_NORMALIZATION LOGISTIC
    LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1 RELU6 RESHAPE RESIZE_BILINEAR RNN SOFTMAX
    SPACE_TO_DEPTH SVDF TANH CONCAT_EMBEDDINGS SKIP_GRAM CALL CUSTOM EMBEDDING_LOOKUP_SPARSE PAD
    UNIDIRECTIONAL_SEQUENCE_RNN GATHER BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND TRANSPOSE MEAN SUB DIV SQUEEZE
    UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE BIDIRECTIONAL_SEQUENCE_RNN EXP TOPK_V2 SPLIT LOG_SOFTMAX DELEGATE
    BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM ARG_MAX MINIMUM LESS NEG PADV2 GREATER GREATER_EQUAL
    LESS_EQUAL SELECT SLICE SIN TRANSPOSE_CONV SPARSE_TO_DENSE TILE EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT
    RSQRT SHAPE POW ARG_MIN FAKE_QUANT REDUCE_PROD REDUCE_MAX PACK LOGICAL_OR ONE_HOT LOGICAL_AND LOGICAL_NOT
    UNPACK REDUCE_MIN FLOOR_DIV REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD RANGE RESIZE_NEAREST_NEIGHBOR
    LEAKY_RELU SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE CEIL REVERSE_V2 ADD_N GATHER_ND COS WHERE RANK
    ELU REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE NON_MAX_SUPPRESSION_V4
    NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM BATCH_MATMUL
    PLACEHOLDER_FOR_GREATER_OP_CODES CUMSUM CALL_ONCE BROADCAST_TO RFFT2D CONV_3D IMAG REAL COMPLEX_ABS
    HASHTABLE HASHTABLE_FIND HASHTABLE_IMPORT HASHTABLE_SIZE REDUCE_ALL CONV_3D_TRANSPOSE VAR_HANDLE
    READ_VARIABLE ASSIGN_VARIABLE BROADCAST_ARGS RANDOM_STANDARD_NORMAL BUCKETIZE RANDOM_UNIFORM MULTINOMIAL
    GELU DYNAMIC_UPDATE_SLICE RELU_0_TO_1 UNSORTED_SEGMENT_PROD UNSORTED_SEGMENT_MAX UNSORTED_SEGMENT_SUM ATAN2
    UNSORTED_SEGMENT_MIN SIGN BITCAST BITWISE_XOR RIGHT_SHIFT STABLEHLO_LOGISTIC STABLEHLO_ADD STABLEHLO_DIVIDE
    STABLEHLO_MULTIPLY STABLEHLO_MAXIMUM STABLEHLO_RESHAPE STABLEHLO_CLAMP STABLEHLO_CONCATENATE
    STABLEHLO_BROADCAST_IN_DIM STABLEHLO_CONVOLUTION STABLEHLO_SLICE STABLEHLO_CUSTOM_CALL STABLEHLO_REDUCE
    STABLEHLO_ABS STABLEHLO_AND STABLEHLO_COSINE STABLEHLO_EXPONENTIAL STABLEHLO_FLOOR STABLEHLO_LOG
    STABLEHLO_MINIMUM STABLEHLO_NEGATE STABLEHLO_OR STABLEHLO_POWER STABLEHLO_REMAINDER STABLEHLO_RSQRT
    STABLEHLO_SELECT STABLEHLO_SUBTRACT STABLEHLO_TANH STABLEHLO_SCATTER STABLEHLO_COMPARE STABLEHLO_CONVERT
    STABLEHLO_DYNAMIC_SLICE STABLEHLO_DYNAMIC_UPDATE_SLICE STABLEHLO_PAD STABLEHLO_IOTA STABLEHLO_DOT_GENERAL
    STABLEHLO_REDUCE_WINDOW STABLEHLO_SORT STABLEHLO_WHILE STABLEHLO_GATHER STABLEHLO_TRANSPOSE DILATE
    STABLEHLO_RNG_BIT_GENERATOR REDUCE_WINDOW STABLEHLO_COMPOSITE STABLEHLO_SHIFT_LEFT STABLEHLO_CBRT
    STABLEHLO_CASE
    """.split()
)

_I8 = struct.Struct("<b")
_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_INT32 = np.dtype("<i4")
_INT64 = np.dtype("<i8")
_UINT8 = np.dtype("u1")
_VTABLES: dict[int, struct.Struct] = {}


class FlatbufferError(ValueError):
    """An offset or a vector of the flatbuffer points outside its bytes."""


def _vtable_format(count: int) -> struct.Struct:
    layout = _VTABLES.get(count)
    if layout is None:
        layout = _VTABLES[count] = struct.Struct(f"<{count}H")
    return layout


class _Table:
    """One flatbuffer table at ``pos`` in ``buf``; ``_FIELDS`` = how many leading vtable entries are read.

    The vtable is decoded once, here: ``self._slots[i]`` is field ``i``'s offset from ``pos`` (0: absent). The
    generated code's "vtable offset" of field ``i`` is ``4 + 2 * i``.
    """

    __slots__ = ("_buf", "_pos", "_slots")
    _FIELDS = 0

    def __init__(self, buf, pos: int) -> None:
        vtable = pos - _I32.unpack_from(buf, pos)[0]
        if vtable < 0:
            raise FlatbufferError(f"the vtable of the table at byte {pos} lies before the start of the buffer")
        count = min((_U16.unpack_from(buf, vtable)[0] - 3) // 2, self._FIELDS)
        self._buf = buf
        self._pos = pos
        self._slots = _vtable_format(count).unpack_from(buf, vtable + 4) if count > 0 else ()

    def _at(self, field: int) -> int:
        """Absolute position of field ``field``, or 0 when the table does not store it."""
        slots = self._slots
        if field < len(slots) and slots[field]:
            return self._pos + slots[field]
        return 0

    def _scalar(self, field: int, layout: struct.Struct) -> int:
        at = self._at(field)
        return layout.unpack_from(self._buf, at)[0] if at else 0

    def _vector(self, field: int, width: int) -> tuple[int, int]:
        """(start of the elements, element count) of a vector field; (0, 0) when absent."""
        at = self._at(field)
        if not at:
            return 0, 0
        start = at + _U32.unpack_from(self._buf, at)[0]
        count = _U32.unpack_from(self._buf, start)[0]
        if start + 4 + count * width > len(self._buf):
            raise FlatbufferError(f"a vector of {count} elements at byte {start} runs past the end of the buffer")
        return start + 4, count

    def _length(self, field: int) -> int:
        return self._vector(field, 1)[1]

    def _numpy(self, field: int, dtype: np.dtype):
        """A vector field as a NumPy view of the buffer, or ``0`` when absent (as the generated code returns)."""
        start, count = self._vector(field, dtype.itemsize)
        if not start:
            return 0
        return np.frombuffer(self._buf, dtype=dtype, count=count, offset=start)

    def _table(self, field: int, kind: type[_Table]):
        at = self._at(field)
        return kind(self._buf, at + _U32.unpack_from(self._buf, at)[0]) if at else None

    def _table_at(self, field: int, index: int, kind: type[_Table]):
        """Element ``index`` of a vector of tables, or ``None`` when the vector is absent."""
        start, count = self._vector(field, 4)
        if not start:
            return None
        if not 0 <= index < count:
            raise IndexError(f"table {index} of a vector of {count}")
        at = start + 4 * index
        return kind(self._buf, at + _U32.unpack_from(self._buf, at)[0])

    def _string(self, field: int) -> bytes | None:
        start, count = self._vector(field, 1)
        return bytes(self._buf[start : start + count]) if start else None


class Buffer(_Table):
    """``table Buffer { data: [ubyte]; offset: ulong; size: ulong; }``"""

    __slots__ = ()
    _FIELDS = 3

    def DataLength(self) -> int:
        return self._length(0)

    def DataAsNumpy(self):
        return self._numpy(0, _UINT8)

    def Offset(self) -> int:
        return self._scalar(1, _U64)

    def Size(self) -> int:
        return self._scalar(2, _U64)


class QuantizationParameters(_Table):
    """``table QuantizationParameters { min; max; scale; zero_point: [long]; ... }`` (the zero points only)."""

    __slots__ = ()
    _FIELDS = 4

    def ZeroPointLength(self) -> int:
        return self._length(3)

    def ZeroPointAsNumpy(self):
        return self._numpy(3, _INT64)


class SparsityParameters(_Table):
    """Present or not: inspection only asks whether a tensor is sparse-encoded."""

    __slots__ = ()


class Tensor(_Table):
    """``table Tensor { shape; type; buffer; name; quantization; is_variable; sparsity; shape_signature; ... }``"""

    __slots__ = ()
    _FIELDS = 8

    def ShapeLength(self) -> int:
        return self._length(0)

    def ShapeAsNumpy(self):
        return self._numpy(0, _INT32)

    def Type(self) -> int:
        return self._scalar(1, _I8)

    def Buffer(self) -> int:
        return self._scalar(2, _U32)

    def Name(self) -> bytes | None:
        return self._string(3)

    def Quantization(self) -> QuantizationParameters | None:
        return self._table(4, QuantizationParameters)

    def Sparsity(self) -> SparsityParameters | None:
        return self._table(6, SparsityParameters)

    def ShapeSignatureLength(self) -> int:
        return self._length(7)

    def ShapeSignatureAsNumpy(self):
        return self._numpy(7, _INT32)


class _Wiring(_Table):
    """What operators and subgraphs both have: tensor indices ``inputs: [int]`` and ``outputs: [int]`` in fields
    1 and 2 (``-1`` marks an omitted optional input)."""

    __slots__ = ()

    def InputsLength(self) -> int:
        return self._length(1)

    def InputsAsNumpy(self):
        return self._numpy(1, _INT32)

    def OutputsLength(self) -> int:
        return self._length(2)

    def OutputsAsNumpy(self):
        return self._numpy(2, _INT32)


class Operator(_Wiring):
    """``table Operator { opcode_index: uint; inputs: [int]; outputs: [int]; ... }``"""

    __slots__ = ()
    _FIELDS = 3

    def OpcodeIndex(self) -> int:
        return self._scalar(0, _U32)


class SubGraph(_Wiring):
    """``table SubGraph { tensors: [Tensor]; inputs: [int]; outputs: [int]; operators: [Operator]; ... }``"""

    __slots__ = ()
    _FIELDS = 4

    def TensorsLength(self) -> int:
        return self._length(0)

    def Tensors(self, index: int) -> Tensor | None:
        return self._table_at(0, index, Tensor)

    def OperatorsLength(self) -> int:
        return self._length(3)

    def Operators(self, index: int) -> Operator | None:
        return self._table_at(3, index, Operator)


class OperatorCode(_Table):
    """``table OperatorCode { deprecated_builtin_code: byte; custom_code: string; version; builtin_code; }``"""

    __slots__ = ()
    _FIELDS = 4

    def DeprecatedBuiltinCode(self) -> int:
        return self._scalar(0, _I8)

    def CustomCode(self) -> bytes | None:
        return self._string(1)

    def BuiltinCode(self) -> int:
        return self._scalar(3, _I32)


class Model(_Table):
    """``table Model { version; operator_codes; subgraphs; description; buffers; ... }`` — the root table."""

    __slots__ = ()
    _FIELDS = 5

    @classmethod
    def GetRootAs(cls, buf, offset: int = 0) -> Model:
        return cls(buf, offset + _U32.unpack_from(buf, offset)[0])

    def OperatorCodesLength(self) -> int:
        return self._length(1)

    def OperatorCodes(self, index: int) -> OperatorCode | None:
        return self._table_at(1, index, OperatorCode)

    def SubgraphsLength(self) -> int:
        return self._length(2)

    def Subgraphs(self, index: int) -> SubGraph | None:
        return self._table_at(2, index, SubGraph)

    def BuffersLength(self) -> int:
        return self._length(4)

    def Buffers(self, index: int) -> Buffer | None:
        return self._table_at(4, index, Buffer)


def operator_names(model) -> list[str]:
    """Op name of each operator code of ``model`` (this module's or the generated one): the builtin name, the
    custom code of a custom op, ``BUILTIN_<n>`` for a code newer than :data:`BUILTIN_OPERATORS`."""
    names = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        number = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
        name = BUILTIN_OPERATORS[number] if 0 <= number < len(BUILTIN_OPERATORS) else f"BUILTIN_{number}"
        custom = code.CustomCode() if name == "CUSTOM" else None
        names.append(custom.decode("utf-8", "replace") if custom else name)
    return names

"""``tflite_opt.measure.flatbuffer``, the reader inspection and the memory check use instead of LiteRT's generated
schema: the same values as the schema on every field of a varied set of real files, the same ``analyze`` and
``plan_of`` results, tables that cannot drift from the schema, damaged content still an ``EvaluationError``, and
``evaluate`` importing neither the schema nor ``flatbuffers``."""

from __future__ import annotations

import inspect as pyinspect
import json
import struct
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from tests.fixtures_eval import CUSTOM_OP, _converter_for, with_custom_op
from tflite_opt.cli import cli
from tflite_opt.errors import EvaluationError
from tflite_opt.measure import flatbuffer, inspection, resources

# Accessors that take an index, each with its ``...Length``.
INDEXED = {"Subgraphs", "OperatorCodes", "Buffers", "Tensors", "Operators"}


def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _external_buffers(content: bytes) -> bytes:
    """``content`` laid out the way the converter writes files over 2 GB: each buffer's bytes after the
    flatbuffer, found by ``offset``/``size``, instead of inline ``data``."""
    from tflite_opt.quantize import flatbuffer_edits

    model = flatbuffer_edits.read(content)
    blobs = {}
    for index, buffer in enumerate(model.buffers):
        if buffer.data is not None and len(buffer.data):
            blobs[index] = bytes(buffer.data)
            buffer.data, buffer.offset, buffer.size = None, 2, len(blobs[index])
    size = len(flatbuffer_edits.write(model))  # offsets are fixed-width: setting them keeps this size
    end, placed = -(-size // 16) * 16, {}
    for index, blob in blobs.items():
        placed[index], end = end, -(-(end + len(blob)) // 16) * 16
        model.buffers[index].offset = placed[index]
    packed = flatbuffer_edits.write(model)
    assert len(packed) == size
    out = bytearray(end)
    out[:size] = packed
    for index, blob in blobs.items():
        out[placed[index] : placed[index] + len(blob)] = blob
    return bytes(out)


def _old_schema(content: bytes) -> bytes:
    """``content`` with its op codes only in ``deprecated_builtin_code``, as pre-2.4 exporters wrote them."""
    from tflite_opt.quantize import flatbuffer_edits

    model = flatbuffer_edits.read(content)
    for code in model.operatorCodes:
        code.deprecatedBuiltinCode, code.builtinCode = code.builtinCode, 0
    return flatbuffer_edits.write(model)


def _sparse_dense_model(rng):
    """Two Dense layers whose kernels are 90% zeros: the converter sparse-encodes them (EXPERIMENTAL_SPARSITY)."""
    import keras
    import tensorflow as tf

    x = rng.random((10, 64), dtype=np.float32)
    inputs = keras.Input((64,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(8)(keras.layers.Dense(64)(inputs)))
    for layer in model.layers[1:]:
        kernel, bias = layer.get_weights()
        kernel[rng.random(kernel.shape) < 0.9] = 0
        layer.set_weights([kernel, bias])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY, tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([sample[None]] for sample in x)
    return converter.convert()


def _two_signatures_with_a_loop(folder):
    """A SavedModel with two signatures, one of them a ``tf.while_loop``: 4 subgraphs (2 + cond and body)."""
    import tensorflow as tf

    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="x")])
        def loop(self, x):
            _, y = tf.while_loop(lambda i, y: i < 3, lambda i, y: (i + 1, y * 2.0), [tf.constant(0), x])
            return {"y": y}

        @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="x")])
        def shift(self, x):
            return {"z": x + 1.0}

    module = Module()
    tf.saved_model.save(module, str(folder / "two_sig"), signatures={"loop": module.loop, "shift": module.shift})
    converter = tf.lite.TFLiteConverter.from_saved_model(str(folder / "two_sig"), signature_keys=["loop", "shift"])
    return converter.convert()


@pytest.fixture(scope="module")
def files(tmp_path_factory, tflite_files, no_signature_tflite, two_io_tflite, keras3_cnn_path, digits):
    """name -> bytes: the converter's files (fp32, dynamic, float16, int8, int16x8, ...), the LiteRT Quantizer's
    (int4 per channel and per block of 32, int8 weight-only), a custom op, an old-schema file, two signatures
    with a WHILE loop, sparse-encoded kernels, buffers stored after the flatbuffer."""
    import keras

    folder = tmp_path_factory.mktemp("reader")
    found = {name: path.read_bytes() for name, path in tflite_files.items()}
    found["no_signature"] = no_signature_tflite.read_bytes()
    found["two_io_fp32"] = two_io_tflite["fp32"].read_bytes()
    found["two_io_int8"] = two_io_tflite["int8"].read_bytes()
    model = keras.saving.load_model(keras3_cnn_path)
    found["int16x8"] = _converter_for(model, "int16x8", digits[0][:20]).convert()
    for name, args in {
        "int4": ["--mode", "int4"],
        "int4_block32": ["--mode", "int4", "--granularity", "block32"],
        "int8_weights": ["--mode", "int8-weights"],
    }.items():
        out = folder / f"{name}.tflite"
        result = CliRunner().invoke(cli, ["-q", "convert", str(tflite_files["fp32"]), "-o", str(out), *args])
        assert result.exit_code == 0, result.output
        found[name] = out.read_bytes()
    found["custom_op"] = with_custom_op(tflite_files["fp32"], folder / "custom.tflite").read_bytes()
    found["old_schema"] = _old_schema(found["fp32"])
    found["two_signatures_loop"] = _two_signatures_with_a_loop(folder)
    found["sparse"] = _sparse_dense_model(np.random.default_rng(0))
    found["external_buffers"] = _external_buffers(found["int8"])
    return found


def _methods(kind: type) -> list[str]:
    return sorted(name for name in vars(kind) if name[0].isupper() and name != "GetRootAs")


def _compare(ours, theirs, where: str, seen: dict[str, int]) -> None:
    """Every accessor of ``ours`` (this reader's table) gives what the generated table ``theirs`` gives."""
    assert type(ours).__name__ == type(theirs).__name__, where
    seen[type(ours).__name__] = seen.get(type(ours).__name__, 0) + 1
    methods = [name for kind in type(ours).__mro__ if kind is not object for name in _methods(kind)]
    for name in methods:
        if name in INDEXED:
            count = getattr(ours, f"{name}Length")()
            assert count == getattr(theirs, f"{name}Length")(), f"{where}.{name}Length"
            for i in range(count):
                _compare(getattr(ours, name)(i), getattr(theirs, name)(i), f"{where}.{name}({i})", seen)
            continue
        mine, expected = getattr(ours, name)(), getattr(theirs, name)()
        if isinstance(expected, np.ndarray):
            assert isinstance(mine, np.ndarray) and mine.dtype == expected.dtype, f"{where}.{name}"
            assert np.array_equal(mine, expected), f"{where}.{name}"
        elif expected is None or isinstance(expected, (int, bytes)):
            assert type(mine) is type(expected) and mine == expected, f"{where}.{name}: {mine!r} != {expected!r}"
        else:
            _compare(mine, expected, f"{where}.{name}", seen)


def test_every_field_reads_as_the_generated_schema_reads_it(files):
    schema = _schema()
    totals: dict[str, int] = {}
    for name, content in files.items():
        seen: dict[str, int] = {}
        _compare(flatbuffer.Model.GetRootAs(content, 0), schema.Model.GetRootAs(content, 0), name, seen)
        assert seen["Tensor"] >= 5 and seen["Operator"] >= 2 and seen["Buffer"] >= 3, (name, seen)
        for kind, count in seen.items():
            totals[kind] = totals.get(kind, 0) + count
    # Every table kind the reader offers was compared, on many instances.
    kinds = {"Model", "SubGraph", "Tensor", "Operator", "OperatorCode", "Buffer"}
    assert kinds | {"QuantizationParameters", "SparsityParameters"} == set(totals)
    assert totals["Tensor"] > 300 and totals["SparsityParameters"] >= 2


def test_the_files_cover_what_they_claim(files):
    """The varied set really holds the cases: several subgraphs, sparse tensors, external buffers, old codes..."""
    details = {name: inspection.analyze(content) for name, content in files.items()}
    assert details["two_signatures_loop"]["subgraphs"] == 4
    assert any(o.op == "WHILE" for o in details["two_signatures_loop"]["ops"])
    assert details["sparse"]["sparsity"] > 0.85
    assert details["int16x8"]["mode"] == "int16x8"
    assert details["int4"]["mode"] == "int4" and details["int8_weights"]["mode"] == "int8-weights"
    assert details["int4_block32"]["weight_tensors"]["float16"] >= 1
    assert CUSTOM_OP in {o.op for o in details["custom_op"]["ops"]}
    assert details["old_schema"]["ops"] == details["fp32"]["ops"]
    model = flatbuffer.Model.GetRootAs(files["external_buffers"], 0)
    assert {model.Buffers(i).DataLength() for i in range(model.BuffersLength())} == {0}
    assert details["external_buffers"]["weight_bytes"] == details["int8"]["weight_bytes"]


def test_analyze_and_plan_of_match_the_generated_schema(files, monkeypatch):
    schema = _schema()
    for name, content in files.items():
        ours = (
            inspection.analyze(content),
            resources.plan_of(content, resizable=True),
            resources.plan_of(content, resizable=False),
        )
        with monkeypatch.context() as patch:
            patch.setattr(flatbuffer, "Model", schema.Model)
            theirs = (
                inspection.analyze(content),
                resources.plan_of(content, resizable=True),
                resources.plan_of(content, resizable=False),
            )
        assert ours[1] is not None and ours[1].ops, name
        assert ours == theirs, name


def test_builtin_operator_table_is_the_schemas():
    schema = _schema()
    generated = {name: code for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    assert {name: code for code, name in enumerate(flatbuffer.BUILTIN_OPERATORS)} == generated


def test_tensor_type_tables_are_the_schemas():
    schema = _schema()
    generated = {name: code for name, code in vars(schema.TensorType).items() if not name.startswith("_")}
    assert {name.upper(): code for code, name in inspection.TENSOR_TYPE_NAMES.items()} == generated
    # resources counts bits for every type with a fixed size; NumPy agrees where it knows the type.
    sized = {code for name, code in generated.items() if name not in ("STRING", "RESOURCE", "VARIANT")}
    assert set(resources._BITS) == sized
    for code in sized:
        name = inspection.TENSOR_TYPE_NAMES[code]
        if hasattr(np, name):
            assert resources._BITS[code] == 8 * np.dtype(name).itemsize, name


def test_an_unknown_op_code_gets_a_name():
    class Code:
        def __init__(self, number: int, custom: bytes | None = None) -> None:
            self.number, self.custom = number, custom

        def BuiltinCode(self):
            return self.number

        def DeprecatedBuiltinCode(self):
            return min(self.number, 127)

        def CustomCode(self):
            return self.custom

    codes = [Code(3), Code(32, b"MyOp"), Code(32), Code(999)]

    class Model:
        def OperatorCodesLength(self):
            return len(codes)

        def OperatorCodes(self, i):
            return codes[i]

    assert flatbuffer.operator_names(Model()) == ["CONV_2D", "MyOp", "CUSTOM", "BUILTIN_999"]


def test_damaged_content_is_an_evaluation_error_or_a_plain_result(files):
    """Truncated or overwritten bytes: ``analyze`` raises ``EvaluationError`` (never a raw struct/index error) or
    reads something; ``plan_of`` answers ``None`` or a plan."""
    content = files["int8"]
    rng = np.random.default_rng(0)
    damaged = [content[:n] for n in (0, 3, 8, 64, len(content) // 3, len(content) - 1)]
    for _ in range(150):
        copy = bytearray(content)
        at = int(rng.integers(0, 2048))  # the tables and vtables sit near the start and the end
        at = at if rng.random() < 0.5 else len(copy) - 1 - at
        copy[at : at + 4] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
        damaged.append(bytes(copy))
    errors = 0
    for case in damaged:
        try:
            result = inspection.analyze(case, source="bad.tflite")
        except EvaluationError as exc:
            assert str(exc).startswith("cannot read the flatbuffer of bad.tflite: "), exc
            errors += 1
        else:
            assert set(result) >= {"ops", "weight_bytes", "sparsity", "integer_only", "mode"}
        plan = resources.plan_of(case, resizable=True)
        assert plan is None or isinstance(plan, resources.TensorPlan)
    assert errors >= 10


def test_a_vector_past_the_end_is_refused_not_read():
    # A root table whose vtable stores field 2 (subgraphs) only, pointing at a vector that claims 1000 elements.
    model = struct.pack("<IHHHHHiII", 14, 10, 8, 0, 0, 4, 10, 4, 1000)
    with pytest.raises(flatbuffer.FlatbufferError, match="a vector of 1000 elements at byte 22 runs past the end"):
        flatbuffer.Model.GetRootAs(model, 0).SubgraphsLength()
    assert flatbuffer.Model.GetRootAs(model, 0).BuffersLength() == 0  # beyond the vtable: absent
    # A subgraph with only field 0 (tensors) stored: absent fields read as the schema's defaults.
    subgraph = flatbuffer.SubGraph(struct.pack("<HHHHiII", 8, 8, 4, 0, 8, 4, 1000), 8)
    with pytest.raises(flatbuffer.FlatbufferError, match="runs past the end"):
        subgraph.Tensors(0)
    assert subgraph.InputsLength() == 0 and subgraph.InputsAsNumpy() == 0 and subgraph.Operators(0) is None


def test_evaluate_imports_neither_the_generated_schema_nor_flatbuffers(tflite_files, tmp_path, digits):
    data = tmp_path / "one.npz"
    np.savez(data, x=digits[2][:1], y=digits[3][:1])
    command = [sys.executable, "-X", "importtime", "-m", "tflite_opt", "-q", "evaluate", str(tflite_files["int8"])]
    process = subprocess.run(
        [*command, "--data", str(data), "--runs", "0", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 0, process.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[1].strip() for line in process.stderr.splitlines() if line.startswith("import time:")
    }
    assert {"tflite_opt.measure.flatbuffer", "tflite_opt.measure.inspection", "ai_edge_litert.interpreter"} <= imported
    assert {"ai_edge_litert.schema_py_generated", "flatbuffers"} & imported == set()
    variant = json.loads(process.stdout)["variants"][0]
    assert variant["integer_only"] is True and variant["mode"] == "int8"


def test_reader_methods_exist_in_the_generated_schema():
    """Every accessor offered has the generated class's name and arity, so callers can take either reader."""
    schema = _schema()
    kinds = [flatbuffer.Model, flatbuffer.SubGraph, flatbuffer.Tensor, flatbuffer.Operator]
    kinds += [flatbuffer.OperatorCode, flatbuffer.Buffer, flatbuffer.QuantizationParameters]
    for kind in kinds:
        generated = getattr(schema, kind.__name__)
        for name in (n for k in kind.__mro__ if k is not object for n in _methods(k)):
            ours, theirs = pyinspect.signature(getattr(kind, name)), pyinspect.signature(getattr(generated, name))
            assert len(ours.parameters) == len(theirs.parameters), (kind.__name__, name)

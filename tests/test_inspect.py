"""``tflite-opt inspect`` and the flatbuffer analysis behind it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tflite_opt.cli import cli
from tflite_opt.errors import EvaluationError
from tflite_opt.measure.inspection import inspect_model


def _inspect_json(path) -> dict:
    result = CliRunner().invoke(cli, ["inspect", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _op(doc: dict, name: str) -> dict:
    return next(op for op in doc["ops"] if op["op"] == name)


def test_int8_file_is_integer_only_with_int8_io(tflite_files):
    doc = _inspect_json(tflite_files["int8"])
    assert doc["integer_only"] is True
    assert doc["mode"] == "int8"
    assert doc["signature"] == "serving_default"
    (image,) = doc["inputs"]
    assert (image["name"], image["dtype"], image["shape"]) == ("image", "int8", [None, 8, 8, 1])
    # inputs in [0, 1] calibrate to scale 1/255 and zero point -128
    assert image["scale"] == pytest.approx(1 / 255, rel=1e-3) and image["zero_point"] == -128
    (logits,) = doc["outputs"]
    assert logits["dtype"] == "int8" and logits["scale"] > 0 and isinstance(logits["zero_point"], int)
    assert _op(doc, "CONV_2D") == {"op": "CONV_2D", "count": 2, "dtypes": {"int8": 2}}
    assert _op(doc, "FULLY_CONNECTED")["dtypes"] == {"int8": 2}
    assert not any(op["op"] in ("QUANTIZE", "DEQUANTIZE") for op in doc["ops"])
    assert set(doc["weight_bytes"]) == {"int8", "int32"}
    assert doc["weight_bytes"]["int8"] > 30_000


def test_int8_with_float_io_is_not_integer_only(tflite_files):
    doc = _inspect_json(tflite_files["int8_float_io"])
    assert doc["integer_only"] is False
    assert doc["mode"] == "int8"
    assert doc["inputs"][0]["dtype"] == "float32" and doc["inputs"][0]["scale"] is None
    assert _op(doc, "QUANTIZE")["dtypes"] == {"float32->int8": 1}
    assert _op(doc, "DEQUANTIZE")["dtypes"] == {"int8->float32": 1}
    assert _op(doc, "CONV_2D")["dtypes"] == {"int8": 2}


def test_float16_weights_show_as_float16(tflite_files):
    doc = _inspect_json(tflite_files["float16"])
    fp32 = _inspect_json(tflite_files["fp32"])
    assert doc["mode"] == "float16" and doc["integer_only"] is False
    # every float32 kernel of the fp32 file is stored as float16: half the bytes, no float32 left
    assert "float32" not in doc["weight_bytes"]
    assert doc["weight_bytes"]["float16"] == fp32["weight_bytes"]["float32"] // 2
    assert set(_op(doc, "DEQUANTIZE")["dtypes"]) == {"float16->float32"}
    assert _op(doc, "CONV_2D")["dtypes"] == {"float32": 2}


def test_dynamic_range_weights_are_int8_with_float_io(tflite_files):
    doc = _inspect_json(tflite_files["dynamic"])
    assert doc["mode"] == "dynamic" and doc["integer_only"] is False
    assert [t["dtype"] for t in doc["inputs"] + doc["outputs"]] == ["float32", "float32"]
    # the big kernels are int8; tiny ones (conv1's 144 weights) stay float32 below the converter's threshold
    assert doc["weight_bytes"]["int8"] > 30_000
    assert doc["weight_bytes"]["int8"] > 5 * doc["weight_bytes"].get("float32", 0)
    assert _op(doc, "FULLY_CONNECTED")["dtypes"].get("float32 (int8 weights)", 0) >= 1


def test_fp32_file(tflite_files):
    doc = _inspect_json(tflite_files["fp32"])
    assert doc["mode"] == "fp32" and doc["integer_only"] is False
    assert doc["sparsity"] == pytest.approx(0.0, abs=0.01)
    assert doc["size_bytes"] == tflite_files["fp32"].stat().st_size
    assert doc["ops"][0]["count"] >= doc["ops"][-1]["count"]  # most frequent first


def test_zero_weights_are_counted(tmp_path, tflite_files):
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(tflite_files["fp32"].read_bytes())
    subgraph = model.subgraphs[0]
    kernels = [
        t
        for t in subgraph.tensors
        if len(t.shape) >= 2
        and t.type == 0
        and model.buffers[t.buffer].data is not None
        and len(model.buffers[t.buffer].data) > 0
    ]
    total = sum(int(np.prod(t.shape)) for t in kernels)
    largest = max(kernels, key=lambda t: int(np.prod(t.shape)))
    values = np.frombuffer(bytes(model.buffers[largest.buffer].data), dtype=np.float32).copy()
    values[: values.size // 2] = 0.0  # prune half of the largest kernel
    model.buffers[largest.buffer].data = np.frombuffer(values.tobytes(), dtype=np.uint8)
    path = tmp_path / "half_pruned.tflite"
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))

    before = inspect_model(tflite_files["fp32"].read_bytes()).sparsity
    after = inspect_model(path.read_bytes()).sparsity
    assert after - before == pytest.approx((values.size // 2) / total, abs=1e-3)


def test_two_io_model_lists_signature_names(two_io_tflite):
    doc = _inspect_json(two_io_tflite["int8"])
    assert sorted(t["name"] for t in doc["inputs"]) == ["image", "meta"]
    assert sorted(t["name"] for t in doc["outputs"]) == ["digit", "parity"]
    shapes = {t["name"]: t["shape"] for t in doc["inputs"] + doc["outputs"]}
    assert shapes == {"image": [None, 8, 8, 1], "meta": [None, 4], "digit": [None, 10], "parity": [None, 2]}
    assert doc["integer_only"] is True


def test_file_without_signature_falls_back_to_tensor_names(no_signature_tflite):
    doc = _inspect_json(no_signature_tflite)
    assert doc["signature"] is None
    assert doc["inputs"][0]["name"] == "serving_default_image:0"


def test_table_output(tflite_files):
    result = CliRunner().invoke(cli, ["inspect", str(tflite_files["int8"])])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "integer-only: yes" in out
    assert "mode looks like int8" in out
    for word in ("Inputs and outputs", "Ops", "Weights", "CONV_2D", "int8 ×2", "0.00392157", "-128"):
        assert word in out, word


def test_truncated_file_exits_1_with_one_line(tmp_path, tflite_files):
    path = tmp_path / "truncated.tflite"
    path.write_bytes(tflite_files["int8"].read_bytes()[:5000])
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: {path} is not a valid .tflite file (damaged or truncated flatbuffer); re-export or re-download it"
    ]
    assert result.stdout == ""


def test_empty_file_exits_1(tmp_path):
    path = tmp_path / "empty.tflite"
    path.write_bytes(b"")
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    assert result.exit_code == 1
    assert "is empty (0 bytes)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_file_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path / "nope.tflite")])
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_unknown_signature(tflite_files):
    result = CliRunner().invoke(cli, ["inspect", str(tflite_files["fp32"]), "--signature", "train"])
    assert result.exit_code == 1
    assert "has no signature 'train'; its signatures are 'serving_default'" in result.stderr


def test_library_raises_evaluation_error_on_garbage():
    with pytest.raises(EvaluationError, match="not a valid .tflite file"):
        inspect_model(np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8).tobytes(), path="junk")

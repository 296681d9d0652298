"""The LiteRT Quantizer backend: ``convert --backend quantizer`` and a float ``.tflite`` as a source (SPEC §7).

Every produced file is opened by ``evaluate`` or ``inspect`` (the product's own readers), and every check that
something was quantized reads the output file.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from tflite_opt.cli import cli
from tflite_opt.measure.inspection import analyze, inspect_model


def run(*args):
    return CliRunner().invoke(cli, ["-q", *map(str, args)])


def evaluate(files, data, *extra):
    """``tflite-opt evaluate --format json`` on files (the first is the reference): variant name -> row."""
    result = run("evaluate", *files, "--data", data, "--runs", "2", "--warmup", "1", "--format", "json", *extra)
    assert result.exit_code == 0, result.output
    return {v["name"]: v for v in json.loads(result.stdout)["variants"]}


def weight_dtypes_of(path, op_type):
    """The stored dtype of each ``op_type`` op's weight, following a weight-only DEQUANTIZE back to its constant."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    subgraph = model.subgraphs[0]
    producer = {int(out): op for op in subgraph.operators for out in op.outputs}
    found = {}
    for op in subgraph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if names[max(code.builtinCode, code.deprecatedBuiltinCode)] != op_type:
            continue
        index = int(op.inputs[1])
        source = producer.get(index)
        if source is not None:
            index = int(source.inputs[0])
        tensor = subgraph.tensors[index]
        found[tensor.name.decode().split(";")[0]] = types[tensor.type]
    return found


def assert_failed(result, code, *fragments, out=None):
    assert result.exit_code == code, result.output
    message = result.stderr.strip()
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in message, message
    if out is not None:
        assert not out.exists()


# ---- the demo-sized CNN (32x32 digits, MobileNet-flavoured): sizes and accuracy of the new modes ---------------


@pytest.fixture(scope="module")
def demo_cnn(tmp_path_factory):
    """The demo's CNN trained briefly on upscaled digits, with its test/calibration data and its fp32 file."""
    import keras

    from tflite_opt.workflows.demo import build_cnn, digits_dataset

    keras.utils.set_random_seed(0)
    (train_x, train_y), (test_x, test_y) = digits_dataset()
    model = build_cnn(keras)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(train_x, train_y, epochs=6, batch_size=32, verbose=0)
    folder = tmp_path_factory.mktemp("demo_cnn")
    model.save(folder / "model.keras")
    np.savez(folder / "test.npz", x=test_x, y=test_y)
    np.savez(folder / "calib.npz", x=train_x[:300])
    assert run("convert", folder / "model.keras", "-o", folder / "fp32.tflite").exit_code == 0
    return folder


@pytest.mark.slow
def test_int4_on_the_demo_cnn_is_small_accurate_and_runs_under_xnnpack(demo_cnn):
    folder = demo_cnn
    files = {"fp32": folder / "fp32.tflite"}
    for name, args in {
        "int4": ["--mode", "int4"],
        "int4_block32": ["--mode", "int4", "--granularity", "block32"],
        "int4_block128": ["--mode", "int4", "--granularity", "block128"],
        "int8_weights": ["--mode", "int8-weights"],
        "int4_gptq": [
            "--mode",
            "int4",
            "--algorithm",
            "gptq",
            "--representative-data",
            folder / "calib.npz",
            "--num-samples",
            64,
        ],
    }.items():
        out = folder / f"{name}.tflite"
        result = run("convert", files["fp32"], "-o", out, *args)
        assert result.exit_code == 0, result.output
        assert result.stdout.strip().endswith("(LiteRT Quantizer)")
        files[name] = out
    rows = evaluate(list(files.values()), folder / "test.npz")  # XNNPACK on: evaluate's default
    fp32 = rows["fp32"]
    assert fp32["accuracy"] > 0.95
    assert rows["int4"]["size_ratio"] <= 0.16
    assert rows["int8_weights"]["size_ratio"] <= 0.30
    for name in ("int4", "int4_block32", "int4_block128", "int4_gptq", "int8_weights"):
        assert rows[name]["error"] is None
        assert rows[name]["accuracy"] >= fp32["accuracy"] - 0.01, (name, rows[name]["accuracy"])
        assert rows[name]["latency_ms"]["median"] > 0
    # Block granularity is real: the dense layers carry int4 weights with one float16 scale per 32 inputs.
    block = analyze(files["int4_block32"].read_bytes())
    assert block["weight_tensors"]["int4"] == 5 and block["weight_tensors"]["float16"] == 2
    assert weight_dtypes_of(files["int4"], "FULLY_CONNECTED") == {
        "digits_cnn_1/fc_1/MatMul": "int4",
        "digits_cnn_1/logits_1/MatMul": "int4",
    }
    assert set(weight_dtypes_of(files["int4"], "DEPTHWISE_CONV_2D").values()) == {"float32"}  # no int4 kernel


# ---- a float .tflite made directly with TFLiteConverter (tests/fixtures_eval.py) --------------------------------


@pytest.fixture(scope="module")
def calib_100(tmp_path_factory, digits):
    """The 100 samples ``tflite_files``' converter int8 file was calibrated with."""
    path = tmp_path_factory.mktemp("calib100") / "calib.npy"
    np.save(path, digits[0][:100])
    return path


def test_float_tflite_from_the_converter_quantizes_in_every_new_mode(tflite_files, calib_100, data_dir, tmp_path):
    source = tflite_files["fp32"]
    outs = {}
    for mode in ("int4", "int8-weights", "int4-weights", "dynamic"):
        outs[mode] = tmp_path / f"{mode}.tflite"
        result = run("convert", source, "-o", outs[mode], "--mode", mode)
        assert result.exit_code == 0, result.output
    outs["q_int8"] = tmp_path / "q_int8.tflite"
    result = run("convert", source, "-o", outs["q_int8"], "--mode", "int8", "--representative-data", calib_100)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("int8: ") and result.stdout.strip().endswith(
        f"-> {outs['q_int8']} (LiteRT Quantizer)"
    )
    rows = evaluate([source, tflite_files["int8"], *outs.values()], data_dir / "test.npz")
    converter_int8, quantizer_int8 = rows["cnn_int8"], rows["q_int8"]
    assert abs(quantizer_int8["accuracy"] - converter_int8["accuracy"]) <= 0.01
    assert rows["int4"]["accuracy"] >= rows["cnn_fp32"]["accuracy"] - 0.02
    assert rows["int8-weights"]["size_ratio"] <= 0.30
    # Static int8 from the quantizer: integer-only with int8 I/O, as the converter's default.
    info = inspect_model(outs["q_int8"].read_bytes())
    assert info.integer_only is True and info.mode == "int8"
    assert [s.dtype for s in info.inputs + info.outputs] == ["int8", "int8"]
    assert analyze(outs["int4"].read_bytes())["weight_tensors"]["int4"] == 4
    assert analyze(outs["int8-weights"].read_bytes())["weight_tensors"]["int8"] == 4


HEAVY = ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization")
NO_TF_SCRIPT = """
import json, runpy, sys
record, sys.argv = sys.argv[1], ["tflite-opt", *sys.argv[2:]]
code = 0
try:
    runpy.run_module("tflite_opt", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
with open(record, "w") as handle:
    json.dump({"code": code, "heavy": sorted(n for n in %r if n in sys.modules)}, handle)
""" % (HEAVY,)


@pytest.mark.parametrize("args", [["--mode", "int4"], ["--mode", "int8", "--representative-data", "CALIB"]])
def test_tflite_to_tflite_never_imports_tensorflow(tmp_path, tflite_files, calib_100, args):
    record = tmp_path / "record.json"
    out = tmp_path / "out.tflite"
    args = [str(calib_100) if a == "CALIB" else a for a in args]
    process = subprocess.run(
        [sys.executable, "-c", NO_TF_SCRIPT, str(record), "convert", str(tflite_files["fp32"]), "-o", str(out), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert json.loads(record.read_text()) == {"code": 0, "heavy": []}, process.stderr
    assert out.stat().st_size < 0.35 * tflite_files["fp32"].stat().st_size


# ---- old schema, no signature, float16 weights, already quantized ----------------------------------------------


@pytest.fixture(scope="module")
def old_schema_tflite(tmp_path_factory, tflite_files):
    """The converter's fp32 file rewritten as pre-2.4 exporters wrote it: ops only in deprecated_builtin_code, no
    SignatureDef."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(tflite_files["fp32"].read_bytes())
    for code in model.operatorCodes:
        code.deprecatedBuiltinCode, code.builtinCode = code.builtinCode, 0
    model.signatureDefs = []
    path = tmp_path_factory.mktemp("old") / "old_schema.tflite"
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    return path


def test_old_schema_file_without_signature_is_quantized(old_schema_tflite, tflite_files, calib_100, data_dir, tmp_path):
    from ai_edge_litert.tools import flatbuffer_utils

    assert all(c.builtinCode == 0 for c in flatbuffer_utils.read_model(str(old_schema_tflite)).operatorCodes)
    int4 = tmp_path / "old_int4.tflite"
    result = CliRunner().invoke(cli, ["convert", str(old_schema_tflite), "-o", str(int4), "--mode", "int4"])
    assert result.exit_code == 0, result.output
    assert "normalized 7 old-schema operator code(s)" in result.stderr
    assert "added signature 'serving_default'" in result.stderr
    int8 = tmp_path / "old_int8.tflite"
    result = run("convert", old_schema_tflite, "-o", int8, "--mode", "int8", "--representative-data", calib_100)
    assert result.exit_code == 0, result.output
    info = inspect_model(int4.read_bytes())
    assert info.signature == "serving_default"
    assert [s.name for s in info.inputs] == ["serving_default_image:0"]  # the tensor names, kept
    assert analyze(int4.read_bytes())["weight_tensors"]["int4"] == 4
    assert inspect_model(int8.read_bytes()).integer_only is True
    rows = evaluate([tflite_files["fp32"], int4, int8], data_dir / "test.npz")
    assert rows["old_int4"]["accuracy"] >= rows["cnn_fp32"]["accuracy"] - 0.02
    assert rows["old_int8"]["accuracy"] >= rows["cnn_fp32"]["accuracy"] - 0.02


def test_unnormalized_old_schema_would_be_a_silent_copy_and_is_an_error(old_schema_tflite, tmp_path, monkeypatch):
    """What litert_quantizer does with an old-schema file (returns it unchanged) never becomes an exit-0 file."""
    from tflite_opt.quantize import flatbuffer_edits

    monkeypatch.setattr(flatbuffer_edits, "normalize_operator_codes", lambda model: 0)
    out = tmp_path / "o.tflite"
    result = run("convert", old_schema_tflite, "-o", out, "--mode", "int4")
    assert_failed(
        result,
        1,
        "--mode int4 would quantize none of the model's 4 weight op(s)",
        "CONV_2D",
        "FULLY_CONNECTED",
        out=out,
    )


def test_a_quantizer_that_skips_targeted_ops_is_an_error(tflite_files, tmp_path, monkeypatch):
    from tflite_opt.quantize import quantizer

    monkeypatch.setattr(quantizer, "_run_quantizer", lambda content, recipe, calibration, min_max: content)
    out = tmp_path / "o.tflite"
    result = run("convert", tflite_files["fp32"], "-o", out, "--mode", "int8-weights")
    assert_failed(result, 1, "left 4 of 4 targeted weight op(s) in float without an error", "CONV_2D", out=out)


def test_float16_weight_file_is_dequantized_then_quantized(tflite_files, data_dir, tmp_path):
    out = tmp_path / "from_f16.tflite"
    result = CliRunner().invoke(cli, ["convert", str(tflite_files["float16"]), "-o", str(out), "--mode", "int4"])
    assert result.exit_code == 0, result.output
    assert "dequantized 8 float16 weight tensor(s) to float32" in result.stderr
    weights = analyze(out.read_bytes())["weight_bytes"]
    assert "float16" not in weights and weights["int4"] > 0
    rows = evaluate([tflite_files["fp32"], out], data_dir / "test.npz")
    assert rows["from_f16"]["accuracy"] >= rows["cnn_fp32"]["accuracy"] - 0.02


@pytest.mark.parametrize("kind, mode", [("int8", "int8"), ("dynamic", "dynamic"), ("int8_float_io", "int8")])
def test_an_already_quantized_file_is_refused_naming_its_mode(tflite_files, tmp_path, kind, mode):
    out = tmp_path / "o.tflite"
    result = run("convert", tflite_files[kind], "-o", out, "--mode", "int4")
    assert_failed(result, 1, "is already quantized", f"(mode looks like {mode})", out=out)


@pytest.mark.parametrize("mode", ["int4", "int8-weights"])
def test_a_quantizer_file_is_refused_too(tflite_files, tmp_path, mode):
    first = tmp_path / "first.tflite"
    assert run("convert", tflite_files["fp32"], "-o", first, "--mode", mode).exit_code == 0
    out = tmp_path / "again.tflite"
    assert_failed(run("convert", first, "-o", out, "--mode", "int4"), 1, f"(mode looks like {mode})", out=out)


def test_fp32_of_a_tflite_still_says_it_is_already_a_tflite(tflite_files, tmp_path):
    out = tmp_path / "o.tflite"
    result = run("convert", tflite_files["fp32"], "-o", out, "--mode", "float16")
    assert_failed(result, 1, "already a .tflite file", "int4-weights", out=out)


# ---- recipes --------------------------------------------------------------------------------------------------


def test_recipe_keeps_one_layer_float(tflite_files, tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps([{"regex": "dense1", "operation": "*", "algorithm_key": "no_quantize"}]))
    out = tmp_path / "o.tflite"
    result = run(
        "convert", tflite_files["fp32"], "-o", out, "--mode", "dynamic", "--backend", "quantizer", "--recipe", recipe
    )
    assert result.exit_code == 0, result.output
    ops = {o.op: o.dtypes for o in inspect_model(out.read_bytes()).ops}
    assert ops["FULLY_CONNECTED"] == {"float32": 1, "float32 (int8 weights)": 1}
    assert ops["CONV_2D"] == {"float32 (int8 weights)": 2}
    assert weight_dtypes_of(out, "FULLY_CONNECTED") == {
        "digits_cnn_1/dense1_1/MatMul": "float32",
        "digits_cnn_1/logits_1/MatMul": "int8",
    }
    assert analyze(out.read_bytes())["weight_bytes"]["float32"] >= 512 * 64 * 4


def test_keep_float_maps_onto_the_quantizer_recipe(tflite_files, tmp_path):
    out = tmp_path / "o.tflite"
    result = run("convert", tflite_files["fp32"], "-o", out, "--mode", "int8-weights", "--keep-float", "logits")
    assert result.exit_code == 0, result.output
    assert weight_dtypes_of(out, "FULLY_CONNECTED") == {
        "digits_cnn_1/dense1_1/MatMul": "int8",
        "digits_cnn_1/logits_1/MatMul": "float32",
    }


def test_recipe_regex_matching_nothing_is_an_error(tflite_files, tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps([{"regex": "no_such_layer", "operation": "*", "algorithm_key": "no_quantize"}]))
    out = tmp_path / "o.tflite"
    result = run("convert", tflite_files["fp32"], "-o", out, "--mode", "int4", "--recipe", recipe)
    assert_failed(result, 1, "entry 1 (regex 'no_such_layer', operation '*') matches no op of the model", out=out)
    result = run("convert", tflite_files["fp32"], "-o", out, "--mode", "int4", "--keep-float", "dense9")
    assert_failed(
        result,
        1,
        "--keep-float 'dense9' matches no op, layer or tensor of the model",
        "close names: ",
        "dense1_1",
        out=out,
    )


def test_recipe_with_invalid_json_names_line_and_column(tflite_files, tmp_path):
    recipe = tmp_path / "bad.json"
    recipe.write_text('[\n  {"regex": ".*",\n   "operation": "*" "algorithm_key": "no_quantize"}\n]\n')
    out = tmp_path / "o.tflite"
    result = run("convert", tflite_files["fp32"], "-o", out, "--mode", "int4", "--recipe", recipe)
    assert_failed(
        result, 1, f"recipe file {recipe} is not valid JSON: Expecting ',' delimiter at line 3, column 21", out=out
    )


def test_recipe_with_an_unknown_operation_is_an_error(tflite_files, tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps([{"regex": ".*", "operation": "CONV2D", "algorithm_key": "no_quantize"}]))
    out = tmp_path / "o.tflite"
    result = run("convert", tflite_files["fp32"], "-o", out, "--mode", "int4", "--recipe", recipe)
    assert_failed(result, 1, "entry 1 of recipe file", "unknown operation 'CONV2D'", "CONV_2D", out=out)


def test_recipe_keeping_everything_float_quantizes_nothing_and_fails(tflite_files, tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps([{"regex": ".*", "operation": "*", "algorithm_key": "no_quantize"}]))
    out = tmp_path / "o.tflite"
    result = run("convert", tflite_files["fp32"], "-o", out, "--mode", "int4", "--recipe", recipe)
    assert_failed(result, 1, "would quantize none", "kept float by --recipe/--keep-float", out=out)


# ---- static int8 / int16x8 / dynamic with --backend quantizer -----------------------------------------------------


def test_quantizer_int8_io_types_mean_what_they_mean_on_the_converter(tflite_files, calib_100, tmp_path):
    dtypes = {}
    for io_type in ("int8", "uint8", "float32"):
        out = tmp_path / f"{io_type}.tflite"
        result = run(
            "convert",
            tflite_files["fp32"],
            "-o",
            out,
            "--mode",
            "int8",
            "--representative-data",
            calib_100,
            "--io-type",
            io_type,
            "--num-samples",
            50,
        )
        assert result.exit_code == 0, result.output
        info = inspect_model(out.read_bytes())
        dtypes[io_type] = ([s.dtype for s in info.inputs], [s.dtype for s in info.outputs], info.integer_only)
    assert dtypes == {
        "int8": (["int8"], ["int8"], True),
        "uint8": (["uint8"], ["uint8"], True),
        "float32": (["float32"], ["float32"], False),
    }


def test_quantizer_calibration_uses_num_samples(tflite_files, calib_100, tmp_path):
    out = tmp_path / "o.tflite"
    result = CliRunner().invoke(
        cli,
        [
            "convert",
            str(tflite_files["fp32"]),
            "-o",
            str(out),
            "--mode",
            "int8",
            "--representative-data",
            str(calib_100),
            "--num-samples",
            "30",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Calibrating on 30 samples" in result.stderr


def test_quantizer_calibration_data_is_validated_like_the_converters(tflite_files, tmp_path):
    calib = tmp_path / "bad.npz"
    np.savez(calib, x=np.zeros((10, 8, 8), np.float32))
    out = tmp_path / "o.tflite"
    result = run("convert", tflite_files["fp32"], "-o", out, "--mode", "int8", "--representative-data", calib)
    assert_failed(result, 1, "input 'image' expects samples of shape (8, 8, 1)", "(8, 8)", out=out)


def test_two_input_tflite_calibrates_by_name(two_io_tflite, two_io_savedmodel, tmp_path):
    out = tmp_path / "two_q8.tflite"
    result = run(
        "convert",
        two_io_tflite["fp32"],
        "-o",
        out,
        "--mode",
        "int8",
        "--representative-data",
        two_io_savedmodel.parent / "calib.npz",
    )
    assert result.exit_code == 0, result.output
    info = inspect_model(out.read_bytes())
    assert {s.name: s.dtype for s in info.inputs} == {"image": "int8", "meta": "int8"}
    rows = evaluate([two_io_tflite["fp32"], out], two_io_tflite["data"], "--output", "digit")
    assert rows["two_q8"]["agreement"] >= 0.9


@pytest.mark.slow
def test_keras_source_int16x8_and_dynamic_on_the_quantizer(keras3_cnn_path, data_dir, tmp_path):
    int16 = tmp_path / "q16.tflite"
    result = run(
        "convert",
        keras3_cnn_path,
        "-o",
        int16,
        "--mode",
        "int16x8",
        "--backend",
        "quantizer",
        "--representative-data",
        data_dir / "calib.npz",
    )
    assert result.exit_code == 0, result.output
    dynamic = tmp_path / "qdyn.tflite"
    result = run("convert", keras3_cnn_path, "-o", dynamic, "--mode", "dynamic", "--backend", "quantizer")
    assert result.exit_code == 0, result.output
    info16, infodyn = inspect_model(int16.read_bytes()), inspect_model(dynamic.read_bytes())
    assert info16.mode == "int16x8" and [s.dtype for s in info16.inputs] == ["float32"]
    assert infodyn.mode == "dynamic" and analyze(dynamic.read_bytes())["weight_tensors"]["int8"] == 4
    rows = evaluate([int16, dynamic], data_dir / "test.npz")
    assert rows["q16"]["accuracy"] > 0.9 and rows["qdyn"]["agreement"] >= 0.98


# ---- usage errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--mode", "int4", "--backend", "converter"],
            "--mode int4 is made by the LiteRT Quantizer (--backend quantizer)",
        ),
        (["--mode", "fp32", "--backend", "quantizer"], "--mode fp32 is made by TFLiteConverter (--backend converter)"),
        (["--mode", "int8-weights", "--granularity", "block32"], "--granularity block32 applies to --mode int4 only"),
        (["--mode", "int4", "--algorithm", "gptq"], "--algorithm gptq needs --representative-data"),
        (
            ["--mode", "int8", "--backend", "quantizer", "--algorithm", "hadamard", "--representative-data", "random"],
            "--algorithm hadamard applies to weight quantization",
        ),
        (["--mode", "dynamic", "--algorithm", "mse"], "--algorithm and --recipe are LiteRT Quantizer options"),
        (["--mode", "int4", "--sparse"], "--sparse applies to the converter's"),
    ],
)
def test_flag_combinations_that_cannot_work_are_usage_errors(keras3_cnn_path, tmp_path, args, message):
    out = tmp_path / "o.tflite"
    assert_failed(run("convert", keras3_cnn_path, "-o", out, *args), 2, message, out=out)


def test_tflite_source_refuses_input_shape(tflite_files, tmp_path):
    out = tmp_path / "o.tflite"
    result = run("convert", tflite_files["fp32"], "-o", out, "--mode", "int4", "--input-shape", "image=1,8,8,1")
    assert_failed(result, 2, "--input-shape and --trust-model apply to Keras/SavedModel sources", out=out)


# ---- the library pieces ---------------------------------------------------------------------------------------


def test_recipe_for_int4_block32_keeps_convs_per_channel_and_gptq_only_on_dense():
    from tflite_opt.modes import Algorithm, Granularity, Mode
    from tflite_opt.quantize.options import ConversionOptions
    from tflite_opt.quantize.recipes import build_recipe

    recipe = build_recipe(ConversionOptions(mode=Mode.INT4, granularity=Granularity.BLOCK32))
    assert [(e["operation"], e["op_config"]["weight_tensor_config"]["granularity"]) for e in recipe] == [
        ("*", "CHANNELWISE"),
        ("FULLY_CONNECTED", "BLOCKWISE_32"),
        ("EMBEDDING_LOOKUP", "BLOCKWISE_32"),
    ]
    gptq = build_recipe(ConversionOptions(mode=Mode.INT4, algorithm=Algorithm.GPTQ))
    assert [(e["operation"], e["algorithm_key"]) for e in gptq] == [
        ("*", "min_max_uniform_quantize"),
        ("FULLY_CONNECTED", "GPTQ"),
    ]
    static = build_recipe(ConversionOptions(mode=Mode.INT16X8))
    assert static[0]["op_config"]["activation_tensor_config"] == {
        "num_bits": 16,
        "symmetric": True,
        "granularity": "TENSORWISE",
        "dtype": "INT",
    }
    assert [(e["operation"], e["algorithm_key"]) for e in static[1:]] == [
        ("INPUT", "no_quantize"),
        ("OUTPUT", "no_quantize"),
    ]

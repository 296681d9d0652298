"""``tflite-opt convert``: every mode on every model kind, and every bad input with its exit code and message."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from tflite_opt.cli import cli

MODES = ("fp32", "dynamic", "float16", "int8", "int16x8")


def run(*args):
    return CliRunner().invoke(cli, ["-q", *map(str, args)])


def interpreter_for(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=path.read_bytes())
    interpreter.allocate_tensors()
    return interpreter


def io_dtypes(path):
    runner = interpreter_for(path).get_signature_runner()
    ins = {name: d["dtype"].__name__ for name, d in runner.get_input_details().items()}
    outs = {name: d["dtype"].__name__ for name, d in runner.get_output_details().items()}
    return ins, outs


def constant_dtypes(path):
    """dtypes of the weight tensors (constant buffers) of a .tflite file."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    kinds = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    found = set()
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            buffer = model.buffers[tensor.buffer]
            if buffer.data is not None and len(buffer.data) > 0:
                found.add(kinds[tensor.type].lower())
    return found


def assert_runs(path, feed):
    runner = interpreter_for(path).get_signature_runner()
    outputs = runner(**feed)
    for value in outputs.values():
        assert np.all(np.isfinite(value.astype(np.float32)))
    return outputs


def convert_all_modes(model, calib, tmp_path, extra=()):
    sizes = {}
    for mode in MODES:
        out = tmp_path / f"{mode}.tflite"
        args = [model, "-o", out, "--mode", mode, *extra]
        if mode in ("int8", "int16x8"):
            args += ["--representative-data", calib]
        result = run("convert", *args)
        assert result.exit_code == 0, result.output
        assert f"{mode}: " in result.stdout and str(out) in result.stdout
        sizes[mode] = out.stat().st_size
    return sizes


@pytest.mark.slow
@pytest.mark.parametrize("model_fixture", ["keras3_cnn_path", "tf_keras_cnn_h5"])
def test_cnn_converts_in_all_five_modes(request, model_fixture, data_dir, tmp_path, digits):
    model = request.getfixturevalue(model_fixture)
    sizes = convert_all_modes(model, data_dir / "calib.npz", tmp_path)
    assert sizes["fp32"] > sizes["float16"] > sizes["dynamic"]
    assert sizes["int8"] <= 0.30 * sizes["fp32"]
    assert sizes["dynamic"] <= 0.30 * sizes["fp32"]

    # int8 is integer-only with int8 I/O by default; dynamic keeps float I/O with int8 weights;
    # float16 stores its weights as float16.
    assert io_dtypes(tmp_path / "int8.tflite") == (
        {"image": "int8"},
        {"output_0" if model_fixture == "keras3_cnn_path" else "logits": "int8"},
    )
    assert io_dtypes(tmp_path / "dynamic.tflite")[0] == {"image": "float32"}
    assert "int8" in constant_dtypes(tmp_path / "dynamic.tflite")
    assert "float16" in constant_dtypes(tmp_path / "float16.tflite")
    assert "float32" not in constant_dtypes(tmp_path / "int8.tflite")
    from tflite_opt.quantize.conversion import float_op_names

    assert float_op_names((tmp_path / "int8.tflite").read_bytes()) == []
    _, _, test_x, _ = digits
    for mode in MODES:
        assert_runs(
            tmp_path / f"{mode}.tflite",
            {"image": test_x[:1]} if mode != "int8" else {"image": np.zeros((1, 8, 8, 1), np.int8)},
        )


def test_int8_with_float_io(keras3_cnn_path, data_dir, tmp_path):
    out = tmp_path / "int8_float_io.tflite"
    result = run(
        "convert",
        keras3_cnn_path,
        "-o",
        out,
        "--mode",
        "int8",
        "--representative-data",
        data_dir / "calib.npy",
        "--io-type",
        "float32",
        "--num-samples",
        50,
    )
    assert result.exit_code == 0, result.output
    ins, outs = io_dtypes(out)
    assert ins == {"image": "float32"} and list(outs.values()) == ["float32"]


def test_int8_accuracy_close_to_float(keras3_cnn_path, data_dir, tmp_path, digits):
    """The converted int8 model predicts like the float one (quantize inputs with the input's scale/zero point)."""
    import keras

    _, _, test_x, test_y = digits
    float_acc = float(np.mean(keras.saving.load_model(keras3_cnn_path).predict(test_x, verbose=0).argmax(1) == test_y))
    out = tmp_path / "int8.tflite"
    assert (
        run(
            "convert", keras3_cnn_path, "-o", out, "--mode", "int8", "--representative-data", data_dir / "calib.npz"
        ).exit_code
        == 0
    )
    runner = interpreter_for(out).get_signature_runner()
    scale, zero = runner.get_input_details()["image"]["quantization"]
    q = np.clip(np.round(test_x / scale + zero), -128, 127).astype(np.int8)
    logits = runner(image=q)
    int8_acc = float(np.mean(next(iter(logits.values())).argmax(1) == test_y))
    assert float_acc > 0.9
    assert abs(int8_acc - float_acc) <= 0.03


@pytest.mark.slow
def test_two_input_two_output_savedmodel(two_io_savedmodel, tmp_path):
    calib = two_io_savedmodel.parent / "calib.npz"
    sizes = convert_all_modes(two_io_savedmodel, calib, tmp_path)
    assert sizes["fp32"] > sizes["float16"]
    ins, outs = io_dtypes(tmp_path / "int8.tflite")
    assert ins == {"image": "int8", "meta": "int8"}
    assert outs == {"digit": "int8", "parity": "int8"}
    outputs = assert_runs(
        tmp_path / "fp32.tflite", {"image": np.zeros((1, 8, 8, 1), np.float32), "meta": np.zeros((1, 4), np.float32)}
    )
    assert outputs["digit"].shape == (1, 10) and outputs["parity"].shape == (1, 2)


# ---- bad input: exit code, one clear line, no file left behind ---------------------------------------------


def assert_failed(result, code, *fragments, out=None):
    assert result.exit_code == code, result.output
    message = result.stderr.strip()
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in message, message
    if out is not None:
        assert not out.exists()
        assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_missing_model(tmp_path):
    out = tmp_path / "o.tflite"
    assert_failed(run("convert", tmp_path / "nope.keras", "-o", out), 1, "does not exist", out=out)


def test_empty_model_file(tmp_path):
    model = tmp_path / "empty.keras"
    model.write_bytes(b"")
    out = tmp_path / "o.tflite"
    assert_failed(run("convert", model, "-o", out), 1, "is empty", out=out)


def test_random_bytes_model_file(tmp_path):
    model = tmp_path / "junk.h5"
    model.write_bytes(np.random.default_rng(0).bytes(4096))
    out = tmp_path / "o.tflite"
    assert_failed(run("convert", model, "-o", out), 1, "not a model tflite-opt can read", out=out)


def test_truncated_keras_archive(keras3_cnn_path, tmp_path):
    model = tmp_path / "cut.keras"
    model.write_bytes(keras3_cnn_path.read_bytes()[:2000])
    out = tmp_path / "o.tflite"
    assert_failed(run("convert", model, "-o", out), 1, "cut.keras", out=out)


def test_tflite_given_to_convert(keras3_cnn_path, tmp_path):
    first = tmp_path / "m.tflite"
    assert run("convert", keras3_cnn_path, "-o", first).exit_code == 0
    out = tmp_path / "o.tflite"
    assert_failed(run("convert", first, "-o", out), 1, "already a .tflite file", out=out)


def test_int8_without_representative_data_is_usage_error(keras3_cnn_path, tmp_path):
    out = tmp_path / "o.tflite"
    result = run("convert", keras3_cnn_path, "-o", out, "--mode", "int8")
    assert_failed(result, 2, "--representative-data", out=out)


def test_representative_data_of_wrong_shape(keras3_cnn_path, tmp_path):
    calib = tmp_path / "bad.npz"
    np.savez(calib, x=np.zeros((10, 8, 8), np.float32))
    out = tmp_path / "o.tflite"
    result = run("convert", keras3_cnn_path, "-o", out, "--mode", "int8", "--representative-data", calib)
    assert_failed(result, 1, "input 'image' expects samples of shape (8, 8, 1)", "(8, 8)", out=out)


def test_representative_data_with_unknown_key(keras3_cnn_path, tmp_path):
    calib = tmp_path / "bad.npz"
    np.savez(calib, pixels=np.zeros((10, 8, 8, 1), np.float32))
    out = tmp_path / "o.tflite"
    result = run("convert", keras3_cnn_path, "-o", out, "--mode", "int8", "--representative-data", calib)
    assert_failed(result, 1, "'pixels'", "'image'", out=out)


def test_representative_data_with_nan(keras3_cnn_path, tmp_path):
    x = np.zeros((10, 8, 8, 1), np.float32)
    x[7, 3, 3, 0] = np.nan
    calib = tmp_path / "nan.npy"
    np.save(calib, x)
    out = tmp_path / "o.tflite"
    result = run("convert", keras3_cnn_path, "-o", out, "--mode", "int8", "--representative-data", calib)
    assert_failed(result, 1, "sample 7", "NaN", out=out)


def test_output_equal_to_input_is_refused(keras3_cnn_path, tmp_path):
    model = tmp_path / "m.keras"
    model.write_bytes(keras3_cnn_path.read_bytes())
    before = model.read_bytes()
    result = run("convert", model, "-o", model)
    assert_failed(result, 1, "would overwrite the input")
    assert model.read_bytes() == before


@pytest.fixture(scope="module")
def two_signature_savedmodel(tmp_path_factory):
    import tensorflow as tf

    class TwoHeads(tf.Module):
        def __init__(self):
            self.w = tf.Variable(tf.ones((4, 2)))

        @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="x")])
        def classify(self, x):
            return {"scores": tf.matmul(x, self.w)}

        @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="x")])
        def embed(self, x):
            return {"embedding": x * 2.0}

    module = TwoHeads()
    path = tmp_path_factory.mktemp("two_sig") / "model"
    tf.saved_model.save(module, str(path), signatures={"classify": module.classify, "embed": module.embed})
    return path


def test_savedmodel_with_two_signatures_needs_signature(two_signature_savedmodel, tmp_path):
    out = tmp_path / "o.tflite"
    result = run("convert", two_signature_savedmodel, "-o", out)
    assert_failed(result, 1, "2 signatures", "classify, embed", "--signature", out=out)
    result = run("convert", two_signature_savedmodel, "-o", out, "--signature", "embed")
    assert result.exit_code == 0, result.output
    assert io_dtypes(out) == ({"x": "float32"}, {"embedding": "float32"})


def test_keras_with_lambda_needs_trust_model(tmp_path):
    import keras

    inputs = keras.Input((4,), name="x")
    outputs = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    model_path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(model_path)
    out = tmp_path / "o.tflite"
    assert_failed(run("convert", model_path, "-o", out), 1, "double (Lambda)", "--trust-model", out=out)
    result = run("convert", model_path, "-o", out, "--trust-model")
    assert result.exit_code == 0, result.output
    assert out.exists()


def test_input_shape_fixes_a_dynamic_axis(tmp_path):
    """A model with an unknown spatial size converts with --input-shape; the file has the fixed shape."""
    import keras

    inputs = keras.Input((None, None, 3), name="image")
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    outputs = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model_path = tmp_path / "dyn.keras"
    keras.Model(inputs, outputs).save(model_path)
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).random((8, 16, 16, 3), dtype=np.float32))
    out = tmp_path / "o.tflite"
    result = run(
        "convert",
        model_path,
        "-o",
        out,
        "--mode",
        "int8",
        "--representative-data",
        calib,
        "--input-shape",
        "image=1,16,16,3",
    )
    assert result.exit_code == 0, result.output
    details = interpreter_for(out).get_signature_runner().get_input_details()["image"]
    assert list(details["shape"]) == [1, 16, 16, 3]
    bad = run("convert", model_path, "-o", out, "--input-shape", "picture=1,16,16,3")
    assert_failed(bad, 1, "picture", "image")
    assert_failed(run("convert", model_path, "-o", out, "--input-shape", "image=1,x"), 2, "--input-shape")


def test_random_representative_data_warns(keras3_cnn_path, tmp_path):
    out = tmp_path / "o.tflite"
    result = CliRunner().invoke(
        cli,
        [
            "convert",
            str(keras3_cnn_path),
            "-o",
            str(out),
            "--mode",
            "int8",
            "--representative-data",
            "random",
            "--num-samples",
            "20",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "meaningless" in result.stderr


# ---- --backend and --granularity (SPEC §2, §7) ------------------------------------------------------------------


def weight_scale_counts(path):
    """Number of scales of each CONV_2D/FULLY_CONNECTED weight (1 = per-tensor)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    counts = []
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        if names[max(code.builtinCode, code.deprecatedBuiltinCode)] in ("CONV_2D", "FULLY_CONNECTED"):
            counts.append(len(model.subgraphs[0].tensors[op.inputs[1]].quantization.scale))
    return counts


def test_converter_int8_per_tensor(keras3_cnn_path, data_dir, tmp_path, digits):
    per_channel, per_tensor = tmp_path / "channel.tflite", tmp_path / "tensor.tflite"
    common = ["--mode", "int8", "--representative-data", data_dir / "calib.npz", "--num-samples", 100]
    assert run("convert", keras3_cnn_path, "-o", per_channel, *common).exit_code == 0
    result = run("convert", keras3_cnn_path, "-o", per_tensor, *common, "--granularity", "tensor")
    assert result.exit_code == 0, result.output
    assert "(LiteRT Quantizer)" not in result.stdout
    assert weight_scale_counts(per_channel) == [16, 32, 64, 10]
    assert weight_scale_counts(per_tensor) == [1, 1, 1, 1]
    from tflite_opt.quantize.conversion import float_op_names

    assert float_op_names(per_tensor.read_bytes()) == []
    assert io_dtypes(per_tensor)[0] == {"image": "int8"}
    _, _, test_x, test_y = digits
    runner = interpreter_for(per_tensor).get_signature_runner()
    scale, zero = runner.get_input_details()["image"]["quantization"]
    q = np.clip(np.round(test_x / scale + zero), -128, 127).astype(np.int8)
    logits = np.concatenate([next(iter(runner(image=q[i : i + 1]).values())) for i in range(len(q))])
    assert float(np.mean(logits.argmax(1) == test_y)) > 0.9


def test_int4_on_the_converter_is_a_usage_error_naming_the_quantizer(keras3_cnn_path, tmp_path):
    out = tmp_path / "o.tflite"
    result = run("convert", keras3_cnn_path, "-o", out, "--mode", "int4", "--backend", "converter")
    assert_failed(result, 2, "--mode int4 is made by the LiteRT Quantizer (--backend quantizer)", out=out)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--mode", "dynamic", "--granularity", "tensor"], "--granularity tensor with the converter applies to int8"),
        (
            ["--mode", "int8", "--granularity", "block32", "--representative-data", "random"],
            "--granularity block32 with the converter applies to int8 (tensor) only",
        ),
        (["--recipe", "r.json"], "--algorithm and --recipe are LiteRT Quantizer options"),
    ],
)
def test_quantizer_flags_on_the_converter_are_usage_errors(keras3_cnn_path, tmp_path, args, message):
    out = tmp_path / "o.tflite"
    assert_failed(run("convert", keras3_cnn_path, "-o", out, *args), 2, message, out=out)


def test_default_backend_is_the_quantizer_for_the_new_modes(keras3_cnn_path, tmp_path):
    out = tmp_path / "w8.tflite"
    result = run("convert", keras3_cnn_path, "-o", out, "--mode", "int8-weights")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith(f"-> {out} (LiteRT Quantizer)")
    assert constant_dtypes(out) == {"float32", "int32", "int8"}


def test_converter_backend_for_a_tflite_source_is_refused(keras3_cnn_path, tmp_path):
    first = tmp_path / "m.tflite"
    assert run("convert", keras3_cnn_path, "-o", first).exit_code == 0
    out = tmp_path / "o.tflite"
    result = run("convert", first, "-o", out, "--mode", "dynamic", "--backend", "converter")
    assert_failed(result, 1, "already a .tflite file", "--mode dynamic on the converter takes a SavedModel", out=out)

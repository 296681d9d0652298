"""``convert --keep-float`` (selective quantization) and the ``tflite_opt.quantize.selective`` library behind it."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from tflite_opt.cli import cli
from tflite_opt.errors import ConversionError


def run(*args):
    return CliRunner().invoke(cli, ["-q", *map(str, args)])


def accuracy(path, data):
    from tflite_opt.measure.evaluation import run_dataset, top1
    from tflite_opt.measure.runtime import load_signature
    from tflite_opt.representative_data import load_data

    content = path.read_bytes()
    dataset = load_data(data, load_signature(content).data_specs)
    outputs = run_dataset(content, dataset)
    return float(np.mean(top1(next(iter(outputs.values()))) == dataset.labels))


def op_dtypes(path):
    """op name -> sorted dtypes its instances run in (inspect's definition)."""
    from tflite_opt.measure.inspection import inspect_model

    found = inspect_model(path.read_bytes(), path=str(path))
    return {op.op: sorted(op.dtypes) for op in found.ops}


@pytest.mark.slow
def test_keep_float_on_the_outlier_layer_recovers_int8_accuracy(hostile_model, tmp_path):
    plain, kept = tmp_path / "int8.tflite", tmp_path / "int8_keep.tflite"
    common = ["--mode", "int8", "--representative-data", hostile_model.calib_data]
    assert run("convert", hostile_model.path, "-o", plain, *common).exit_code == 0
    result = run("convert", hostile_model.path, "-o", kept, *common, "--keep-float", "dense2")
    assert result.exit_code == 0, result.output

    reference = hostile_model.float_accuracy
    plain_drop = reference - accuracy(plain, hostile_model.test_data)
    kept_drop = reference - accuracy(kept, hostile_model.test_data)
    assert plain_drop > 0.3  # measured: 76 points
    assert kept_drop <= 0.01  # measured: 0 points
    # Exactly the one layer runs in float; the rest, and the I/O, stay int8.
    assert op_dtypes(kept)["FULLY_CONNECTED"] == ["float32", "int8"]
    assert op_dtypes(plain)["FULLY_CONNECTED"] == ["int8"]
    from tflite_opt.measure.runtime import load_signature

    signature = load_signature(kept.read_bytes())
    assert [spec.dtype for spec in signature.input_specs] == ["int8"]
    assert kept.stat().st_size > plain.stat().st_size  # 16x128 float weights instead of int8


def test_unknown_keep_float_name_fails_with_close_names(hostile_model, tmp_path):
    out = tmp_path / "x.tflite"
    result = run(
        "convert",
        hostile_model.path,
        "-o",
        out,
        "--mode",
        "int8",
        "--representative-data",
        hostile_model.calib_data,
        "--keep-float",
        "dens2",
    )
    assert result.exit_code == 1
    assert "--keep-float 'dens2' matches no layer, tensor or op type" in result.stderr
    assert "close names: dense2" in result.stderr
    assert not out.exists()


def test_keep_float_needs_int8_mode(hostile_model, tmp_path):
    result = run(
        "convert", hostile_model.path, "-o", tmp_path / "x.tflite", "--mode", "float16", "--keep-float", "dense2"
    )
    assert result.exit_code == 2
    assert "--keep-float applies to --mode int8 only" in result.output


# -------------------------------------------------------------------------------------- the selective library


@pytest.fixture(scope="module")
def cnn_calibrated(keras3_cnn_path, data_dir):
    from tflite_opt import models
    from tflite_opt.quantize import selective
    from tflite_opt.representative_data import load_data

    loaded = models.load_model(keras3_cnn_path)
    representative = load_data(data_dir / "calib.npz", loaded.inputs, num_samples=50)
    return selective.calibrate(loaded.saved_model_dir, loaded.signature_key, representative)


def float_ops(content):
    from tflite_opt.quantize.conversion import float_op_names

    return float_op_names(content)


def test_calibration_lists_the_quantizable_ops(cnn_calibrated):
    assert cnn_calibrated.num_samples == 50
    types = [op.op_type for op in cnn_calibrated.ops]
    assert types.count("CONV_2D") == 2 and types.count("FULLY_CONNECTED") == 2
    assert "MAX_POOL_2D" in types and "RESHAPE" in types
    convention = cnn_calibrated.convention
    assert convention.root == "digits_cnn_1" and convention.suffixed  # a Keras 3 export
    conv1 = cnn_calibrated.ops[0]
    assert conv1.primary_scope(convention) == "conv1_1"  # the weights' scope, not the fused ReLU's
    for layer in ("conv1", "bn1", "relu1"):
        assert cnn_calibrated.layer_ops(layer) == [conv1]
    assert cnn_calibrated.layer_label(conv1, ["conv1", "bn1", "relu1", "conv2"]) == ("conv1", ("bn1", "relu1"))
    assert cnn_calibrated.layer_label(conv1) == ("conv1", ())


def test_resolve_by_layer_op_type_and_tensor_name(cnn_calibrated):
    from tflite_opt.quantize.selective import resolve_keep_float

    by_layer = resolve_keep_float(["logits"], cnn_calibrated)
    assert by_layer.nodes == ("StatefulPartitionedCall_1:0",)  # found through the weights' names
    assert by_layer.op_types == ()
    fused = resolve_keep_float(["bn1"], cnn_calibrated)
    assert fused.nodes == (cnn_calibrated.ops[0].tensor,)
    by_type = resolve_keep_float(["FULLY_CONNECTED"], cnn_calibrated)
    assert by_type.op_types == ("FULLY_CONNECTED",) and by_type.nodes == ()
    assert resolve_keep_float(["max_pool_2d"], cnn_calibrated).op_types == ("MAX_POOL_2D",)
    tensor = cnn_calibrated.ops[1].tensor
    assert resolve_keep_float([tensor], cnn_calibrated).nodes == (tensor,)
    with pytest.raises(ConversionError, match=r"'conv3' matches no layer.*close names: conv(1|2)"):
        resolve_keep_float(["conv3"], cnn_calibrated)


def test_denylists_keep_exactly_what_was_named_in_float(cnn_calibrated):
    from tflite_opt.quantize.selective import check_loads, quantize_calibrated, resolve_keep_float

    plain = quantize_calibrated(cnn_calibrated)
    assert float_ops(plain) == []
    by_type = quantize_calibrated(cnn_calibrated, keep_float=resolve_keep_float(["FULLY_CONNECTED"], cnn_calibrated))
    assert float_ops(by_type) == ["FULLY_CONNECTED"]
    conv2 = quantize_calibrated(
        cnn_calibrated, keep_float=resolve_keep_float(["conv2"], cnn_calibrated), io_type="float32"
    )
    assert float_ops(conv2) == ["CONV_2D"]
    for content in (plain, by_type, conv2):
        check_loads(content)
    from tflite_opt.measure.runtime import load_signature

    assert [s.dtype for s in load_signature(conv2).input_specs] == ["float32"]
    assert [s.dtype for s in load_signature(plain).input_specs] == ["int8"]


def test_keras_automatic_layer_names_resolve_to_their_own_ops(data_dir):
    """Keras names layers dense, dense_1, dense_2; a Keras 3 export scopes them dense_1, dense_1_2, dense_2_1."""
    import keras

    from tflite_opt import models
    from tflite_opt.quantize import selective
    from tflite_opt.representative_data import load_data

    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = keras.layers.Dense(32, activation="relu", name="dense")(x)
    x = keras.layers.Dense(16, activation="relu", name="dense_1")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="dense_2")(x), name="model")
    loaded = models.LoadedModel(
        path=data_dir,
        kind=models.ModelKind.KERAS3,
        keras_model=model,
        inputs=models.keras_input_specs(model, models.ModelKind.KERAS3),
    )
    representative = load_data(data_dir / "calib.npz", loaded.inputs, num_samples=20)
    calibrated = selective.calibrate(loaded.saved_model_dir, loaded.signature_key, representative)
    dense_ops = [op for op in calibrated.ops if op.op_type == "FULLY_CONNECTED"]
    assert len(dense_ops) == 3
    for name, op in zip(("dense", "dense_1", "dense_2"), dense_ops):
        assert calibrated.layer_ops(name) == [op], name
        assert calibrated.layer_label(op, [layer.name for layer in model.layers]) == (name, ())
        assert calibrated.layer_label(op) == (name, ())  # the same without the Keras model (a SavedModel)

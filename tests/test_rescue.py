"""Rescuing int8 when it collapses: attribution in ``debug``, cross-layer equalization, bias correction, and the
one-line explanation of an int16x8 file that does not prepare.

The two int8-hostile fixtures are built here (tests/conftest.py registers no fixture module for them):

* ``outlier_mlp``: a digits MLP (64 → 256 → 512 → 10) in which the most useful unit of ``dense1`` is scaled up
  1000× and its row of ``dense2``'s kernel down 1000× (ReLU is positively homogeneous: the float function is
  unchanged). ``dense1``'s output range is now set by that one unit, so int8 rounds every other unit to zero.
* ``outlier_cnn``: a digits CNN in which one channel of ``conv1`` is scaled up 1000× through ``bn1`` (gamma and beta)
  → ReLU → max pooling, and ``conv2``'s matching input weights down 1000×.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.fixtures_models import fit_on_digits
from tflite_opt.cli import cli
from tflite_opt.errors import ConversionError

FACTOR = 1000.0


@dataclass(frozen=True)
class OutlierCase:
    path: Path
    producer: str
    consumer: str
    recovering_flags: tuple[str, ...]
    float_accuracy: float


def run(*args):
    return CliRunner().invoke(cli, ["-q", *map(str, args)])


def accuracy(content: bytes, data: Path) -> float:
    from tflite_opt.measure.evaluation import run_dataset, top1
    from tflite_opt.measure.runtime import load_signature
    from tflite_opt.representative_data import load_data

    dataset = load_data(data, load_signature(content).data_specs)
    outputs = run_dataset(content, dataset)
    return float(np.mean(top1(next(iter(outputs.values()))) == dataset.labels))


def load(path):
    from tflite_opt import models
    from tflite_opt.representative_data import load_data

    loaded = models.load_model(path)
    return loaded, load_data


@pytest.fixture(scope="module")
def outlier_mlp(tmp_path_factory, digits, data_dir) -> OutlierCase:
    import keras

    keras.utils.set_random_seed(0)
    train_x, train_y, test_x, test_y = digits
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = keras.layers.Dense(256, activation="relu", name="dense1")(x)
    x = keras.layers.Dense(512, activation="relu", name="dense2")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="outlier_mlp")
    fit_on_digits(keras, model, train_x, train_y, epochs=6)
    before = model.predict(test_x, verbose=0)
    hidden = keras.Model(model.inputs, model.get_layer("dense1").output).predict(train_x[:200], verbose=0)
    (k1, b1), (k2, b2) = model.get_layer("dense1").get_weights(), model.get_layer("dense2").get_weights()
    unit = int(np.argmax(np.abs(hidden).mean(axis=0) * np.abs(k2).sum(axis=1)))
    k1[:, unit] *= FACTOR
    b1[unit] *= FACTOR
    k2[unit, :] /= FACTOR
    model.get_layer("dense1").set_weights([k1, b1])
    model.get_layer("dense2").set_weights([k2, b2])
    after = model.predict(test_x, verbose=0)
    assert np.abs(after - before).max() < 1e-4 * np.ptp(before)  # the float function is unchanged
    path = tmp_path_factory.mktemp("outlier_mlp") / "mlp.keras"
    model.save(path)
    return OutlierCase(path, "dense1", "dense2", ("dense1", "dense2"), float(np.mean(after.argmax(1) == test_y)))


@pytest.fixture(scope="module")
def outlier_cnn(tmp_path_factory, digits, data_dir) -> OutlierCase:
    import keras

    keras.utils.set_random_seed(0)
    train_x, train_y, test_x, test_y = digits
    layers = keras.layers
    inputs = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(16, 3, padding="same", name="conv1")(inputs)
    x = layers.BatchNormalization(momentum=0.9, name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="dense1")(x)
    model = keras.Model(inputs, layers.Dense(10, name="logits")(x), name="outlier_cnn")
    fit_on_digits(keras, model, train_x, train_y, epochs=5)
    before = model.predict(test_x, verbose=0)
    pooled = keras.Model(model.inputs, model.get_layer("pool1").output).predict(train_x[:200], verbose=0)
    gamma, beta, mean, var = model.get_layer("bn1").get_weights()
    k2, b2 = model.get_layer("conv2").get_weights()
    channel = int(np.argmax(np.abs(pooled).mean(axis=(0, 1, 2)) * np.abs(k2).sum(axis=(0, 1, 3))))
    gamma[channel] *= FACTOR
    beta[channel] *= FACTOR
    k2[:, :, channel, :] /= FACTOR
    model.get_layer("bn1").set_weights([gamma, beta, mean, var])
    model.get_layer("conv2").set_weights([k2, b2])
    after = model.predict(test_x, verbose=0)
    assert np.abs(after - before).max() < 1e-4 * np.ptp(before)
    path = tmp_path_factory.mktemp("outlier_cnn") / "cnn.keras"
    model.save(path)
    return OutlierCase(path, "conv1", "conv2", ("conv1", "pool1", "conv2"), float(np.mean(after.argmax(1) == test_y)))


# --------------------------------------------------------------------------------------- the two outlier models


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["outlier_mlp", "outlier_cnn"])
def test_int8_collapse_is_blamed_on_its_producer_and_rescued(fixture, request, data_dir, tmp_path):
    from tflite_opt.measure.inspection import inspect_model
    from tflite_opt.modes import Mode
    from tflite_opt.quantize import bias_correction, conversion, equalize
    from tflite_opt.quantize.options import ConversionOptions

    case: OutlierCase = request.getfixturevalue(fixture)
    test, calib = data_dir / "test.npz", data_dir / "calib.npz"
    fp32, int8 = tmp_path / "fp32.tflite", tmp_path / "int8.tflite"
    assert run("convert", case.path, "-o", fp32, "--mode", "fp32").exit_code == 0
    assert run("convert", case.path, "-o", int8, "--mode", "int8", "--representative-data", calib).exit_code == 0
    reference = accuracy(fp32.read_bytes(), test)
    assert reference > 0.9 and abs(reference - case.float_accuracy) < 0.003
    assert reference - accuracy(int8.read_bytes(), test) >= 0.5  # measured: 89 points (MLP), 90 (CNN)

    # debug blames the producer, not the consumer whose RMSE/scale is the largest.
    result = run("debug", case.path, "--representative-data", calib, "--format", "json")
    assert result.exit_code == 0, result.output
    import json

    report = json.loads(result.stdout)
    assert report["layers"][0]["layer"] == case.consumer  # the debugger's local ranking points at the victim
    attribution = report["attribution"]
    rows = {row["layer"]: row for row in attribution["rows"]}
    assert attribution["rows"][0]["layer"] == case.producer and attribution["rows"][0]["role"] == "culprit"
    assert rows[case.consumer]["role"] == f"victim of {case.producer}"
    assert rows[case.producer]["concentration"] > 500  # one channel ~1000x the median
    assert rows[case.producer]["alone"]["agreement"] < 0.5  # the producer alone in float is not enough
    assert attribution["culprits"] == [case.producer]
    assert report["keep_float"] == list(case.recovering_flags)
    assert attribution["recommended"]["agreement"] >= 0.99
    assert f"--equalize rescales {case.producer} → {case.consumer}" in attribution["equalize_hint"]

    # Its flags, verbatim, recover the accuracy.
    kept = tmp_path / "kept.tflite"
    flags = shlex.split(report["suggested_flags"])
    converted = run("convert", case.path, "-o", kept, "--mode", "int8", "--representative-data", calib, *flags)
    assert converted.exit_code == 0, converted.output
    assert reference - accuracy(kept.read_bytes(), test) <= 0.01

    # Equalization instead: integer-only, int8-sized, within 1 point.
    loaded, load_data = load(case.path)
    representative = load_data(calib, loaded.inputs)
    equalized = equalize.equalize_model(loaded.keras_model, representative)
    pair = next(p for p in equalized.pairs if p.producer == case.producer)
    assert pair.consumer == case.consumer and pair.largest_scale > 300  # measured ~1200 (MLP), ~5900 (CNN)
    assert pair.imbalance_before > 1e5 and pair.imbalance_after < 1.01
    assert equalized.relative_diff <= 1e-4 and equalized.transforms == ["equalize"]
    content = conversion.convert_keras_model(equalized.model, ConversionOptions(mode=Mode.INT8), representative)
    found = inspect_model(content, path="equalized.tflite")
    assert found.integer_only is True
    assert reference - accuracy(content, test) <= 0.01
    assert len(content) <= 0.30 * fp32.stat().st_size  # measured: 0.29x (MLP), 0.28x (CNN)

    # auto's third rung: equalize, then bias correction, still within 1 point.
    corrected = bias_correction.apply_bias_correction(equalized.model, representative)
    content = conversion.convert_keras_model(corrected.model, ConversionOptions(mode=Mode.INT8), representative)
    assert reference - accuracy(content, test) <= 0.01

    # The same through the CLI: convert --equalize, and auto picking the integer-only rescue.
    cli_equalized, saved = tmp_path / "eq.tflite", tmp_path / "equalized.keras"
    converted = run(
        "convert",
        case.path,
        "-o",
        cli_equalized,
        "--mode",
        "int8",
        "--equalize",
        "--representative-data",
        calib,
        "--save-equalized",
        saved,
    )
    assert converted.exit_code == 0, converted.output
    assert inspect_model(cli_equalized.read_bytes(), path="eq.tflite").integer_only is True
    assert reference - accuracy(cli_equalized.read_bytes(), test) <= 0.01
    assert cli_equalized.stat().st_size <= 0.30 * fp32.stat().st_size and saved.exists()
    chosen, report_path = tmp_path / "auto.tflite", tmp_path / "auto.json"
    searched = run(
        "auto",
        case.path,
        "--data",
        test,
        "--representative-data",
        calib,
        "--max-accuracy-drop",
        "0.01",
        "-o",
        chosen,
        "--report",
        report_path,
        "--runs",
        "3",
        "--warmup",
        "1",
    )
    assert searched.exit_code == 0, searched.output
    assert "chosen: int8+equalize" in searched.stdout
    trials = {v["name"]: v for v in json.loads(report_path.read_text())["variants"]}
    assert trials["int8+equalize"]["transforms"] == ["equalize"] and trials["int8+equalize"]["integer_only"] is True
    assert inspect_model(chosen.read_bytes(), path="auto.tflite").integer_only is True


# ------------------------------------------------------------------------------------------------- equalization


@pytest.mark.slow
def test_equalization_leaves_the_well_behaved_digits_cnn_alone(keras3_cnn_path, data_dir):
    from tflite_opt.modes import Mode
    from tflite_opt.quantize import conversion, equalize
    from tflite_opt.quantize.options import ConversionOptions

    loaded, load_data = load(keras3_cnn_path)
    representative = load_data(data_dir / "calib.npz", loaded.inputs)
    result = equalize.equalize_model(loaded.keras_model, representative)
    assert [(p.producer, p.consumer, p.through) for p in result.pairs] == [
        ("conv1", "conv2", ("bn1", "relu1")),
        ("conv2", "dense1", ("pool", "flatten")),
        ("dense1", "logits", ()),
    ]
    assert result.skipped == ["logits: its output is a model output"]
    assert result.relative_diff <= 1e-4 and result.num_samples == 200 and result.seconds > 0
    assert all(p.imbalance_after < p.imbalance_before for p in result.pairs)
    options = ConversionOptions(mode=Mode.INT8)
    plain = accuracy(conversion.convert(loaded, options, representative), data_dir / "test.npz")
    rescaled = accuracy(conversion.convert_keras_model(result.model, options, representative), data_dir / "test.npz")
    assert abs(plain - rescaled) <= 0.002  # measured: 0.0 points
    # The input model is untouched and the equalized one keeps its layer names (for --keep-float and debug).
    assert [layer.name for layer in result.model.layers] == [layer.name for layer in loaded.keras_model.layers]
    assert not np.array_equal(
        result.model.get_layer("conv2").get_weights()[0], loaded.keras_model.get_layer("conv2").get_weights()[0]
    )


def _inverted_residual(layers, x, expand, channels, stride, name):
    h = x
    if expand != 1:
        h = layers.Conv2D(x.shape[-1] * expand, 1, use_bias=False, name=f"{name}_expand")(h)
        h = layers.BatchNormalization(name=f"{name}_expand_bn")(h)
        h = layers.ReLU(6.0, name=f"{name}_expand_relu")(h)
    h = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(h)
    h = layers.BatchNormalization(name=f"{name}_dw_bn")(h)
    h = layers.ReLU(6.0, name=f"{name}_dw_relu")(h)
    h = layers.Conv2D(channels, 1, use_bias=False, name=f"{name}_project")(h)
    h = layers.BatchNormalization(name=f"{name}_project_bn")(h)
    if stride == 1 and x.shape[-1] == channels:
        h = layers.Add(name=f"{name}_add")([x, h])
    return h


@pytest.fixture(scope="module")
def mobilenet_v2_shaped():
    """A small MobileNetV2 (stem, five inverted residual blocks, head), random weights and BatchNorm statistics."""
    import keras

    from tflite_opt.representative_data.dataset import Dataset

    keras.utils.set_random_seed(0)
    layers = keras.layers
    inputs = keras.Input((32, 32, 3), name="image")
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.ReLU(6.0, name="stem_relu")(layers.BatchNormalization(name="stem_bn")(x))
    for i, (expand, channels, stride) in enumerate([(1, 16, 1), (6, 24, 2), (6, 24, 1), (6, 32, 2), (6, 32, 1)]):
        x = _inverted_residual(layers, x, expand, channels, stride, f"block{i}")
    x = layers.Conv2D(64, 1, use_bias=False, name="head")(x)
    x = layers.ReLU(6.0, name="head_relu")(layers.BatchNormalization(name="head_bn")(x))
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, layers.Dense(10, name="logits")(x), name="mobilenet_v2_small")
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.get_weights()[0].shape[0]
            layer.set_weights(
                [rng.uniform(0.2, 2.0, n), rng.normal(0, 0.3, n), rng.normal(0, 0.2, n), rng.uniform(0.5, 2.0, n)]
            )
    gamma, beta, mean, var = model.get_layer("head_bn").get_weights()
    model.get_layer("head_bn").set_weights([gamma, beta + 8.0, mean, var])  # head_relu clips: it stays a ReLU6
    return model, Dataset({"image": rng.uniform(0, 1, (64, 32, 32, 3)).astype(np.float32)}, source="random")


@pytest.mark.slow
def test_equalization_of_a_mobilenet_v2_shaped_model_and_its_relu6(mobilenet_v2_shaped):
    import keras

    from tflite_opt.quantize import equalize

    model, data = mobilenet_v2_shaped
    # ReLU6 is not positive-homogeneous: by default it ends every chain, and residual Adds end the rest.
    kept = equalize.equalize_model(model, data)
    assert kept.pairs == [] and kept.relu6_replaced == []
    assert sum("is a ReLU6 (not positive-homogeneous)" in why for why in kept.skipped) == 11
    assert "equalization found no chain to rescale" in kept.summary()

    # DFQ's treatment, verified: a ReLU6 whose input never reaches 6 on the data is a ReLU there.
    relu6 = [layer for layer in model.layers if isinstance(layer, keras.layers.ReLU)]
    probe = keras.Model(model.input, [layer.input for layer in relu6])
    never_clips = {layer.name for layer, value in zip(relu6, probe(data.inputs["image"])) if np.max(value) <= 6.0}
    assert len(relu6) == 11 and "head_relu" not in never_clips and len(never_clips) == 10
    result = equalize.equalize_model(model, data, relu6="unclipped")
    assert set(result.relu6_replaced) == never_clips
    assert "head: head_relu is a ReLU6 (not positive-homogeneous)" in result.skipped
    assert len(result.pairs) == 9 and result.iterations > 1
    assert ("block1_expand", "block1_dw") in {(p.producer, p.consumer) for p in result.pairs}
    assert ("block1_dw", "block1_project") in {(p.producer, p.consumer) for p in result.pairs}
    assert result.relative_diff <= 1e-4  # measured: 2e-7
    assert result.seconds > 0 and f"in {result.seconds:.1f} s" in result.summary()
    replaced = result.model.get_layer(sorted(never_clips)[0])
    assert replaced.get_config()["max_value"] is None
    assert model.get_layer(sorted(never_clips)[0]).get_config()["max_value"] == 6.0  # the input model is untouched


def test_equalization_of_a_tf_keras_two_input_model_restores_a_scaled_unit():
    import tf_keras

    from tflite_opt.quantize import equalize
    from tflite_opt.representative_data.dataset import Dataset

    tf_keras.utils.set_random_seed(0)
    image = tf_keras.Input((6,), name="a")
    meta = tf_keras.Input((3,), name="b")
    h = tf_keras.layers.Dense(16, activation="relu", name="hidden")(image)
    h = tf_keras.layers.Dense(8, name="proj")(tf_keras.layers.Dropout(0.5, name="drop")(h))
    joined = tf_keras.layers.Concatenate(name="join")([h, meta])
    model = tf_keras.Model([image, meta], tf_keras.layers.Dense(2, name="out")(joined))
    k1, b1 = model.get_layer("hidden").get_weights()
    k2, b2 = model.get_layer("proj").get_weights()
    k1[:, 3] *= 500.0
    b1[3] *= 500.0
    k2[3] /= 500.0
    model.get_layer("hidden").set_weights([k1, b1])
    model.get_layer("proj").set_weights([k2, b2])
    rng = np.random.default_rng(0)
    data = Dataset({"a": rng.normal(size=(50, 6)).astype(np.float32), "b": rng.normal(size=(50, 3)).astype(np.float32)})
    result = equalize.equalize_model(model, data)
    assert [(p.producer, p.consumer, p.through) for p in result.pairs] == [("hidden", "proj", ("drop",))]
    assert result.skipped == ["proj: join has several inputs or calls", "out: its output is a model output"]
    assert result.relative_diff <= 1e-4
    ranges = np.abs(result.model.get_layer("hidden").get_weights()[0]).max(axis=0)
    assert ranges[3] < 5 * np.median(ranges)  # the 500x unit is balanced again


def test_equalization_refuses_a_changed_function_and_a_subclassed_model(keras3_cnn_path, data_dir):
    import keras

    from tflite_opt.quantize import equalize

    loaded, load_data = load(keras3_cnn_path)
    representative = load_data(data_dir / "calib.npz", loaded.inputs)
    with pytest.raises(ConversionError) as error:
        equalize.equalize_model(loaded.keras_model, representative, num_samples=20, tolerance=0.0)
    message = str(error.value)
    assert message.startswith("cross-layer equalization changed the float outputs by ")
    assert message.endswith("tolerance 0); convert without --equalize") and "\n" not in message

    class Custom(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ConversionError, match="is not a Functional or Sequential model"):
        equalize.equalize_model(Custom(), representative)


# ------------------------------------------------------------------------------------------------ bias correction


@pytest.mark.slow
def test_simulated_weight_rounding_is_the_converters(keras3_cnn_path, data_dir):
    """Bias correction measures the shift of the weights the converter will store: check that they are these."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from tflite_opt.modes import Granularity, Mode
    from tflite_opt.quantize import conversion
    from tflite_opt.quantize.bias_correction import quantize_kernel
    from tflite_opt.quantize.options import ConversionOptions

    loaded, load_data = load(keras3_cnn_path)
    representative = load_data(data_dir / "calib.npz", loaded.inputs)
    for granularity in (Granularity.CHANNEL, Granularity.TENSOR):
        options = ConversionOptions(mode=Mode.INT8, granularity=granularity)
        interpreter = Interpreter(
            model_content=conversion.convert(loaded, options, representative),
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interpreter.allocate_tensors()
        stored, scale_counts = {}, {}
        for detail in interpreter.get_tensor_details():
            name, scales = detail["name"], detail["quantization_parameters"]["scales"]
            if detail["dtype"] == np.int8 and name.endswith("/MatMul") and ";" not in name:
                layer = name.split("/")[1]
                stored[layer] = interpreter.get_tensor(detail["index"]) * scales[:, None]
                scale_counts[layer] = len(scales)
        assert scale_counts == (
            {"dense1_1": 1, "logits_1": 1} if granularity == Granularity.TENSOR else {"dense1_1": 64, "logits_1": 10}
        )
        for layer in ("dense1_1", "logits_1"):
            kernel = loaded.keras_model.get_layer(layer[:-2]).get_weights()[0]
            simulated = quantize_kernel(kernel, per_tensor=granularity == Granularity.TENSOR)
            np.testing.assert_allclose(simulated.T, stored[layer], rtol=0, atol=1e-6 * np.abs(kernel).max())


@pytest.fixture(scope="module")
def moderate_outliers(hostile_model, tmp_path_factory):
    """The hostile MLP with its outlier factor lowered from 1000 to 300: int8 loses about half its accuracy."""
    import keras

    model = keras.models.load_model(hostile_model.path)
    (k1, b1), (k2, b2) = model.get_layer("dense1").get_weights(), model.get_layer("dense2").get_weights()
    unit = int(np.argmax(np.abs(k2).max(axis=1)))
    k1[:, unit] *= 1000.0 / 300.0
    b1[unit] *= 1000.0 / 300.0
    k2[unit, :] *= 300.0 / 1000.0
    model.get_layer("dense1").set_weights([k1, b1])
    model.get_layer("dense2").set_weights([k2, b2])
    path = tmp_path_factory.mktemp("moderate") / "moderate.keras"
    model.save(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, low, high",
    [
        # measured: int8 42.8% -> 77.8% with bias correction (fp32 97.5%)
        ("moderate_outliers", 0.2, 1.0),
        # measured: 95.5% -> 95.5%: per-channel int8 weights of a well-trained CNN shift nothing that matters
        ("keras3_cnn_path", -0.005, 0.005),
    ],
)
def test_bias_correction_is_measured_where_it_helps_and_where_it_does_not(name, low, high, request, data_dir):
    from tflite_opt.modes import Mode
    from tflite_opt.quantize import bias_correction, conversion
    from tflite_opt.quantize.options import ConversionOptions

    loaded, load_data = load(request.getfixturevalue(name))
    representative = load_data(data_dir / "calib.npz", loaded.inputs)
    result = bias_correction.apply_bias_correction(loaded.keras_model, representative)
    weight_layers = [layer.name for layer in loaded.keras_model.layers if type(layer).__name__ in ("Dense", "Conv2D")]
    assert [shift.layer for shift in result.corrected] == weight_layers
    assert all(shift.target == "bias" for shift in result.corrected) and result.transforms == ["bias_correction"]
    options = ConversionOptions(mode=Mode.INT8)
    before = accuracy(conversion.convert(loaded, options, representative), data_dir / "test.npz")
    after = accuracy(conversion.convert_keras_model(result.model, options, representative), data_dir / "test.npz")
    assert low <= after - before <= high, (before, after)


def test_bias_correction_goes_into_the_batchnorm_of_a_bias_free_conv(mobilenet_v2_shaped):
    from tflite_opt.quantize import bias_correction
    from tflite_opt.quantize.keras_graph import predict

    model, data = mobilenet_v2_shaped
    result = bias_correction.apply_bias_correction(model, data, num_samples=16)
    targets = {shift.layer: shift.target for shift in result.corrected}
    assert targets["block1_dw"] == "block1_dw_bn.moving_mean" and targets["logits"] == "bias"
    assert len(result.corrected) == 17 and result.skipped == [] and result.num_samples == 16
    before = model.get_layer("block1_dw_bn").get_weights()[2]
    after = result.model.get_layer("block1_dw_bn").get_weights()[2]
    assert 0 < np.abs(after - before).max() < 0.5  # a small per-channel shift was folded into the mean
    (original,) = predict(model, data.inputs["image"][:16])
    (corrected,) = predict(result.model, data.inputs["image"][:16])
    assert 0 < np.abs(corrected - original).max() < 0.05 * np.ptp(original)


# ------------------------------------------------------------------------------------- int16x8 prepare failures


def _dead_depthwise_model(gamma_scale: float):
    import keras

    keras.utils.set_random_seed(0)
    layers = keras.layers
    inputs = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.BatchNormalization(name="dw_bn")(x)
    x = layers.ReLU(6.0, name="dw_relu6")(x)
    x = layers.Flatten(name="flat")(layers.Conv2D(8, 1, name="pw")(x))
    model = keras.Model(inputs, layers.Dense(10, name="logits")(x), name="dead_dw")
    gamma, beta, mean, var = model.get_layer("dw_bn").get_weights()
    # The BatchNorm all but switches the depthwise layer off: its output range on any data is tiny.
    model.get_layer("dw_bn").set_weights([gamma * gamma_scale, beta * 0, mean, var])
    return model


@pytest.mark.parametrize(
    "gamma_scale, advice", [(1e-6, "use --mode dynamic or float16"), (1e-4, "use --mode int8 (its coarser scale fits)")]
)
def test_an_int16x8_file_that_does_not_prepare_is_explained_in_one_line(gamma_scale, advice, data_dir):
    from tflite_opt.modes import Mode
    from tflite_opt.quantize import conversion
    from tflite_opt.quantize.options import ConversionOptions
    from tflite_opt.representative_data import load_data
    from tflite_opt.specs import TensorSpec

    model = _dead_depthwise_model(gamma_scale)
    representative = load_data(data_dir / "calib.npz", [TensorSpec("image", (None, 8, 8, 1), "float32")])
    # The conversion itself now prepares an int16x8 file and fails with the explanation.
    with pytest.raises(ConversionError) as error:
        conversion.convert_keras_model(model, ConversionOptions(mode=Mode.INT16X8), representative)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(
        "int16x8 cannot run: layer dw (+dw_relu6, dw_bn) (DEPTHWISE_CONV_2D, node 2) has a "
        "calibrated output range of only "
    )
    assert "so its fused ReLU6 bound (6) is" in message and "overflows int32 (the range must exceed 0.0002)" in message
    assert message.endswith(f"calibrate with data that activates it, or {advice}")


def test_other_prepare_failures_keep_their_first_line():
    from tflite_opt.quantize.prepare_failures import explain_prepare_failure

    message = explain_prepare_failure("tflite/kernels/conv.cc:349 bad things.\nNode number 3 (CONV_2D) failed", b"")
    assert message == "the int16x8 file does not prepare in LiteRT: tflite/kernels/conv.cc:349 bad things."


# -------------------------------------------------------------------------------- the transforms as convert runs them


@pytest.mark.slow
def test_convert_transformed_equalizes_corrects_saves_and_stays_integer_only(outlier_mlp, data_dir, tmp_path):
    import keras

    from tflite_opt.measure.inspection import inspect_model
    from tflite_opt.modes import Mode
    from tflite_opt.quantize.options import ConversionOptions
    from tflite_opt.quantize.transforms import convert_transformed

    loaded, load_data = load(outlier_mlp.path)
    representative = load_data(data_dir / "calib.npz", loaded.inputs)
    saved = tmp_path / "equalized.keras"
    content, done = convert_transformed(
        loaded,
        ConversionOptions(mode=Mode.INT8),
        representative,
        equalize=True,
        bias_correction=True,
        save_transformed=str(saved),
    )
    assert done.transforms == ["equalize", "bias_correction"] and len(done.summaries()) == 2
    assert done.summaries()[0].startswith("equalized 2 chain(s) (dense1→dense2, dense2→logits) in ")
    assert inspect_model(content, path="x.tflite").integer_only is True
    assert outlier_mlp.float_accuracy - accuracy(content, data_dir / "test.npz") <= 0.01
    reloaded = keras.models.load_model(saved)  # the saved model is the transformed one, loadable as is
    np.testing.assert_array_equal(
        reloaded.get_layer("dense1").get_weights()[1], done.keras_model.get_layer("dense1").get_weights()[1]
    )


def test_the_transforms_refuse_what_they_cannot_rescale(two_io_savedmodel, outlier_mlp):
    from tflite_opt.modes import Mode
    from tflite_opt.quantize.options import ConversionOptions
    from tflite_opt.quantize.transforms import check_applicable

    saved_model, _ = load(two_io_savedmodel)
    with pytest.raises(ConversionError, match="is a SavedModel, which has no layer graph to rescale"):
        check_applicable(saved_model, ConversionOptions(mode=Mode.INT8), bias_correction=False)
    keras_model, _ = load(outlier_mlp.path)
    with pytest.raises(ConversionError) as error:
        check_applicable(keras_model, ConversionOptions(mode=Mode.INT16X8), bias_correction=True)
    assert str(error.value) == (
        "--bias-correction corrects the converter's int8 weights: use it with --mode int8 (--backend converter)"
    )
    check_applicable(keras_model, ConversionOptions(mode=Mode.INT16X8), bias_correction=False)  # equalize: fine


def test_concentration_is_the_widest_channel_over_the_median_of_the_live_ones():
    from tflite_opt.quantize.activation_ranges import concentration

    low = np.zeros(5)
    assert concentration(low, np.array([1.0, 2.0, 0.0, 0.0, 1000.0])) == 500.0  # dead channels left out
    assert concentration(low, np.zeros(5)) is None
    assert concentration(np.zeros(1), np.ones(1)) is None  # one channel: nothing to compare

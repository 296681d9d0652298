"""``tflite-opt landscape``: the loss landscape (Li et al. 2018) and the quantization direction.

The numbers are checked against computations made here, independently of the command: the float loss with the
Keras loss object on ``predict``, the weight-quantized loss on a clone whose kernels were quantized here (per
output channel, symmetric, as the converter quantizes int8 weights), and the real file's accuracy with the
LiteRT interpreter.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures_models import build_keras3_cnn
from tests.fixtures_training import run_cli, tflite_accuracy

GRID = 5
SAMPLES = 200


def _keras_for(path: Path):
    if path.suffix == ".h5":
        import tf_keras

        return tf_keras
    import keras

    return keras


def _load(path: Path):
    keras = _keras_for(path)
    loader = keras.models.load_model if path.suffix == ".h5" else keras.saving.load_model
    return keras, loader(path)


def _float_loss(keras, model, x, y) -> float:
    """The model's own loss on the data: its compiled loss function on its predictions."""
    scores = model.predict(x, verbose=0, batch_size=64)
    return float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, scores))


def _weight_quantized_loss(keras, model, x, y, bits: int = 8) -> float:
    """A clone with every kernel quantized per output channel, symmetric (int8: scale max|w|/127), biases float."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    levels = 2 ** (bits - 1) - 1
    for layer in clone.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        value = kernel.numpy()
        scale = np.abs(value).max(axis=tuple(range(value.ndim - 1)), keepdims=True) / levels
        kernel.assign(np.clip(np.round(value / scale), -levels - 1, levels) * scale)
    return _float_loss(keras, clone, x, y)


def _landscape(model, data, plot, *extra):
    result = run_cli(
        "landscape", model, "--data", data, "--grid", GRID, "--num-samples", SAMPLES, "--plot", plot, *extra
    )
    assert result.exit_code == 0, result.output + str(result.exception)
    return result


def _assert_png_drawn(path: Path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(path)[..., :3]
    colours = np.unique((pixels.reshape(-1, 3) * 255).astype(np.uint8), axis=0)
    assert pixels.shape[0] > 400 and pixels.shape[1] > 1000
    assert pixels.std() > 0.1 and len(colours) > 200, (pixels.std(), len(colours))


@pytest.fixture(scope="module")
def keras3_int8(tmp_path_factory, keras3_cnn_path, data_dir):
    folder = tmp_path_factory.mktemp("landscape")
    plot = folder / "landscape.png"
    result = _landscape(keras3_cnn_path, data_dir / "train.npz", plot, "--format", "json")
    return json.loads(result.stdout), plot


def test_grid_centre_and_curve_start_are_the_float_loss(keras3_int8, keras3_cnn_path, digits):
    payload, _ = keras3_int8
    keras, model = _load(keras3_cnn_path)
    x, y = digits[0][:SAMPLES], digits[1][:SAMPLES]
    own = _float_loss(keras, model, x, y)
    grid = payload["grid"]
    assert grid["size"] == GRID and grid["coordinates"] == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert len(grid["loss"]) == GRID and all(len(row) == GRID for row in grid["loss"])
    assert abs(grid["loss"][GRID // 2][GRID // 2] - own) < 1e-5
    assert abs(payload["curve"]["loss"][0] - own) < 1e-5
    assert abs(payload["float"]["loss"] - own) < 1e-5
    expected_accuracy = float(np.mean(model.predict(x, verbose=0).argmax(axis=1) == y))
    assert payload["float"]["accuracy"] == pytest.approx(expected_accuracy, abs=1e-9)
    # Away from the minimum the loss rises: every corner of the grid is above the centre.
    corners = [grid["loss"][i][j] for i in (0, -1) for j in (0, -1)]
    assert min(corners) > own


def test_curve_at_one_is_the_weight_quantized_model(keras3_int8, keras3_cnn_path, digits):
    payload, _ = keras3_int8
    keras, model = _load(keras3_cnn_path)
    x, y = digits[0][:SAMPLES], digits[1][:SAMPLES]
    quantized = _weight_quantized_loss(keras, model, x, y)
    curve = payload["curve"]
    assert curve["alpha"][0] == 0.0 and curve["alpha"][-1] == 2.0 and 1.0 in curve["alpha"]
    at_one = curve["loss"][curve["alpha"].index(1.0)]
    assert curve["quantized"]["loss"] == at_one
    assert abs(at_one - quantized) < 0.02, (at_one, quantized)
    assert abs(at_one - quantized) < 1e-4  # the same rounding, so in fact much closer
    # Every kernel was found in the file, stored in int8, and moved by well under 1 %.
    kernels = {k["weight"]: k for k in curve["kernels"]}
    assert set(kernels) == {"conv1/kernel", "conv2/kernel", "dense1/kernel", "logits/kernel"}
    assert {k["dtype"] for k in kernels.values()} == {"int8"}
    assert all(0 < k["relative_change"] < 0.01 for k in kernels.values())
    assert 0.001 < curve["distance"] < 0.01
    assert 0.9 < curve["tflite"]["accuracy"] <= 1.0 and curve["tflite"]["loss"] > 0


def test_json_has_grid_curve_sharpness_and_the_png_is_drawn(keras3_int8):
    payload, plot = keras3_int8
    assert payload["schema_version"] == 1 and payload["mode"] == "int8" and payload["num_samples"] == SAMPLES
    assert payload["loss"] == {"name": "sparse_categorical_crossentropy(from_logits=True)", "source": "compiled"}
    sharpness = payload["sharpness"]
    assert sharpness["radius"] == 0.25 and sharpness["directions"] == 8 and len(sharpness["rises"]) == 16
    assert sharpness["loss_rise"] == pytest.approx(float(np.mean(sharpness["rises"])))
    assert sharpness["loss_rise"] > 0
    assert all(0.0 <= a <= 1.0 for row in payload["grid"]["accuracy"] for a in row)
    assert payload["plot"] == str(plot)
    _assert_png_drawn(plot)


@pytest.fixture(scope="module")
def tf_keras_int8_file(tmp_path_factory, tf_keras_cnn_h5, data_dir):
    """The tf_keras CNN converted to int8 by ``tflite-opt convert`` beforehand."""
    path = tmp_path_factory.mktemp("tf_keras_int8") / "cnn_int8.tflite"
    converted = run_cli(
        "convert", tf_keras_cnn_h5, "-o", path, "--mode", "int8", "--representative-data", data_dir / "calib.npz"
    )
    assert converted.exit_code == 0, converted.output
    return path


def test_tf_keras_model_and_a_given_tflite_file(tmp_path, tf_keras_cnn_h5, tf_keras_int8_file, data_dir, digits):
    """A tf_keras .h5 model, the weights taken from a file converted beforehand."""
    plot = tmp_path / "out" / "tf_keras.png"
    result = _landscape(
        tf_keras_cnn_h5, data_dir / "train.npz", plot, "--tflite", tf_keras_int8_file, "--format", "json"
    )
    payload = json.loads(result.stdout)
    keras, model = _load(tf_keras_cnn_h5)
    x, y = digits[0][:SAMPLES], digits[1][:SAMPLES]
    own = _float_loss(keras, model, x, y)
    assert payload["mode"] == "int8"  # told from the file
    assert abs(payload["grid"]["loss"][GRID // 2][GRID // 2] - own) < 1e-5
    assert abs(payload["curve"]["loss"][0] - own) < 1e-5
    assert abs(payload["curve"]["quantized"]["loss"] - _weight_quantized_loss(keras, model, x, y)) < 0.02
    # The accuracy beside the curve is the file's own, as the LiteRT interpreter measures it sample by sample.
    assert payload["curve"]["tflite"]["accuracy"] == pytest.approx(tflite_accuracy(tf_keras_int8_file, x, y), abs=1e-9)
    _assert_png_drawn(plot)


def _table_row(stdout: str, label: str) -> list[str]:
    line = next(line for line in stdout.splitlines() if label in line)
    return [cell.strip() for cell in line.strip("│ ").split("│")]


def test_int4_weight_only_file_is_exactly_the_curve_at_one(tmp_path, keras3_cnn_path, data_dir):
    """int4-weights quantizes only the weights: the file run in LiteRT *is* the model at α = 1 (the table)."""
    result = _landscape(
        keras3_cnn_path, data_dir / "train.npz", tmp_path / "int4.png", "--mode", "int4-weights", "--grid", 3
    )
    at_one = _table_row(result.stdout, "int4-weights weights, run in float (α = 1)")
    in_litert = _table_row(result.stdout, "int4-weights .tflite file, run in LiteRT")
    assert at_one[1:] == in_litert[1:] and at_one[2].endswith("%")
    float_row = _table_row(result.stdout, "float weights (α = 0)")
    assert float(float_row[1]) < float(at_one[1])  # 16 levels cost loss
    distance = float(result.stdout.split("int4-weights moves the weights ")[1].split()[0])
    assert 0.03 < distance < 0.2  # much further than int8's ~0.005
    assert "sharpness: mean loss rise" in result.stdout


# ------------------------------------------------------------------------------------------------ sharpness


def _train(keras, train_x, train_y, optimizer, batch_size: int, repeats: int, path: Path) -> Path:
    keras.utils.set_random_seed(0)
    model = build_keras3_cnn(keras)
    # BatchNorm statistics that settle within a few dozen steps: both models are judged at their own minimum,
    # not at stale statistics.
    model.get_layer("bn1").momentum = 0.9
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = np.tile(train_x, (repeats, 1, 1, 1)), np.tile(train_y, repeats)
    model.fit(x, y, epochs=1, batch_size=batch_size, shuffle=False, verbose=0)
    model.save(path)
    return path


@pytest.fixture(scope="module")
def flat_and_sharp(tmp_path_factory, digits):
    """The house CNN trained on the same 200 digits from the same start, as in the paper's small-batch vs
    large-batch experiment: SGD on batches of 8 (flat) and Adam on the full batch (sharp)."""
    import keras

    folder = tmp_path_factory.mktemp("sharpness")
    x, y = digits[0][:SAMPLES], digits[1][:SAMPLES]
    np.savez(folder / "train.npz", x=x, y=y)
    flat = _train(keras, x, y, keras.optimizers.SGD(0.1), 8, 15, folder / "flat.keras")
    sharp = _train(keras, x, y, keras.optimizers.Adam(1e-2), SAMPLES, 50, folder / "sharp.keras")
    return folder, flat, sharp


@pytest.mark.slow
def test_a_large_batch_minimum_is_sharper_than_a_small_batch_one(flat_and_sharp):
    folder, flat, sharp = flat_and_sharp
    payloads = {}
    for name, model in (("flat", flat), ("sharp", sharp)):
        result = run_cli(
            "landscape",
            model,
            "--data",
            folder / "train.npz",
            "--grid",
            3,
            "--mode",
            "float16",
            "--plot",
            folder / f"{name}.png",
            "--format",
            "json",
        )
        assert result.exit_code == 0, result.output
        payloads[name] = json.loads(result.stdout)
    flat_rise = payloads["flat"]["sharpness"]["loss_rise"]
    sharp_rise = payloads["sharp"]["sharpness"]["loss_rise"]
    # Both sit at a minimum of the training loss (the large-batch one even deeper), and the loss rises around
    # the large-batch minimum many times faster (flat 0.0172, sharp 0.1459 here: 8.5x).
    assert payloads["flat"]["float"]["loss"] < 0.01 and payloads["sharp"]["float"]["loss"] < 0.01
    assert payloads["flat"]["float"]["accuracy"] == payloads["sharp"]["float"]["accuracy"] == 1.0
    assert sharp_rise > 3 * flat_rise, (flat_rise, sharp_rise)


# ------------------------------------------------------------------------------------------------ errors


def test_even_grid_is_a_usage_error(tmp_path, keras3_cnn_path, data_dir):
    result = run_cli(
        "landscape", keras3_cnn_path, "--data", data_dir / "train.npz", "--grid", 4, "--plot", tmp_path / "x.png"
    )
    assert result.exit_code == 2
    assert "4: use an odd number, at least 3, so that the float weights are the centre" in result.stderr


def test_unlabelled_data_is_refused(tmp_path, keras3_cnn_path, data_dir):
    result = run_cli("landscape", keras3_cnn_path, "--data", data_dir / "calib.npz", "--plot", tmp_path / "x.png")
    assert result.exit_code == 1
    assert "calib.npz has no labels; the loss landscape needs labels ('y' in a .npz" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_file_of_another_model_is_refused(tmp_path, keras3_cnn_path, data_dir):
    import keras

    keras.utils.set_random_seed(7)
    stranger = tmp_path / "stranger.keras"
    build_keras3_cnn(keras).save(stranger)  # the same architecture, other (untrained) weights
    other = tmp_path / "stranger.tflite"
    assert run_cli("convert", stranger, "-o", other, "--mode", "float16").exit_code == 0
    result = run_cli(
        "landscape",
        keras3_cnn_path,
        "--data",
        data_dir / "train.npz",
        "--grid",
        3,
        "--tflite",
        other,
        "--plot",
        tmp_path / "x.png",
    )
    assert result.exit_code == 1
    assert (
        "none of the model's kernels (conv1/kernel, conv2/kernel, dense1/kernel, ...) were found in "
        f"{other}; is it a conversion of this model?"
    ) in result.stderr


def test_plot_cannot_overwrite_the_data(keras3_cnn_path, data_dir):
    result = run_cli("landscape", keras3_cnn_path, "--data", data_dir / "train.npz", "--plot", data_dir / "train.npz")
    assert result.exit_code == 1
    assert "would overwrite the input" in result.stderr


# ------------------------------------------------------------------------------------------------ library pieces


def _parameter(label: str, layer_class: str, value: np.ndarray):
    from tflite_opt.workflows.landscape_directions import Parameter, filter_axes

    return Parameter(
        label,
        label.split("/")[0],
        layer_class,
        None,
        value.astype(np.float32),
        filter_axes(layer_class, label.split("/")[1], value.ndim),
    )


def test_random_directions_are_filter_normalized():
    from tflite_opt.workflows.landscape_directions import filter_normalized_distance, random_direction

    rng = np.random.default_rng(3)
    parameters = [
        _parameter("conv/kernel", "Conv2D", rng.normal(size=(3, 3, 2, 4)) * np.array([1, 10, 0.1, 3])),
        _parameter("conv/bias", "Conv2D", rng.normal(size=4)),
        _parameter("dw/depthwise_kernel", "DepthwiseConv2D", rng.normal(size=(3, 3, 2, 3))),
        _parameter("up/kernel", "Conv2DTranspose", rng.normal(size=(3, 3, 5, 2))),
        _parameter("bn/gamma", "BatchNormalization", rng.normal(size=4)),
    ]
    direction = random_direction(parameters, np.random.default_rng(0))
    conv, bias, depthwise, transpose, gamma = direction
    weights = parameters[0].value
    np.testing.assert_allclose(
        np.linalg.norm(conv.reshape(-1, 4), axis=0), np.linalg.norm(weights.reshape(-1, 4), axis=0), rtol=1e-5
    )
    np.testing.assert_allclose(
        np.sqrt((depthwise**2).sum(axis=(0, 1))), np.sqrt((parameters[2].value ** 2).sum(axis=(0, 1))), rtol=1e-5
    )
    np.testing.assert_allclose(
        np.sqrt((transpose**2).sum(axis=(0, 1, 3))), np.sqrt((parameters[3].value ** 2).sum(axis=(0, 1, 3))), rtol=1e-5
    )
    assert not bias.any() and not gamma.any()
    assert filter_normalized_distance(parameters, direction) == pytest.approx(1.0, abs=1e-6)
    assert filter_normalized_distance(parameters, [0.01 * d for d in direction]) == pytest.approx(0.01, abs=1e-8)


def test_matching_undoes_the_transpose_and_the_batchnorm_folding():
    """A conv kernel stored OHWI with BatchNorm folded in (one scale per output channel, one negative), and a
    Dense kernel stored (out, in): the direction is the per-channel int8 rounding of the Keras kernels."""
    from tflite_opt.workflows.landscape_quantized import FileConstant, direction_from_constants

    rng = np.random.default_rng(1)
    conv = _parameter("conv/kernel", "Conv2D", rng.normal(size=(3, 3, 2, 4)))
    dense = _parameter("dense/kernel", "Dense", rng.normal(size=(6, 3)))
    bn_scale = np.array([2.0, -0.5, 1.0, 3.0], dtype=np.float32)

    def int8(values, axis):
        scale = np.abs(values).max(axis=tuple(a for a in range(values.ndim) if a != axis), keepdims=True) / 127
        return np.round(values / scale) * scale

    folded = (conv.value * bn_scale).transpose(3, 0, 1, 2)  # HWIO -> OHWI
    reference = [
        FileConstant(1, "conv", "float32", folded.shape, folded),
        FileConstant(2, "dense", "float32", (3, 6), dense.value.T.copy()),
    ]
    quantized = [
        FileConstant(7, "dense", "int8", (3, 6), int8(dense.value.T, 0)),
        FileConstant(8, "conv", "int8", folded.shape, int8(folded, 0)),
    ]
    result = direction_from_constants([conv, dense], quantized, reference)
    np.testing.assert_allclose(result.direction[0], int8(conv.value, 3) - conv.value, atol=1e-6)
    np.testing.assert_allclose(result.direction[1], int8(dense.value, 1) - dense.value, atol=1e-6)
    assert [(k.label, k.tensor, k.dtype) for k in result.kernels] == [
        ("conv/kernel", "conv", "int8"),
        ("dense/kernel", "dense", "int8"),
    ]
    assert result.warnings == []


def test_int4_values_are_unpacked_low_nibble_first():
    from tflite_opt.workflows.landscape_quantized import _unpack_int4

    packed = np.array([0x21, 0xF8, 0x07], dtype=np.uint8)
    assert _unpack_int4(packed, 5).tolist() == [1, 2, -8, -1, 7]


def test_contours_are_log_spaced_when_the_loss_spans_decades(tmp_path):
    from tflite_opt.reporting.landscape_plot import _levels, plot_landscape

    coordinates = np.linspace(-1, 1, 7)
    a, b = np.meshgrid(coordinates, coordinates)
    steep = 0.01 + 30 * (a**2 + b**2) ** 2
    assert _levels(steep)[2] is True and _levels(0.3 + 0.1 * (a**2 + b**2))[2] is False
    path = plot_landscape(
        tmp_path / "steep.png",
        coordinates=coordinates.tolist(),
        grid_loss=steep.tolist(),
        alpha=[0.0, 1.0, 2.0],
        curve_loss=[0.01, 0.02, 0.5],
        curve_accuracy=[0.99, 0.98, 0.6],
        mode="int4",
        distance=0.1,
        tflite_accuracy=0.97,
        tflite_loss=0.03,
        sharpness_radius=0.25,
    )
    assert path == tmp_path / "steep.png"
    _assert_png_drawn(path)
    assert [p.name for p in tmp_path.iterdir()] == ["steep.png"]  # no temporary file left behind

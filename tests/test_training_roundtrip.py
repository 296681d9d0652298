"""Fine-tuned Keras 3 models go back to Keras 3, and layers tfmot only pretends to cluster are not counted."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from tflite_opt.cli import cli


@pytest.fixture(scope="module")
def mobile_block_keras3(tmp_path_factory, digits):
    """A Keras 3 model with the layers of a mobile block (depthwise conv, BN, ReLU6, dropout)."""
    import keras

    keras.utils.set_random_seed(3)
    train_x, train_y, _, _ = digits
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(6.0, name="stem_relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.ReLU(6.0, name="dw_relu")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(0.1, name="drop")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train_x, train_y, epochs=2, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("mobile") / "mobile.keras"
    model.save(path)
    return path


def keras_version_of(path) -> str:
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("metadata.json"))["keras_version"]


def test_pruned_keras3_model_is_written_by_keras3(mobile_block_keras3, data_dir, tmp_path):
    out = tmp_path / "pruned.keras"
    result = CliRunner().invoke(
        cli,
        [
            "prune",
            str(mobile_block_keras3),
            "--train-data",
            str(data_dir / "train.npz"),
            "--sparsity",
            "0.5",
            "--epochs",
            "1",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Keras 3" in result.stdout and "warning" not in result.stderr
    assert keras_version_of(out).startswith("3.")
    import keras

    reloaded = keras.saving.load_model(out)
    kernel = reloaded.get_layer("logits").get_weights()[0]
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.01)


def test_depthwise_layers_are_not_reported_as_clustered(mobile_block_keras3, data_dir, tmp_path):
    out = tmp_path / "clustered.tflite"
    result = CliRunner().invoke(
        cli,
        [
            "cluster",
            str(mobile_block_keras3),
            "--train-data",
            str(data_dir / "train.npz"),
            "--clusters",
            "4",
            "--epochs",
            "1",
            "--format",
            "json",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = {row["layer"]: row for row in json.loads(result.stdout)["layers"]}
    assert rows["dw"]["optimized"] is False
    assert rows["stem"]["optimized"] is True and rows["stem"]["unique_values"] <= 4
    assert rows["logits"]["optimized"] is True and rows["logits"]["unique_values"] <= 4

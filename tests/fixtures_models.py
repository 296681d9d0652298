"""Small trained models in every supported format (session-scoped: the TensorFlow work is paid once)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.shared_fixtures import build_once


def build_keras3_cnn(keras, num_classes: int = 10):
    """The house CNN for 8x8x1 digits: Conv-BN-ReLU, pooling, a dense head producing logits."""
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(64, activation="relu", name="dense1")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


def fit_on_digits(keras, model, train_x, train_y, *, epochs: int):
    """Train a logits classifier the house way: Adam 3e-3, sparse cross-entropy from logits, batch 64."""
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(train_x, train_y, epochs=epochs, batch_size=64, verbose=0)
    return model


def _trained_cnn(tmp_path_factory, digits, keras, key: str, filename: str):
    """The house CNN trained on digits with ``keras`` (Keras 3 or tf_keras), saved as ``filename`` once per run."""

    def build(folder):
        keras.utils.set_random_seed(0)
        train_x, train_y, _, _ = digits
        model = build_keras3_cnn(keras)
        fit_on_digits(keras, model, train_x, train_y, epochs=8)
        model.save(folder / filename)
        return folder / filename

    return build_once(tmp_path_factory, key, build)


@pytest.fixture(scope="session")
def keras3_cnn_path(tmp_path_factory, digits):
    """A Keras 3 ``.keras`` CNN trained on digits (~97% test accuracy)."""
    import keras

    return _trained_cnn(tmp_path_factory, digits, keras, "k3", "cnn.keras")


@pytest.fixture(scope="session")
def tf_keras_cnn_h5(tmp_path_factory, digits):
    """The same architecture in tf_keras (Keras 2), saved as ``.h5``."""
    import tf_keras

    return _trained_cnn(tmp_path_factory, digits, tf_keras, "k2", "cnn.h5")


@pytest.fixture(scope="session")
def two_io_savedmodel(tmp_path_factory, digits):
    """A SavedModel with two named inputs (image, meta) and two named outputs (digit, parity)."""

    def build(folder):
        import keras

        keras.utils.set_random_seed(1)
        train_x, train_y, _, _ = digits
        rng = np.random.default_rng(0)
        meta = rng.random((len(train_x), 4)).astype(np.float32)
        image = keras.Input((8, 8, 1), name="image")
        meta_in = keras.Input((4,), name="meta")
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(image)
        x = keras.layers.Flatten(name="flat")(x)
        x = keras.layers.Concatenate(name="join")([x, keras.layers.Dense(4, name="meta_dense")(meta_in)])
        x = keras.layers.Dense(32, activation="relu", name="hidden")(x)
        digit = keras.layers.Dense(10, name="digit")(x)
        parity = keras.layers.Dense(2, name="parity")(x)
        model = keras.Model({"image": image, "meta": meta_in}, {"digit": digit, "parity": parity})
        model.compile(
            optimizer="adam",
            loss={
                "digit": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                "parity": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            },
        )
        model.fit({"image": train_x, "meta": meta}, {"digit": train_y, "parity": train_y % 2}, epochs=3, verbose=0)
        path = folder / "two_io"
        model.export(str(path), format="tf_saved_model", verbose=False)
        np.savez(folder / "calib.npz", image=train_x[:100], meta=meta[:100])
        return path

    return build_once(tmp_path_factory, "sm", build)

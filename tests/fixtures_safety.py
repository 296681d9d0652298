"""Models built to be hard on quantization, for ``debug``, ``convert --keep-float`` and ``auto`` (session-scoped).

* ``hostile_model``: an MLP trained on digits (~97%), then rewritten so that the float function is unchanged but
  int8 is not: one unit of ``dense1`` is scaled down by 1000 and the matching row of ``dense2``'s kernel up by
  1000 (ReLU is positively homogeneous, so the product is the same). Every output channel of ``dense2`` now has one
  weight ~1000x its others; per-channel int8 weights then round all the others to zero, so ``dense2`` computes
  almost nothing but its bias. Keeping ``dense2`` in float restores it (the tiny unit is lost to int8 activation
  rounding, which is why the least useful unit is the one scaled).
* ``tie_model``: a bias-free ``Dense(2)`` and data whose two logits differ by 2e-4 on logits of ~10, the right
  class winning each time (labels from float64 arithmetic). float32 keeps every decision (rounding ~1e-6), while
  every lossy mode flips about half of them: float16 weights (~5e-4 relative error), int8/int16 activations,
  dynamic range. With integer I/O even keeping the layer in float cannot help, since the input itself is
  quantized. So no variant meets ``--max-accuracy-drop 0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures_models import fit_on_digits
from tests.shared_fixtures import build_once

HOSTILE_LAYER = "dense2"
OUTLIER_FACTOR = 1000.0
TIE_FEATURES = 600  # kernel of 1200 values: dynamic range quantizes tensors of >= 1024 elements
TIE_MARGIN = 2e-4


@dataclass(frozen=True)
class ModelCase:
    """A model file and its data files."""

    path: Path
    test_data: Path
    calib_data: Path
    float_accuracy: float


def build_mlp(keras):
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = keras.layers.Dense(128, activation="relu", name="dense1")(x)
    x = keras.layers.Dense(16, activation="relu", name=HOSTILE_LAYER)(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="mlp")


def add_weight_outliers(model, factor: float, probe: np.ndarray) -> int:
    """Scale the least useful live unit of dense1 by 1/factor and its dense2 row by factor; returns the unit."""
    import keras

    dense1, dense2 = model.get_layer("dense1"), model.get_layer(HOSTILE_LAYER)
    hidden = keras.Model(model.inputs, dense1.output).predict(probe, verbose=0)
    kernel1, bias1 = dense1.get_weights()
    kernel2, bias2 = dense2.get_weights()
    importance = np.abs(hidden).mean(axis=0) * np.abs(kernel2).sum(axis=1)
    alive = (hidden > 0).mean(axis=0) > 0.05
    unit = int(min(np.flatnonzero(alive), key=lambda i: importance[i]))
    kernel1[:, unit] /= factor
    bias1[unit] /= factor
    kernel2[unit, :] *= factor
    dense1.set_weights([kernel1, bias1])
    dense2.set_weights([kernel2, bias2])
    return unit


@pytest.fixture(scope="session")
def hostile_model(tmp_path_factory, digits, data_dir) -> ModelCase:
    """The MLP with weight outliers in ``dense2`` (see the module docstring); data: ``data_dir`` test/calib."""

    def build(folder):
        import keras

        keras.utils.set_random_seed(0)
        train_x, train_y, test_x, test_y = digits
        model = build_mlp(keras)
        fit_on_digits(keras, model, train_x, train_y, epochs=15)
        before = model.predict(test_x, verbose=0)
        add_weight_outliers(model, OUTLIER_FACTOR, test_x)
        after = model.predict(test_x, verbose=0)
        # The rewrite must not change the float model.
        assert np.allclose(before, after, atol=1e-3), np.abs(before - after).max()
        accuracy = float(np.mean(after.argmax(axis=1) == test_y))
        assert accuracy > 0.93, accuracy
        model.save(folder / "hostile.keras")
        return [folder / "hostile.keras", accuracy]

    path, accuracy = build_once(tmp_path_factory, "hostile", build)
    return ModelCase(path, data_dir / "test.npz", data_dir / "calib.npz", accuracy)


@pytest.fixture(scope="session")
def tie_model(tmp_path_factory) -> ModelCase:
    """A Dense(2) whose decisions hang on 2e-4 margins (see the module docstring)."""
    import keras

    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(TIE_FEATURES, 2))
    direction = kernel[:, 0] - kernel[:, 1]

    def samples(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.uniform(0.0, 1.0, size=(n, TIE_FEATURES))
        sign = rng.choice([-1.0, 1.0], size=n)
        # Remove x's component along (w0 - w1) and put back exactly +-margin: logit0 - logit1 = sign * margin.
        x = x - np.outer(x @ direction / (direction @ direction), direction)
        x = x + np.outer(sign * TIE_MARGIN / (direction @ direction), direction)
        return x.astype(np.float32), (sign < 0).astype(np.int64)

    test_x, test_y = samples(300)
    calib_x, _ = samples(100)
    logits = test_x.astype(np.float64) @ kernel
    assert np.all((logits[:, 1] > logits[:, 0]) == (test_y == 1))

    inputs = keras.Input((TIE_FEATURES,), name="features")
    outputs = keras.layers.Dense(2, use_bias=False, name="tie")(inputs)
    model = keras.Model(inputs, outputs, name="tie_model")
    model.get_layer("tie").set_weights([kernel.astype(np.float32)])
    folder = tmp_path_factory.mktemp("tie")
    model.save(folder / "tie.keras")
    np.savez(folder / "test.npz", x=test_x, y=test_y)
    np.savez(folder / "calib.npz", x=calib_x)
    return ModelCase(folder / "tie.keras", folder / "test.npz", folder / "calib.npz", 1.0)

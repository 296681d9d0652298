"""Benchmark models, converted once and cached (benchmarks may import TensorFlow; the tool's evaluate path does not).

* ``digits_cnn``: the test suite's tiny CNN on 8x8x1 digits (microseconds per invoke), trained for one epoch.
* ``cnn64``: a small CNN on 64x64x1 images (digits scaled up 8x, with noise), trained for one epoch — the
  whole-process throughput benchmark's model (a fraction of a millisecond per invoke).
* ``mobilenet_v2``: MobileNetV2 (alpha 1.0, 96x96x3, random weights — speed does not depend on them), the size of
  model the TFLite guides benchmark (milliseconds per invoke).

Each comes as ``fp32`` and ``int8`` (integer-only, int8 I/O) ``.tflite``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("TFLITE_OPT_BENCH_CACHE", Path(tempfile.gettempdir()) / "tflite-opt-bench"))


def digits_data() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 sklearn digits as (x (n, 8, 8, 1) float32 in [0, 1], y)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.images / 16.0).astype(np.float32)[..., None], data.target.astype(np.int64)


def cnn64_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` labelled 64x64x1 float32 images in [0, 1]: sklearn digits scaled up 8x, with Gaussian noise."""
    x, y = digits_data()
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(x), n)
    images = np.repeat(np.repeat(x[index], 8, axis=1), 8, axis=2)
    images += rng.normal(0.0, 0.1, images.shape).astype(np.float32)
    return np.clip(images, 0.0, 1.0).astype(np.float32), y[index]


def _build_cnn64(keras):
    inputs = keras.Input((64, 64, 1), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="cnn64")


def _convert(model, mode: str, calibration: np.ndarray) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode == "int8":

        def representative():
            for i in range(len(calibration)):
                yield [calibration[i : i + 1]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def model_files(name: str) -> dict[str, Path]:
    """``{"fp32": path, "int8": path}`` for ``digits_cnn``, ``cnn64`` or ``mobilenet_v2`` (built on first use)."""
    folder = CACHE / name
    paths = {mode: folder / f"{name}_{mode}.tflite" for mode in ("fp32", "int8")}
    if all(p.exists() for p in paths.values()):
        return paths
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    print(f"building {name} (cached in {folder}) ...", file=sys.stderr)
    import keras

    keras.utils.set_random_seed(0)
    if name == "digits_cnn":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.fixtures_models import build_keras3_cnn

        x, y = digits_data()
        model = build_keras3_cnn(keras)
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, epochs=1, verbose=0)
        calibration = x[:100]
    elif name == "cnn64":
        x, y = cnn64_data(4000, seed=1)
        model = _build_cnn64(keras)
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, epochs=1, verbose=0)
        calibration = x[:100]
    elif name == "mobilenet_v2":
        model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=1.0, weights=None, classes=10)
        calibration = np.random.default_rng(0).random((20, 96, 96, 3), dtype=np.float32)
    else:
        raise ValueError(f"unknown benchmark model {name!r}")
    folder.mkdir(parents=True, exist_ok=True)
    for mode, path in paths.items():
        path.write_bytes(_convert(model, mode, calibration))
    return paths


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A small fixed-width text table."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def load_note() -> str:
    """The machine's load averages: on a shared box, other processes take cores our parallel workers need."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:  # pragma: no cover - not on Unix
        return "load average: unknown"
    return f"load average (1 min, 5 min): {one:.2f}, {five:.2f} on {os.cpu_count()} cores"

"""The embedded demo: a small CNN trained offline on scikit-learn's handwritten digits.

The digits ship inside scikit-learn (no download). The 8x8 images are upscaled to 32x32 so the network does
mobile-sized work (convolutions over a real feature map) and the latency column has something to measure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tflite_opt.fileio import atomic_save
from tflite_opt.progress import Progress, ensure

IMAGE_SIZE = 32
NUM_CLASSES = 10


@dataclass
class DemoAssets:
    """What ``prepare_demo`` wrote: the trained model and its data files."""

    model_path: Path
    train_path: Path
    test_path: Path
    calib_path: Path
    float_accuracy: float
    num_train: int
    num_test: int


def digits_dataset(image_size: int = IMAGE_SIZE, seed: int = 0):
    """scikit-learn's digits as float32 images in [0, 1] of ``image_size``², split 80/20 (stratified by a seed)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)
    factor = image_size // images.shape[1]
    if factor > 1:
        # Nearest-neighbour upscaling then a 3x3 box blur: smooth strokes, as a camera would see them.
        images = images.repeat(factor, axis=1).repeat(factor, axis=2)
        padded = np.pad(images, ((0, 0), (1, 1), (1, 1)), mode="edge")
        images = sum(padded[:, i : i + image_size, j : j + image_size] for i in range(3) for j in range(3)) / 9.0
    x = images[..., None].astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    split = int(len(x) * 0.8)
    return (x[:split], y[:split]), (x[split:], y[split:])


def build_cnn(keras, image_size: int = IMAGE_SIZE, num_classes: int = NUM_CLASSES):
    """A MobileNet-flavoured small CNN: conv/BN/ReLU stem, a depthwise-separable block, pooling, dense head."""
    layers = keras.layers
    inputs = keras.Input((image_size, image_size, 1), name="image")
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw1")(x)
    x = layers.BatchNormalization(momentum=0.9, name="dw1_bn")(x)
    x = layers.ReLU(6.0, name="dw1_relu")(x)
    x = layers.Conv2D(32, 1, use_bias=False, name="pw1")(x)
    x = layers.BatchNormalization(momentum=0.9, name="pw1_bn")(x)
    x = layers.ReLU(6.0, name="pw1_relu")(x)
    x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="fc")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


def prepare_demo(output_dir: Path, epochs: int = 12, seed: int = 0, progress: Progress | None = None) -> DemoAssets:
    """Train the demo CNN (Keras 3) and write ``model.keras``, ``train.npz``, ``test.npz``, ``calib.npz``."""
    from tflite_opt.models import tf_runtime

    progress = ensure(progress)
    keras = tf_runtime.import_keras3()
    keras.utils.set_random_seed(seed)
    (train_x, train_y), (test_x, test_y) = digits_dataset(seed=seed)
    output_dir.mkdir(parents=True, exist_ok=True)
    model = build_cnn(keras)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    class EpochProgress(keras.callbacks.Callback):
        def __init__(self, task):
            super().__init__()
            self.task = task

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            self.task.update(
                description=f"Training the demo CNN (loss {logs.get('loss', 0):.3f}, "
                f"val acc {logs.get('val_accuracy', 0):.3f})"
            )
            self.task.advance()

    with progress.task("Training the demo CNN", total=epochs) as task:
        model.fit(
            train_x,
            train_y,
            epochs=epochs,
            batch_size=32,
            validation_data=(test_x, test_y),
            verbose=0,
            callbacks=[EpochProgress(task)],
        )
    float_accuracy = float(np.mean(model.predict(test_x, verbose=0).argmax(axis=1) == test_y))
    model_path = output_dir / "model.keras"
    atomic_save(model_path, model.save)
    train_path, test_path, calib_path = output_dir / "train.npz", output_dir / "test.npz", output_dir / "calib.npz"
    atomic_save(train_path, lambda tmp: np.savez(tmp, x=train_x, y=train_y))
    atomic_save(test_path, lambda tmp: np.savez(tmp, x=test_x, y=test_y))
    atomic_save(calib_path, lambda tmp: np.savez(tmp, x=train_x[:300]))
    return DemoAssets(model_path, train_path, test_path, calib_path, float_accuracy, len(train_x), len(test_x))

"""Fixtures and helpers for the training commands (prune, qat, cluster) and the Keras 3 -> tf_keras bridge.

The CLI runs that train are session-scoped and shared between assertions (and between prune and PQAT), so the
whole set of training tests pays for each fine-tune once. Epochs are kept at 1-2: the digits CNN is tiny.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.shared_fixtures import build_once
from tflite_opt.cli import cli


def run_cli(*args):
    """Invoke the real CLI (quiet: no progress bars) and return the click Result (stdout/stderr separate)."""
    return CliRunner().invoke(cli, ["-q", *map(str, args)])


def interpreter(path: Path, *, delegates: bool = True):
    """A LiteRT interpreter for ``path`` (with the default XNNPACK delegate unless ``delegates=False``)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs = {} if delegates else {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    model = Interpreter(model_content=Path(path).read_bytes(), **kwargs)
    model.allocate_tensors()
    return model


def tflite_predict(path: Path, x: np.ndarray) -> np.ndarray:
    """Class scores of a one-input, one-output .tflite for every sample (quantizing int I/O)."""
    model = interpreter(path)
    runner = model.get_signature_runner()
    ((in_name, in_detail),) = runner.get_input_details().items()
    ((out_name, out_detail),) = runner.get_output_details().items()
    scores = []
    for sample in x:
        feed = sample[None].astype(np.float32)
        scale, zero = in_detail["quantization"]
        if in_detail["dtype"] != np.float32:
            info = np.iinfo(in_detail["dtype"])
            feed = np.clip(np.round(feed / scale + zero), info.min, info.max).astype(in_detail["dtype"])
        out = runner(**{in_name: feed})[out_name].astype(np.float32)
        scale, zero = out_detail["quantization"]
        if out_detail["dtype"] != np.float32:
            out = (out - zero) * scale
        scores.append(out[0])
    return np.stack(scores)


def tflite_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(tflite_predict(path, x).argmax(axis=1) == y))


def tflite_float_ops(path: Path) -> list[str]:
    """Ops (besides the I/O QUANTIZE/DEQUANTIZE) that read or write a float tensor (builtin kernels, no delegate)."""
    model = interpreter(path, delegates=False)
    tensors = {t["index"]: t["dtype"] for t in model.get_tensor_details()}
    found = []
    for op in model._get_ops_details():
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        indices = [i for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0]
        if any(tensors.get(i) in (np.float32, np.float16) for i in indices):
            found.append(op["op_name"])
    return found


def keras_kernels(path: Path) -> dict[str, np.ndarray]:
    """Kernels of the Conv/Dense layers of a .keras/.h5 file written by the training commands (tf_keras)."""
    from tflite_opt.models import load_model

    model = load_model(path).keras_model
    return {layer.name: layer.kernel.numpy() for layer in model.layers if hasattr(layer, "kernel")}


def tflite_weight_tensors(path: Path, min_size: int = 100) -> dict[str, np.ndarray]:
    """Constant (weight) tensors of the main subgraph with at least ``min_size`` values, by tensor name."""
    from ai_edge_litert import schema_py_generated as schema

    flatbuffer = schema.ModelT.InitFromPackedBuf(Path(path).read_bytes(), 0)
    constant = [
        index
        for index, tensor in enumerate(flatbuffer.subgraphs[0].tensors)
        if flatbuffer.buffers[tensor.buffer].data is not None and len(flatbuffer.buffers[tensor.buffer].data) > 0
    ]
    model = interpreter(path, delegates=False)
    details = {d["index"]: d for d in model.get_tensor_details()}
    weights = {}
    for index in constant:
        detail = details.get(index)
        if detail is None or int(np.prod(detail["shape"])) < min_size or detail["dtype"] == np.int32:
            continue
        weights[detail["name"]] = np.array(model.get_tensor(index))
    return weights


def densified_weights(path: Path) -> list[np.ndarray]:
    """The weights a sparse-encoded .tflite (EXPERIMENTAL_SPARSITY) expands at run time: the DENSIFY outputs."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    model = Interpreter(
        model_content=Path(path).read_bytes(),
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    model.allocate_tensors()
    for detail in model.get_input_details():
        model.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    model.invoke()
    outputs = [op["outputs"][0] for op in model._get_ops_details() if op["op_name"] == "DENSIFY"]
    return [np.array(model.get_tensor(index)) for index in outputs]


@dataclass
class CliRun:
    """One CLI invocation and what it wrote."""

    result: object
    outputs: dict[str, Path]
    payload: dict | None

    @property
    def ok(self) -> bool:
        return self.result.exit_code == 0


@dataclass
class StoredResult:
    """What the tests read of a click Result, kept so that xdist workers can share one run (build_once)."""

    exit_code: int
    output: str
    stdout: str


def run_json(*args, outputs: dict[str, Path]) -> CliRun:
    result = run_cli(*args, "--format", "json")
    payload = json.loads(result.stdout) if result.exit_code == 0 else None
    return CliRun(result=result, outputs=outputs, payload=payload)


def shared_run(tmp_path_factory, key: str, command) -> CliRun:
    """``command(folder) -> (args, outputs)`` run once per test run through ``run_json`` (see build_once)."""

    def build(folder):
        args, outputs = command(folder)
        run = run_json(*args, outputs=outputs)
        result = run.result
        return {"exit_code": result.exit_code, "output": result.output, "stdout": result.stdout, "outputs": outputs}

    stored = build_once(tmp_path_factory, key, build)
    result = StoredResult(stored["exit_code"], stored["output"], stored["stdout"])
    payload = json.loads(result.stdout) if result.exit_code == 0 else None
    return CliRun(result=result, outputs=stored["outputs"], payload=payload)


# ------------------------------------------------------------------------------------------------ training runs


@pytest.fixture(scope="session")
def pruned_run(tmp_path_factory, tf_keras_cnn_h5, data_dir) -> CliRun:
    """``prune --sparsity 0.8`` of the tf_keras CNN to fp32 .tflite and .keras (2 epochs)."""

    def command(folder):
        outputs = {"tflite": folder / "pruned.tflite", "keras": folder / "pruned.keras"}
        args = ["prune", tf_keras_cnn_h5, "--train-data", data_dir / "train.npz", "--sparsity", "0.8"]
        return [*args, "--epochs", "2", "-o", outputs["tflite"], "-o", outputs["keras"]], outputs

    return shared_run(tmp_path_factory, "pruned", command)


@pytest.fixture(scope="session")
def fp32_baseline(tmp_path_factory, tf_keras_cnn_h5) -> Path:
    """The unpruned tf_keras CNN as fp32 .tflite, converted by the ``convert`` command."""

    def build(folder):
        result = run_cli("convert", tf_keras_cnn_h5, "-o", folder / "fp32.tflite")
        assert result.exit_code == 0, result.output
        return folder / "fp32.tflite"

    return build_once(tmp_path_factory, "baseline", build)


@pytest.fixture(scope="session")
def qat_run(tmp_path_factory, tf_keras_cnn_h5, data_dir) -> CliRun:
    """``qat`` of the tf_keras CNN to an integer-only int8 .tflite (1 epoch)."""

    def command(folder):
        out = folder / "qat.tflite"
        return ["qat", tf_keras_cnn_h5, "--train-data", data_dir / "train.npz", "--epochs", "1", "-o", out], {
            "tflite": out
        }

    return shared_run(tmp_path_factory, "qat", command)


@pytest.fixture(scope="session")
def cluster_run(tmp_path_factory, tf_keras_cnn_h5, data_dir) -> CliRun:
    """``cluster --clusters 16`` of the tf_keras CNN to .keras and fp32 .tflite (1 epoch)."""

    def command(folder):
        outputs = {"tflite": folder / "clustered.tflite", "keras": folder / "clustered.keras"}
        args = ["cluster", tf_keras_cnn_h5, "--train-data", data_dir / "train.npz", "--clusters", "16"]
        return [*args, "--epochs", "1", "-o", outputs["tflite"], "-o", outputs["keras"]], outputs

    return shared_run(tmp_path_factory, "cluster", command)


# --------------------------------------------------------------------------------------------- bad inputs


@pytest.fixture(scope="session")
def bad_training_data(tmp_path_factory, digits) -> dict[str, Path]:
    """``label_out_of_range.npz`` (a label 10 for 10 classes), ``count_mismatch.npz`` (100 images, 90 labels),
    ``unlabelled.npz`` (no 'y')."""
    folder = tmp_path_factory.mktemp("bad_data")
    train_x, train_y, _, _ = digits
    y = train_y[:200].copy()
    y[17] = 10
    np.savez(folder / "label_out_of_range.npz", x=train_x[:200], y=y)
    np.savez(folder / "count_mismatch.npz", x=train_x[:100], y=train_y[:90])
    np.savez(folder / "unlabelled.npz", x=train_x[:100])
    return {p.stem: p for p in folder.iterdir()}


@pytest.fixture(scope="session")
def keras3_custom_layer_path(tmp_path_factory):
    """A Keras 3 Functional model with a custom layer ``my_scale`` (class ``TimesTwo``), which has no tf_keras twin."""
    import keras

    @keras.saving.register_keras_serializable(package="tflite_opt_tests")
    class TimesTwo(keras.layers.Layer):
        def call(self, inputs):
            return inputs * 2.0

    inputs = keras.Input((8, 8, 1), name="image")
    x = TimesTwo(name="my_scale")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    model = keras.Model(inputs, outputs, name="custom_cnn")
    path = tmp_path_factory.mktemp("k3_custom") / "custom.keras"
    model.save(path)
    return path


def build_keras3_subclassed():
    import keras

    @keras.saving.register_keras_serializable(package="tflite_opt_tests")
    class DigitsNet(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.flatten = keras.layers.Flatten()
            self.head = keras.layers.Dense(10)

        def call(self, inputs):
            return self.head(self.flatten(inputs))

    model = DigitsNet(name="digits_net")
    model(np.zeros((1, 8, 8, 1), np.float32))
    return model


@pytest.fixture(scope="session")
def keras3_subclassed_path(tmp_path_factory):
    """A subclassed Keras 3 model (class ``DigitsNet``) saved as .keras."""
    model = build_keras3_subclassed()
    path = tmp_path_factory.mktemp("k3_sub") / "subclassed.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def tf_keras_layernorm_h5(tmp_path_factory, digits):
    """A tf_keras CNN with a LayerNormalization layer ``ln`` (tfmot's default 8-bit scheme cannot quantize it)."""
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    train_x, train_y, _, _ = digits
    inputs = tf_keras.Input((8, 8, 1), name="image")
    x = tf_keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    x = tf_keras.layers.Flatten(name="flatten")(x)
    x = tf_keras.layers.Dense(32, name="dense")(x)
    x = tf_keras.layers.LayerNormalization(name="ln")(x)
    x = tf_keras.layers.ReLU(name="relu")(x)
    outputs = tf_keras.layers.Dense(10, activation="softmax", name="probs")(x)
    model = tf_keras.Model(inputs, outputs, name="ln_cnn")
    model.compile(optimizer=tf_keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(train_x, train_y, epochs=2, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("k2_ln") / "ln.h5"
    model.save(path)
    return path

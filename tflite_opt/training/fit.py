"""Fine-tuning shared by pruning, QAT and clustering: data checks, loss choice, tf.distribute, progress.

Every technique follows the same steps, in this order, so that a bad input fails before any training:

1. check the labelled data against the model (labels present, counts equal, class ids in range);
2. inside the ``tf.distribute`` strategy scope: a private tf_keras copy of the model (bridged from Keras 3, or
   cloned from tf_keras, so the caller's model is never changed and every variable lives in the scope), the
   technique's tfmot wrapping, and ``compile``;
3. ``fit`` with per-epoch progress (loss, validation accuracy) reported through the ``Progress`` object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from tflite_opt.errors import DataError, TrainingError
from tflite_opt.progress import ensure
from tflite_opt.representative_data import Dataset, split_validation
from tflite_opt.training.bridge import BridgeReport, check_bridgeable, is_keras3_model, to_tf_keras

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.progress import Progress

BRIDGE_CHECK_SAMPLES = 32


class LossChoice(str, Enum):
    """``--loss`` values. ``auto``: the model's compiled loss, else cross-entropy matching the output layer."""

    AUTO = "auto"
    SPARSE_LOGITS = "sparse-ce-logits"
    SPARSE_PROBABILITIES = "sparse-ce-probabilities"
    BINARY_LOGITS = "binary-ce-logits"
    BINARY_PROBABILITIES = "binary-ce-probabilities"


LOSS_NAMES = [choice.value for choice in LossChoice]


class Distribute(str, Enum):
    """``--distribute`` values: the default single-device strategy, or MirroredStrategy over local devices."""

    DEFAULT = "default"
    MIRRORED = "mirrored"


DISTRIBUTE_NAMES = [choice.value for choice in Distribute]


@dataclass
class FitConfig:
    """How to fine-tune.

    Attributes:
        epochs: passes over the training data.
        batch_size: global batch size (split across replicas under ``mirrored``).
        learning_rate: Adam's learning rate.
        val_split: share of the training data held out for validation when no validation set is given.
        loss: a ``LossChoice`` value.
        seed: seeds Python, NumPy and TensorFlow, and the validation split.
        distribute: a ``Distribute`` value.
    """

    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 1e-4
    val_split: float = 0.1
    loss: str = LossChoice.AUTO.value
    seed: int = 0
    distribute: str = Distribute.DEFAULT.value

    def validate(self) -> None:
        if self.epochs < 1:
            raise TrainingError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise TrainingError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise TrainingError(f"--learning-rate must be positive, got {self.learning_rate}")
        if self.loss not in LOSS_NAMES:
            raise TrainingError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSS_NAMES)}")
        if self.distribute not in DISTRIBUTE_NAMES:
            raise TrainingError(
                f"unknown strategy {self.distribute!r}; choose one of {', '.join(DISTRIBUTE_NAMES)}"
            )


@dataclass
class EpochStats:
    """Metrics at the end of one epoch (``None`` when there is no validation set)."""

    epoch: int
    loss: float
    accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None


@dataclass
class FitHistory:
    """What fine-tuning did.

    Attributes:
        epochs: per-epoch metrics.
        loss: the loss used, e.g. ``"sparse_categorical_crossentropy(from_logits=True)"``.
        loss_source: ``"compiled"`` (the model's own), ``"detected"`` (from the output activation) or ``"flag"``.
        train_samples: samples trained on.
        val_samples: validation samples (0 without validation).
        strategy: ``"default"``, or the tf.distribute strategy class name (``"MirroredStrategy"``).
        replicas: replicas in sync.
        bridge: the Keras 3 -> tf_keras bridge check, or ``None`` for a tf_keras model.
    """

    epochs: list[EpochStats] = field(default_factory=list)
    loss: str = ""
    loss_source: str = ""
    train_samples: int = 0
    val_samples: int = 0
    strategy: str = ""
    replicas: int = 1
    bridge: BridgeReport | None = None

    @property
    def final_val_accuracy(self) -> float | None:
        return self.epochs[-1].val_accuracy if self.epochs else None


@dataclass
class LossSpec:
    """A classification loss on class-id labels."""

    binary: bool
    from_logits: bool
    source: str

    def describe(self) -> str:
        name = "binary_crossentropy" if self.binary else "sparse_categorical_crossentropy"
        return f"{name}(from_logits={self.from_logits})"


# A technique turns the private tf_keras copy into the model to train; it gets the total number of steps.
WrapFn = Callable[[Any, int], Any]


@dataclass
class FineTuned:
    """A trained (still wrapped) tfmot model and how it got there."""

    model: Any
    history: FitHistory


def import_training_stack():
    """TensorFlow, tf_keras and tfmot, imported the way tfmot needs them."""
    from tflite_opt import tf_runtime

    tf = tf_runtime.import_tensorflow(legacy_keras=True)
    tf_keras = tf_runtime.import_tf_keras()
    tfmot = tf_runtime.import_tfmot()
    return tf, tf_keras, tfmot


def single_output(keras_model: Any) -> tuple[str, int]:
    """(name, size of the last axis) of the model's one output; training needs exactly one."""
    try:
        outputs = list(keras_model.outputs)
    except (AttributeError, ValueError) as exc:
        raise TrainingError(
            f"model '{getattr(keras_model, 'name', '?')}' (class {type(keras_model).__name__}) has no defined "
            "outputs: a subclassed model cannot be fine-tuned with tfmot; build it as a Sequential or "
            "Functional model"
        ) from exc
    if len(outputs) != 1:
        names = ", ".join(str(getattr(t, "name", "?")) for t in outputs)
        raise TrainingError(
            f"fine-tuning needs a model with one output (the class scores); '{keras_model.name}' has "
            f"{len(outputs)} ({names})"
        )
    shape = tuple(outputs[0].shape)
    if not shape or shape[-1] is None:
        raise TrainingError(f"the output of '{keras_model.name}' has shape {shape}; expected (batch, classes)")
    return str(getattr(outputs[0], "name", "output")), int(shape[-1])


def check_training_data(train: Dataset, num_classes: int, *, role: str = "training") -> None:
    """Reject unlabelled data, mismatched sample counts and out-of-range labels (before any training).

    Raises:
        DataError: naming the file and the offending sample.
    """
    if not train.has_labels:
        raise DataError(
            f"{role} data {train.source} has no labels; fine-tuning needs labels ('y' in a .npz, or "
            "DIR/<class>/* image folders)"
        )
    counts = {name: len(array) for name, array in train.inputs.items()}
    if len(set(counts.values())) > 1:
        raise DataError(f"{role} data {train.source}: inputs have different sample counts {counts}")
    if len(train.labels) != len(train):
        raise DataError(
            f"{role} data {train.source}: {len(train.labels)} labels for {len(train)} samples; the counts must match"
        )
    train.check_labels(max(num_classes, 2))


def split(train: Dataset, val: Dataset | None, config: FitConfig) -> tuple[Dataset, Dataset | None]:
    """The (train, validation) pair: ``val`` when given, else a seeded ``val_split`` share of ``train``."""
    if val is not None:
        return train, val
    return split_validation(train, config.val_split, seed=config.seed)


def make_strategy(name: str):
    """The tf.distribute strategy for ``--distribute`` (nothing home-made, SPEC §6)."""
    from tflite_opt import tf_runtime

    tf = tf_runtime.import_tensorflow()
    if name == Distribute.MIRRORED.value:
        try:
            return tf.distribute.MirroredStrategy()
        except Exception as exc:  # noqa: BLE001
            raise TrainingError(f"cannot start MirroredStrategy: {exc}") from exc
    return tf.distribute.get_strategy()


def trainable_copy(keras_model: Any, sample_inputs: dict[str, np.ndarray] | None) -> tuple[Any, BridgeReport | None]:
    """A private tf_keras copy of the model with the same weights (call inside the strategy scope).

    Keras 3 models go through the bridge (which checks its outputs); tf_keras models are cloned, so training
    never changes the caller's model.
    """
    _, tf_keras, _ = import_training_stack()
    if is_keras3_model(keras_model):
        return to_tf_keras(keras_model, sample_inputs)
    try:
        copy = tf_keras.models.clone_model(keras_model)
    except Exception as exc:  # noqa: BLE001 - clone_model refuses subclassed and unregistered custom layers
        raise TrainingError(
            f"cannot copy tf_keras model '{getattr(keras_model, 'name', '?')}' (class "
            f"{type(keras_model).__name__}) for fine-tuning: {_first_line(exc)}; tfmot needs a Sequential or "
            "Functional model"
        ) from exc
    copy.set_weights(keras_model.get_weights())
    return copy, None


def output_layer(model: Any):
    """The layer that produces a tf_keras model's (single) output, looking inside nested models."""
    layer = model.get_layer(model.output_names[0]) if getattr(model, "output_names", None) else model.layers[-1]
    while hasattr(layer, "output_names") and hasattr(layer, "get_layer"):
        layer = layer.get_layer(layer.output_names[0])
    return layer


def _activation_name(layer: Any) -> str:
    if type(layer).__name__ == "Softmax":
        return "softmax"
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", str(activation or "linear"))


def choose_loss(source_model: Any, base_model: Any, num_classes: int, choice: str, progress=None) -> LossSpec:
    """The loss to fine-tune with.

    ``auto``: the source model's compiled loss when it is a cross-entropy on class ids (categorical
    cross-entropy becomes its sparse twin, because labels are class ids), otherwise cross-entropy whose
    ``from_logits`` follows the output layer's activation (softmax/sigmoid -> probabilities).
    """
    choice = LossChoice(choice)
    if choice != LossChoice.AUTO:
        return LossSpec(
            binary=choice in (LossChoice.BINARY_LOGITS, LossChoice.BINARY_PROBABILITIES),
            from_logits=choice in (LossChoice.SPARSE_LOGITS, LossChoice.BINARY_LOGITS),
            source="flag",
        )
    compiled = compiled_loss(source_model)
    if compiled is not None:
        if compiled.binary == (num_classes == 1):
            return compiled
        ensure(progress).warn(
            f"the model's compiled loss {compiled.describe()} does not fit its {num_classes}-wide output; "
            "choosing the loss from the output layer (pass --loss to choose)"
        )
    activation = _activation_name(output_layer(base_model))
    if num_classes == 1:
        return LossSpec(binary=True, from_logits=activation != "sigmoid", source="detected")
    return LossSpec(binary=False, from_logits=activation != "softmax", source="detected")


_SPARSE = {"sparsecategoricalcrossentropy", "sparse_categorical_crossentropy", "categoricalcrossentropy",
           "categorical_crossentropy"}
_BINARY = {"binarycrossentropy", "binary_crossentropy"}


def compiled_loss(model: Any) -> LossSpec | None:
    """The model's compiled cross-entropy loss as a ``LossSpec`` (``None`` if uncompiled or another loss)."""
    loss = getattr(model, "loss", None)
    if isinstance(loss, dict) and len(loss) == 1:
        loss = next(iter(loss.values()))
    if isinstance(loss, (list, tuple)) and len(loss) == 1:
        loss = loss[0]
    if loss is None or isinstance(loss, (dict, list, tuple)):
        return None
    if isinstance(loss, str):
        name, from_logits = loss, False
    elif callable(loss) and hasattr(loss, "get_config"):
        name = type(loss).__name__
        try:
            from_logits = bool(loss.get_config().get("from_logits", False))
        except Exception:  # noqa: BLE001 - a custom loss with a broken get_config
            return None
        fn = getattr(loss, "fn", None)  # LossFunctionWrapper around a function
        if name == "LossFunctionWrapper" and fn is not None:
            name = getattr(fn, "__name__", name)
    else:
        name, from_logits = getattr(loss, "__name__", ""), False
    key = name.lower()
    if key in _SPARSE:
        return LossSpec(binary=False, from_logits=from_logits, source="compiled")
    if key in _BINARY:
        return LossSpec(binary=True, from_logits=from_logits, source="compiled")
    return None


def _keras_loss_and_metric(tf_keras, spec: LossSpec):
    if spec.binary:
        loss = tf_keras.losses.BinaryCrossentropy(from_logits=spec.from_logits)
        metric = tf_keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0 if spec.from_logits else 0.5)
    else:
        loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=spec.from_logits)
        metric = tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    return loss, metric


def model_feed(model: Any, dataset: Dataset):
    """The inputs of ``dataset`` arranged for ``model.fit``: one array, or a dict keyed by input name."""
    names = list(model.input_names)
    if len(names) == 1:
        if len(dataset.inputs) != 1 and names[0] not in dataset.inputs:
            raise DataError(f"{dataset.source} has no array for input '{names[0]}'")
        return dataset.inputs.get(names[0], next(iter(dataset.inputs.values())))
    missing = [name for name in names if name not in dataset.inputs]
    if missing:
        raise DataError(
            f"{dataset.source} has no array for input(s) {', '.join(missing)}; the model's inputs are "
            f"{', '.join(names)}"
        )
    return {name: dataset.inputs[name] for name in names}


def fine_tune(
    keras_model: Any,
    train: Dataset,
    *,
    wrap: WrapFn,
    config: FitConfig,
    val: Dataset | None = None,
    callbacks: Sequence[Any] = (),
    progress: "Progress | None" = None,
    description: str = "Fine-tuning",
) -> FineTuned:
    """Copy ``keras_model`` to tf_keras, wrap it with ``wrap``, compile and train it.

    Args:
        keras_model: a Keras 3 or tf_keras Sequential/Functional model (left unchanged).
        train: labelled training data keyed by input name.
        wrap: ``wrap(tf_keras_copy, total_steps) -> model_to_train``; runs inside the strategy scope.
        config: epochs, batch size, learning rate, validation, loss, seed, strategy.
        val: validation data; ``None`` splits ``config.val_split`` off ``train``.
        callbacks: extra Keras callbacks (e.g. ``UpdatePruningStep``).
        progress: where per-epoch loss and validation accuracy are reported.
        description: the progress bar's label.

    Raises:
        DataError: unlabelled data, mismatched counts, labels out of range (before any training).
        TrainingError: the model cannot be bridged/copied/wrapped, or training diverged.
    """
    progress = ensure(progress)
    config.validate()
    if is_keras3_model(keras_model):
        check_bridgeable(keras_model)  # name an unbridgeable layer before touching the data
    _, num_classes = single_output(keras_model)
    check_training_data(train, num_classes)
    if val is not None:
        check_training_data(val, num_classes, role="validation")
    train_set, val_set = split(train, val, config)

    _, tf_keras, _ = import_training_stack()
    tf_keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(config.distribute)
    steps_per_epoch = max(1, -(-len(train_set) // config.batch_size))
    total_steps = steps_per_epoch * config.epochs
    check_batch = {k: v[:BRIDGE_CHECK_SAMPLES] for k, v in train_set.inputs.items()}
    with strategy.scope():
        base, bridge = trainable_copy(keras_model, check_batch)
        if bridge is not None:
            progress.info(
                f"Bridged Keras 3 model to tf_keras ({bridge.layers} layers, outputs match within "
                f"{bridge.max_abs_diff:.1e} on {bridge.samples} samples)"
            )
        loss_spec = choose_loss(keras_model, base, num_classes, config.loss, progress)
        model = wrap(base, total_steps)
        loss, metric = _keras_loss_and_metric(tf_keras, loss_spec)
        model.compile(
            optimizer=tf_keras.optimizers.Adam(learning_rate=config.learning_rate), loss=loss, metrics=[metric]
        )
    history = FitHistory(
        loss=loss_spec.describe(), loss_source=loss_spec.source, train_samples=len(train_set),
        val_samples=0 if val_set is None else len(val_set), strategy=_strategy_name(strategy),
        replicas=int(strategy.num_replicas_in_sync), bridge=bridge,
    )
    progress.info(
        f"{description}: {history.train_samples} samples, {config.epochs} epoch(s), loss {history.loss} "
        f"({history.loss_source}), strategy {history.strategy} ({history.replicas} replica(s))"
    )
    validation = None if val_set is None else (model_feed(model, val_set), val_set.labels)
    with progress.task(description, total=total_steps) as task:
        reporter = epoch_progress_callback(tf_keras, progress, task, config.epochs, history)
        try:
            model.fit(
                model_feed(model, train_set), train_set.labels,
                batch_size=config.batch_size, epochs=config.epochs, validation_data=validation,
                shuffle=True, verbose=0, callbacks=[*callbacks, reporter, tf_keras.callbacks.TerminateOnNaN()],
            )
        except (DataError, TrainingError):
            raise
        except Exception as exc:  # noqa: BLE001 - TF raises many types from inside fit
            raise TrainingError(f"{description} failed: {_first_line(exc)}") from exc
    if not history.epochs or not np.isfinite(history.epochs[-1].loss):
        raise TrainingError(
            f"{description} diverged (loss is NaN or Inf); lower --learning-rate or check the data's scale"
        )
    return FineTuned(model=model, history=history)


def _strategy_name(strategy) -> str:
    name = type(strategy).__name__
    return "default" if name.startswith("_Default") else name


def epoch_progress_callback(tf_keras, progress, task, epochs: int, history: FitHistory):
    """A Keras callback (of the given Keras module) that advances ``task`` per batch, records each epoch in
    ``history`` and reports "epoch i/N: loss ..., val accuracy ..." through ``progress``."""
    def number(logs, key):
        value = logs.get(key)
        return None if value is None else float(value)

    class ReportProgress(tf_keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            task.advance()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            stats = EpochStats(
                epoch=epoch + 1, loss=number(logs, "loss") if "loss" in logs else float("nan"),
                accuracy=number(logs, "accuracy"), val_loss=number(logs, "val_loss"),
                val_accuracy=number(logs, "val_accuracy"),
            )
            history.epochs.append(stats)
            line = f"epoch {stats.epoch}/{epochs}: loss {stats.loss:.4f}"
            if stats.accuracy is not None:
                line += f", accuracy {stats.accuracy:.4f}"
            if stats.val_accuracy is not None:
                line += f", val accuracy {stats.val_accuracy:.4f}"
            task.update(description=line)
            progress.info(line)

    return ReportProgress()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]

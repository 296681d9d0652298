"""Fine-tuning shared by pruning, QAT and clustering: data checks, loss choice, tf.distribute, progress.

``run_fit`` (``fit`` with progress, per-epoch history, one-line errors and divergence check) and ``strategy_name``
are shared with distillation, which trains the student in its own Keras on its own loss.

Every technique follows the same steps, in this order, so that a bad input fails before any training:

1. check the labelled data against the model (labels present, counts equal, class ids in range);
2. inside the ``tf.distribute`` strategy scope: a private tf_keras copy of the model (bridged from Keras 3, or
   cloned from tf_keras, so the caller's model is never changed and every variable lives in the scope), the
   technique's tfmot wrapping, and ``compile``;
3. ``fit`` with per-epoch progress (loss, validation accuracy) reported through the ``Progress`` object.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np

from tflite_opt.errors import DataError, TfliteOptError, TrainingError, first_line
from tflite_opt.progress import ensure
from tflite_opt.representative_data import Dataset, split_validation
from tflite_opt.training import distributed
from tflite_opt.training.bridge import BridgeReport, check_bridgeable, is_keras3_model, to_tf_keras
from tflite_opt.training.loss_choice import LOSS_NAMES, LossChoice, choose_loss, keras_loss_and_metric

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.progress import Progress

BRIDGE_CHECK_SAMPLES = 32


class Distribute(str, Enum):
    """``--distribute`` values: the default single-device strategy, MirroredStrategy over local devices, or
    MultiWorkerMirroredStrategy over the cluster of ``TF_CONFIG``."""

    DEFAULT = "default"
    MIRRORED = "mirrored"
    MULTI_WORKER = "multi-worker"


DISTRIBUTE_NAMES = [choice.value for choice in Distribute]


@dataclass
class FitConfig:
    """How to fine-tune.

    Attributes:
        epochs: passes over the training data.
        batch_size: global batch size: every optimizer step sees this many samples, split across the replicas
            (local GPUs under ``mirrored``, all workers' under ``multi-worker``).
        learning_rate: Adam's learning rate.
        val_split: share of the training data held out for validation when no validation set is given.
        loss: a ``LossChoice`` value.
        seed: seeds Python, NumPy and TensorFlow, and the validation split.
        distribute: a ``Distribute`` value.
        distribute_timeout: ``multi-worker``: seconds a collective may wait for the other workers (0: forever).
    """

    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 1e-4
    val_split: float = 0.1
    loss: str = LossChoice.AUTO.value
    seed: int = 0
    distribute: str = Distribute.DEFAULT.value
    distribute_timeout: float = distributed.DEFAULT_TIMEOUT_SECONDS

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
            raise TrainingError(f"unknown strategy {self.distribute!r}; choose one of {', '.join(DISTRIBUTE_NAMES)}")
        if not self.distribute_timeout >= 0:
            raise TrainingError(f"--distribute-timeout must be 0 or more seconds, got {self.distribute_timeout}")


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


# A technique turns the private tf_keras copy into the model to train; it gets the total number of steps.
WrapFn = Callable[[Any, int], Any]


@dataclass
class FineTuned:
    """A trained (still wrapped) tfmot model and how it got there."""

    model: Any
    history: FitHistory


def import_training_stack():
    """TensorFlow, tf_keras and tfmot, imported the way tfmot needs them."""
    from tflite_opt.models import tf_runtime

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


def make_strategy(name: str, timeout_seconds: float = distributed.DEFAULT_TIMEOUT_SECONDS):
    """The tf.distribute strategy for ``--distribute`` (nothing home-made, SPEC §6).

    ``multi-worker`` returns the process's one ``MultiWorkerMirroredStrategy`` (``distributed.start_multi_worker``,
    which must have run before TensorFlow did anything else).
    """
    from tflite_opt.models import tf_runtime

    if name == Distribute.MULTI_WORKER.value:
        return distributed.start_multi_worker(timeout_seconds)
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
            f"{type(keras_model).__name__}) for fine-tuning: {first_line(exc)}; tfmot needs a Sequential or "
            "Functional model"
        ) from exc
    copy.set_weights(keras_model.get_weights())
    return copy, None


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
    num_classes, train_set, val_set = _checked_data(keras_model, train, val, config)
    _, tf_keras, _ = import_training_stack()
    tf_keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(config.distribute, config.distribute_timeout)
    total_steps = steps_per_epoch(len(train_set), config.batch_size) * config.epochs
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
        loss, metric = keras_loss_and_metric(tf_keras, loss_spec)
        model.compile(
            optimizer=tf_keras.optimizers.Adam(learning_rate=config.learning_rate), loss=loss, metrics=[metric]
        )
    history = new_history(
        strategy,
        loss=loss_spec.describe(),
        loss_source=loss_spec.source,
        train_samples=len(train_set),
        val_samples=0 if val_set is None else len(val_set),
        bridge=bridge,
    )
    progress.info(
        f"{description}: {history.train_samples} samples, {config.epochs} epoch(s), loss {history.loss} "
        f"({history.loss_source}), strategy {history.strategy} ({history.replicas} replica(s))"
    )
    validation = None
    if val_set is not None:
        validation = batches(model_feed(model, val_set), val_set.labels, batch_size=config.batch_size)
    run_fit(
        tf_keras,
        model,
        batches(model_feed(model, train_set), train_set.labels, batch_size=config.batch_size, seed=config.seed),
        history=history,
        epochs=config.epochs,
        total_steps=total_steps,
        description=description,
        progress=progress,
        callbacks=callbacks,
        validation_data=validation,
    )
    return FineTuned(model=model, history=history)


def batches(inputs: Any, labels: np.ndarray, *, batch_size: int, seed: int | None = None, repeat: bool = False):
    """``(inputs, labels)`` as a ``tf.data`` stream of global batches, reshuffled each epoch when ``seed`` is given.

    The same stream under every strategy: a multi-worker run shards it by data (each replica takes its share of
    every global batch, the order seeded identically on every worker), so its steps see the same samples as a
    single-process run with the same ``--batch-size`` and ``--seed``.
    """
    from tflite_opt.models import tf_runtime

    tf = tf_runtime.import_tensorflow()
    data = tf.data.Dataset.from_tensor_slices((inputs, labels))
    if seed is not None:
        data = data.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        data = data.repeat()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.batch(batch_size).with_options(options).prefetch(2)


def _checked_data(
    keras_model: Any, train: Dataset, val: Dataset | None, config: FitConfig
) -> tuple[int, Dataset, Dataset | None]:
    """Check the settings, the model and the data before any training: (classes, train split, validation split)."""
    config.validate()
    if is_keras3_model(keras_model):
        check_bridgeable(keras_model)  # name an unbridgeable layer before touching the data
    _, num_classes = single_output(keras_model)
    check_training_data(train, num_classes)
    if val is not None:
        check_training_data(val, num_classes, role="validation")
    train_set, val_set = split(train, val, config)
    return num_classes, train_set, val_set


def steps_per_epoch(samples: int, batch_size: int) -> int:
    """Optimizer steps in one pass over ``samples`` (the last batch may be partial; at least one)."""
    return max(1, -(-samples // batch_size))


def strategy_name(strategy) -> str:
    """``MirroredStrategy``, ``MultiWorkerMirroredStrategy`` (whose class is ``CollectiveAllReduceStrategy``), or
    ``default`` (the ``--distribute`` value) for TensorFlow's private default strategy."""
    name = type(strategy).__name__
    if name == "CollectiveAllReduceStrategy":
        return "MultiWorkerMirroredStrategy"
    return "default" if name.startswith("_Default") else name


def new_history(
    strategy, *, loss: str, loss_source: str, train_samples: int, val_samples: int, bridge: BridgeReport | None = None
) -> FitHistory:
    """An empty ``FitHistory`` for one training run under ``strategy`` (epochs are appended while it trains)."""
    return FitHistory(
        loss=loss,
        loss_source=loss_source,
        train_samples=train_samples,
        val_samples=val_samples,
        strategy=strategy_name(strategy),
        replicas=int(strategy.num_replicas_in_sync),
        bridge=bridge,
    )


DIVERGED_HINT = "lower --learning-rate or check the data's scale"


def run_fit(
    keras,
    model: Any,
    inputs: Any,
    targets: Any = None,
    *,
    history: FitHistory,
    epochs: int,
    total_steps: int,
    description: str,
    progress: "Progress",
    callbacks: Sequence[Any] = (),
    diverged_hint: str = DIVERGED_HINT,
    **fit_options: Any,
) -> None:
    """``model.fit`` (compiled, in its strategy) with a progress bar, per-epoch lines and one-line errors.

    Every fine-tuning (tfmot techniques and distillation) trains through this: the bar advances per batch, each
    epoch is appended to ``history`` and reported, a NaN loss stops training and is reported as divergence.

    Args:
        keras: the Keras module the model belongs to (tf_keras or Keras 3).
        model: the compiled model.
        inputs: ``fit``'s ``x`` (an array, a dict of arrays, or a ``tf.data.Dataset`` of (inputs, targets)).
        targets: ``fit``'s ``y`` (``None`` with a dataset).
        history: where the epochs are recorded.
        epochs: passes to make.
        total_steps: optimizer steps over all epochs (the progress bar's length).
        description: the progress bar's label and the start of error messages.
        progress: progress reporter.
        callbacks: extra Keras callbacks, run before the progress reporter.
        diverged_hint: how to fix a diverged run.
        **fit_options: more ``fit`` arguments (``batch_size``, ``validation_data``, ``steps_per_epoch`` ...).

    Raises:
        TrainingError: ``fit`` failed (its first line), or the loss is NaN or Inf after training.
    """
    with progress.task(description, total=total_steps) as task:
        reporter = epoch_progress_callback(keras, progress, task, epochs, history)
        try:
            model.fit(
                inputs,
                targets,
                epochs=epochs,
                verbose=0,
                callbacks=[*callbacks, reporter, keras.callbacks.TerminateOnNaN()],
                **fit_options,
            )
        except TfliteOptError:
            raise
        except Exception as exc:  # noqa: BLE001 - TF raises many types from inside fit
            raise TrainingError(f"{description} failed: {distributed.failure_text(exc) or first_line(exc)}") from exc
    if not history.epochs or not np.isfinite(history.epochs[-1].loss):
        raise TrainingError(f"{description} diverged (loss is NaN or Inf); {diverged_hint}")


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
                epoch=epoch + 1,
                loss=number(logs, "loss") if "loss" in logs else float("nan"),
                accuracy=number(logs, "accuracy"),
                val_loss=number(logs, "val_loss"),
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

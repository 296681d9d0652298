"""Training one student (the distilled one, or the scratch baseline) on packed ``[label, teacher logits]`` targets.

The student is trained in its own Keras (Keras 3 or tf_keras), inside the ``tf.distribute`` strategy, from a copy
of the user's model with the given initial weights; ``training.fit.run_fit`` runs ``fit`` with progress and
one-line errors, as for the tfmot techniques. The trained model is handed back outside the strategy, compiled
with the plain cross-entropy that fits its output (so later ``prune``/``qat`` runs pick the right loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tflite_opt.errors import TrainingError, first_line
from tflite_opt.representative_data import Dataset
from tflite_opt.specs import TensorSpec
from tflite_opt.training.distillation.loss import describe_loss, make_loss
from tflite_opt.training.fit import FitConfig, FitHistory, batches, new_history, run_fit

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.models import LoadedModel
    from tflite_opt.progress import Progress

DIVERGED_HINT = "lower --learning-rate or --temperature"
# Validation runs ``predict`` in batches this many times the training batch.
_VALIDATION_BATCH_FACTOR = 8


@dataclass
class TrainedStudent:
    """One trained student.

    Attributes:
        name: ``distilled`` or ``scratch``.
        model: the trained model in the student's own Keras (Keras 3 or tf_keras), outside any distribution
            strategy, compiled with plain cross-entropy: ready for ``save`` and conversion.
        history: per-epoch loss and validation accuracy (``training.fit.FitHistory``).
        val_accuracy: final top-1 accuracy on the labelled validation samples (``None`` without them).
        val_agreement: final share of validation samples where the student's top-1 equals the teacher's.
        loss: the loss trained on, described.
    """

    name: str
    model: Any
    history: FitHistory
    val_accuracy: float | None
    val_agreement: float | None
    loss: str


@dataclass
class StudentJob:
    """One training run's data, ready for ``tf.data``."""

    name: str
    description: str
    inputs: Any  # array or dict of arrays
    targets: np.ndarray  # [label, teacher logits...]
    alpha: float


@dataclass
class StudentTraining:
    """What every run of one ``distill`` call shares.

    Attributes:
        keras: the student's Keras module (Keras 3 or tf_keras).
        student: the loaded student (its model is copied, never trained).
        initial_weights: the weights every run starts from.
        temperature: the softening temperature ``T``.
        fit: epochs, batch size, learning rate and seed.
        steps_per_epoch: optimizer steps per epoch (the same for every run).
        student_probabilities: the student outputs probabilities (the loss takes their logs).
        validation: ``(student inputs, labels or None, teacher logits)`` of the validation samples, or ``None``.
        strategy: the ``tf.distribute`` strategy.
        progress: progress reporter.
    """

    keras: Any
    student: "LoadedModel"
    initial_weights: list[np.ndarray]
    temperature: float
    fit: FitConfig
    steps_per_epoch: int
    student_probabilities: bool
    validation: tuple[Any, np.ndarray | None, np.ndarray] | None
    strategy: Any
    progress: "Progress"


def student_feed(dataset: Dataset, student_inputs: Sequence[TensorSpec]):
    """Inputs for ``fit``/``predict``: the array of a one-input model, else a dict keyed by input name."""
    if len(student_inputs) == 1:
        return dataset.inputs[student_inputs[0].name]
    return {spec.name: dataset.inputs[spec.name] for spec in student_inputs}


def top1_agreement(logits_a: np.ndarray, logits_b: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits_a, axis=1) == np.argmax(logits_b, axis=1)))


def top1_accuracy(scores: np.ndarray, labels: np.ndarray | None) -> float | None:
    if labels is None or not len(labels):
        return None
    return float(np.mean(np.argmax(scores, axis=1) == labels))


def keras_of(student: "LoadedModel"):
    """The Keras module the student belongs to: Keras 3 or tf_keras."""
    from tflite_opt.models import ModelKind, tf_runtime

    return tf_runtime.import_keras3() if student.kind == ModelKind.KERAS3 else tf_runtime.import_tf_keras()


def _copy(keras, model: Any, weights: list[np.ndarray]) -> Any:
    try:
        copy = keras.models.clone_model(model)
    except Exception as exc:  # noqa: BLE001 - clone_model refuses subclassed models and unknown custom layers
        raise TrainingError(
            f"cannot copy the student '{getattr(model, 'name', '?')}' (class {type(model).__name__}) for "
            f"training: {first_line(exc)}; save it as a Sequential or Functional model"
        ) from exc
    copy.set_weights(weights)
    return copy


def _export_copy(keras, source: Any, trained: Any, student_probabilities: bool) -> Any:
    """The trained student outside the strategy, compiled with the plain cross-entropy that fits its output.

    Cloned from the user's model, not the trained one: Keras 3 clones the compile settings too, and the trained
    model's are the distillation loss, which a saved file could not restore.
    """
    model = _copy(keras, source, trained.get_weights())
    model.compile(
        optimizer=keras.optimizers.Adam(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=not student_probabilities),
        metrics=["accuracy"],
    )
    return model


def _validation_callback(keras, feed_val, labels, teacher_val, batch_size: int, record: list):
    class Validate(keras.callbacks.Callback):
        """Writes ``val_accuracy`` into the epoch logs before the progress reporter reads them."""

        def on_epoch_end(self, epoch, logs=None):
            scores = np.asarray(self.model.predict(feed_val, batch_size=batch_size, verbose=0))
            scores = scores.reshape(len(scores), -1)
            accuracy = top1_accuracy(scores, labels)
            agreement = top1_agreement(scores, teacher_val)
            if logs is not None:
                if accuracy is not None:
                    logs["val_accuracy"] = accuracy
                logs["val_agreement"] = agreement
            record.append((accuracy, agreement))

    return Validate()


def _shuffled_batches(job: StudentJob, fit: FitConfig):
    """The job's samples as an endless, seeded, reshuffled stream of batches (``fit`` counts the steps)."""
    return batches(job.inputs, job.targets, batch_size=fit.batch_size, seed=fit.seed, repeat=True)


def _compiled_copy(training: StudentTraining, alpha: float) -> Any:
    """A copy of the student with the initial weights, compiled on the distillation loss inside the strategy."""
    keras = training.keras
    loss_fn = make_loss(
        alpha=alpha, temperature=training.temperature, student_probabilities=training.student_probabilities
    )
    with training.strategy.scope():
        model = _copy(keras, training.student.keras_model, training.initial_weights)
        # metrics=[] rather than None: Keras 3's clone_model copies the user's compile settings, and only a
        # non-None value replaces their metrics (an "accuracy" on the packed targets would be meaningless).
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=training.fit.learning_rate), loss=loss_fn, metrics=[]
        )
    return model


def train_student(training: StudentTraining, job: StudentJob) -> TrainedStudent:
    """Train a fresh copy of the student on ``job`` and return it outside the strategy.

    Raises:
        TrainingError: the student cannot be copied, ``fit`` failed, or the loss diverged.
    """
    keras, fit, progress, validation = training.keras, training.fit, training.progress, training.validation
    keras.utils.set_random_seed(fit.seed)
    model = _compiled_copy(training, job.alpha)
    data = _shuffled_batches(job, fit)
    history = new_history(
        training.strategy,
        loss=describe_loss(job.alpha, training.temperature),
        loss_source="flag",
        train_samples=len(job.targets),
        val_samples=0 if validation is None else len(validation[2]),
    )
    record: list[tuple[float | None, float]] = []
    callbacks = []
    if validation is not None:
        callbacks.append(_validation_callback(keras, *validation, fit.batch_size * _VALIDATION_BATCH_FACTOR, record))
    progress.info(
        f"{job.description}: {len(job.targets)} samples, {fit.epochs} epoch(s) of {training.steps_per_epoch} steps, "
        f"loss {history.loss}, {history.strategy} x{history.replicas}"
    )
    run_fit(
        keras,
        model,
        data,
        history=history,
        epochs=fit.epochs,
        total_steps=training.steps_per_epoch * fit.epochs,
        description=job.description,
        progress=progress,
        callbacks=callbacks,
        diverged_hint=DIVERGED_HINT,
        steps_per_epoch=training.steps_per_epoch,
    )
    accuracy, agreement = record[-1] if record else (None, None)
    return TrainedStudent(
        name=job.name,
        model=_export_copy(keras, training.student.keras_model, model, training.student_probabilities),
        history=history,
        val_accuracy=accuracy,
        val_agreement=agreement,
        loss=history.loss,
    )

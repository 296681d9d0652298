"""``distill``: check the pair and the data, run the teacher once, then train the distilled student (and the
scratch baseline) from the same initial weights, seed and number of steps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from tflite_opt.errors import DataError, TrainingError, first_line
from tflite_opt.progress import ensure
from tflite_opt.representative_data import Dataset
from tflite_opt.training.distillation.loss import (
    OUTPUT_KIND_NAMES,
    OutputKind,
    looks_like_probabilities,
    packed_targets,
)
from tflite_opt.training.distillation.pairing import ModelPair, check_pair, format_shape, teacher_logits
from tflite_opt.training.distillation.student import (
    StudentJob,
    StudentTraining,
    TrainedStudent,
    keras_of,
    student_feed,
    top1_accuracy,
    train_student,
)
from tflite_opt.training.fit import FitConfig, make_strategy, split, steps_per_epoch

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.models import LoadedModel
    from tflite_opt.progress import Progress

DEFAULT_TEMPERATURE = 4.0
DEFAULT_ALPHA = 0.1
DEFAULT_EPOCHS = 10
DEFAULT_BATCH_SIZE = 32
DEFAULT_LEARNING_RATE = 1e-3
_DETECTION_SAMPLES = 64

TEACHER_NAME = "teacher"
SCRATCH_NAME = "scratch"
DISTILLED_NAME = "distilled"


@dataclass
class DistillConfig:
    """How to distill.

    Attributes:
        temperature: softening temperature ``T`` (> 0) applied to both teacher and student logits.
        alpha: weight of the hard-label cross-entropy, in [0, 1]; ``1 - alpha`` weighs the soft-target term.
            ``0`` learns from the teacher alone and needs no labels.
        teacher_outputs: ``auto`` (detect probabilities from the outputs), ``logits`` or ``probabilities``.
        fit: epochs, batch size, learning rate, validation split, seed and ``tf.distribute`` strategy
            (``FitConfig.loss`` is not used: the loss is the distillation loss).
    """

    temperature: float = DEFAULT_TEMPERATURE
    alpha: float = DEFAULT_ALPHA
    teacher_outputs: str = OutputKind.AUTO.value
    fit: FitConfig = field(
        default_factory=lambda: FitConfig(
            epochs=DEFAULT_EPOCHS, batch_size=DEFAULT_BATCH_SIZE, learning_rate=DEFAULT_LEARNING_RATE
        )
    )

    def validate(self) -> None:
        """Raise ``TrainingError`` for an out-of-range setting."""
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise TrainingError(f"--temperature must be positive, got {self.temperature}")
        if not 0 <= self.alpha <= 1:
            raise TrainingError(f"--alpha must be between 0 and 1, got {self.alpha}")
        if self.teacher_outputs not in OUTPUT_KIND_NAMES:
            raise TrainingError(
                f"unknown teacher output kind {self.teacher_outputs!r}; choose one of {', '.join(OUTPUT_KIND_NAMES)}"
            )
        self.fit.validate()


@dataclass
class DistillResult:
    """What ``distill`` produced.

    Attributes:
        student: the distilled student.
        baseline: the scratch student (``baseline=True``), else ``None``.
        pair: how teacher and student line up, and their parameter counts.
        teacher_output_kind: ``logits`` or ``probabilities`` (then their logs were used).
        student_output_kind: ``logits`` or ``probabilities`` (then the loss takes their logs).
        teacher_val_accuracy: the teacher's top-1 accuracy on the labelled validation samples.
        train_samples: samples trained on (labelled training split plus transfer samples).
        labelled_samples: training samples with a label.
        transfer_samples: transfer samples (soft targets only).
        val: the validation samples (keyed by student input name), or ``None``.
        steps: optimizer steps made by each student.
    """

    student: TrainedStudent
    baseline: TrainedStudent | None
    pair: ModelPair
    teacher_output_kind: str
    student_output_kind: str
    teacher_val_accuracy: float | None
    train_samples: int
    labelled_samples: int
    transfer_samples: int
    val: Dataset | None
    steps: int


@dataclass
class _SoftTargets:
    """The teacher's logits for each sample set (``None`` for a set that was not given)."""

    train: np.ndarray
    transfer: np.ndarray | None
    val: np.ndarray | None
    kind: str


def distill(
    teacher: "LoadedModel",
    student: "LoadedModel",
    train: Dataset,
    *,
    config: DistillConfig | None = None,
    transfer: Dataset | None = None,
    val: Dataset | None = None,
    baseline: bool = False,
    progress: "Progress | None" = None,
) -> DistillResult:
    """Distill ``teacher`` into ``student``.

    Args:
        teacher: any loaded model (Keras 3, tf_keras, SavedModel); only runs inference.
        student: a loaded Keras 3 or tf_keras model (untrained or pre-trained); left unchanged.
        train: training samples keyed by the student's input names; labels required when ``alpha > 0`` or
            ``baseline``.
        config: temperature, alpha, teacher output kind, and the fit settings.
        transfer: extra samples (keyed by the student's input names) that add soft-target terms only; their
            labels, if any, are not used.
        val: validation samples; ``None`` splits ``config.fit.val_split`` off ``train`` (seeded).
        baseline: also train the scratch student (same initial weights, seed and steps; cross-entropy on the
            labelled samples only).
        progress: where per-epoch loss and validation accuracy are reported.

    Returns:
        ``DistillResult`` with the trained student(s).

    Raises:
        TrainingError: the models do not fit together, or training failed (before training where possible).
        DataError: missing labels, labels outside the classes, too few samples to split.
    """
    config = config or DistillConfig()
    progress = ensure(progress)
    config.validate()
    _check_strategy(student, config.fit)
    pair = check_pair(teacher, student)
    _check_labels(train, val, pair, alpha=config.alpha, baseline=baseline)
    fit = config.fit
    train_set, val_set = split(train, val, fit)
    names = [spec.name for spec in student.inputs]

    progress.info(_pair_summary(teacher, student, pair))
    soft = _run_teacher(teacher, pair, train_set, transfer, val_set, config.teacher_outputs, progress)
    teacher_val_accuracy = None if val_set is None else top1_accuracy(soft.val, val_set.labels)

    distill_inputs, distill_targets = _distill_samples(train_set, transfer, names, soft, config.alpha)
    training = _student_training(student, config, train_set, val_set, soft, len(distill_targets), progress)
    distilled = train_student(
        training,
        StudentJob(DISTILLED_NAME, "Distilling", _fit_inputs(distill_inputs, names), distill_targets, config.alpha),
    )
    scratch = train_student(training, _scratch_job(train_set, names, soft)) if baseline else None
    return DistillResult(
        student=distilled,
        baseline=scratch,
        pair=pair,
        teacher_output_kind=soft.kind,
        student_output_kind=(
            OutputKind.PROBABILITIES.value if training.student_probabilities else OutputKind.LOGITS.value
        ),
        teacher_val_accuracy=teacher_val_accuracy,
        train_samples=len(distill_targets),
        labelled_samples=len(train_set) if train_set.has_labels else 0,
        transfer_samples=0 if transfer is None else len(transfer),
        val=val_set,
        steps=training.steps_per_epoch * fit.epochs,
    )


def _student_training(
    student: "LoadedModel",
    config: DistillConfig,
    train_set: Dataset,
    val_set: Dataset | None,
    soft: _SoftTargets,
    samples: int,
    progress: "Progress",
) -> StudentTraining:
    """What both student runs share: the student's Keras and output kind, its initial weights, the steps per epoch
    over ``samples``, the validation feed and the ``tf.distribute`` strategy."""
    student_inputs = list(student.inputs)
    keras = keras_of(student)
    student_probabilities = _outputs_probabilities(student, train_set, student_inputs, progress)
    initial_weights = student.keras_model.get_weights()
    validation = None if val_set is None else (student_feed(val_set, student_inputs), val_set.labels, soft.val)
    return StudentTraining(
        keras=keras,
        student=student,
        initial_weights=initial_weights,
        temperature=config.temperature,
        fit=config.fit,
        steps_per_epoch=steps_per_epoch(samples, config.fit.batch_size),
        student_probabilities=student_probabilities,
        validation=validation,
        strategy=make_strategy(config.fit.distribute, config.fit.distribute_timeout),
        progress=progress,
    )


def _check_strategy(student: "LoadedModel", fit: FitConfig) -> None:
    """Keras 3's ``fit`` does not run under MultiWorkerMirroredStrategy (keras-team/keras#20585); say so first."""
    from tflite_opt.models import ModelKind
    from tflite_opt.training.fit import Distribute

    if fit.distribute == Distribute.MULTI_WORKER.value and student.kind == ModelKind.KERAS3:
        raise TrainingError(
            f"the student {student.path} is a Keras 3 model, and Keras 3 cannot train under "
            "MultiWorkerMirroredStrategy (keras-team/keras#20585); save the student with tf_keras (.h5 or a "
            "tf_keras .keras) for --distribute multi-worker"
        )


def _scratch_job(train_set: Dataset, names: Sequence[str], soft: _SoftTargets) -> StudentJob:
    """The baseline run: the labelled training samples alone, on plain cross-entropy (alpha 1)."""
    targets = packed_targets(train_set.labels, soft.train, len(train_set))
    return StudentJob(SCRATCH_NAME, "Training the scratch baseline", _fit_inputs(train_set.inputs, names), targets, 1.0)


def _pair_summary(teacher: "LoadedModel", student: "LoadedModel", pair: ModelPair) -> str:
    """The "Teacher: ..., student: ... (4.0x fewer); outputs (None, 10)" line that starts a run."""
    return (
        f"Teacher: {teacher.kind.value}, {pair.teacher_parameters:,} parameters; student: {student.kind.value}, "
        f"{pair.student_parameters:,} parameters ({pair.parameter_ratio:.1f}x fewer); outputs "
        f"{format_shape(pair.output_shape)}"
    )


def _check_labels(train: Dataset, val: Dataset | None, pair: ModelPair, *, alpha: float, baseline: bool) -> None:
    """Labels present when the loss needs them, and every label one of the teacher's classes (before training)."""
    if (alpha > 0 or baseline) and not train.has_labels:
        why = (
            "--baseline trains a student on labels alone"
            if baseline and alpha == 0
            else (f"--alpha {alpha:g} weighs a cross-entropy with the labels")
        )
        raise DataError(
            f"training data {train.source} has no labels, but {why}; pass labelled data ('y' in a .npz, or "
            "DIR/<class>/* image folders), or --alpha 0 (without --baseline) to learn from the teacher alone"
        )
    for dataset, role in ((train, "training"), (val, "validation")):
        if dataset is not None:
            try:
                dataset.check_labels(pair.num_classes)
            except DataError as exc:
                raise DataError(f"{role} data: {exc}") from exc


def _run_teacher(
    teacher: "LoadedModel",
    pair: ModelPair,
    train_set: Dataset,
    transfer: Dataset | None,
    val_set: Dataset | None,
    teacher_outputs: str,
    progress: "Progress",
) -> _SoftTargets:
    """The teacher's logits for the training, transfer and validation samples (the kind detected on training)."""
    with progress.task("Running the teacher"):
        train_logits, kind = teacher_logits(teacher, train_set, pair, teacher_outputs)
        transfer_logits = None
        if transfer is not None:
            transfer_logits, _ = teacher_logits(teacher, transfer, pair, kind)
        val_logits = None if val_set is None else teacher_logits(teacher, val_set, pair, kind)[0]
    if kind == OutputKind.PROBABILITIES.value:
        progress.info("The teacher outputs probabilities (softmax): distilling from their logs as logits")
    return _SoftTargets(train=train_logits, transfer=transfer_logits, val=val_logits, kind=kind)


def _outputs_probabilities(
    student: "LoadedModel", train_set: Dataset, student_inputs: Sequence, progress: "Progress"
) -> bool:
    """Whether the (untrained) student's outputs on a few training samples are probability distributions."""
    sample = student_feed(train_set.take(_DETECTION_SAMPLES), student_inputs)
    try:
        outputs = np.asarray(student.keras_model.predict(sample, verbose=0))
    except Exception as exc:  # noqa: BLE001
        raise TrainingError(f"the student {student.path} failed on {train_set.source}: {first_line(exc)}") from exc
    probabilities = looks_like_probabilities(outputs.reshape(len(outputs), -1))
    if probabilities:
        progress.info("The student outputs probabilities (softmax): the loss uses their logs as logits")
    return probabilities


def _distill_samples(
    train_set: Dataset, transfer: Dataset | None, names: Sequence[str], soft: _SoftTargets, alpha: float
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Inputs and packed targets of the distillation run: the training samples (their labels only when
    ``alpha > 0``), then the transfer samples (soft targets only)."""
    train_targets = packed_targets(train_set.labels if alpha > 0 else None, soft.train, len(train_set))
    if transfer is None:
        return {name: train_set.inputs[name] for name in names}, train_targets
    inputs = {name: np.concatenate([train_set.inputs[name], transfer.inputs[name]]) for name in names}
    return inputs, np.concatenate([train_targets, packed_targets(None, soft.transfer, len(transfer))])


def _fit_inputs(arrays: Mapping[str, np.ndarray], names: Sequence[str]):
    """``fit``'s inputs: the one array of a one-input student, else a dict keyed by input name."""
    if len(names) == 1:
        return arrays[names[0]]
    return {name: arrays[name] for name in names}

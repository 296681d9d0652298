"""Knowledge distillation (Hinton, Vinyals & Dean 2015): train a small student on a large teacher's soft targets.

The student is trained on, per sample::

    alpha * CE(label, softmax(s))  +  (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))

where ``t`` and ``s`` are the teacher's and the student's logits and ``T`` the temperature. The ``T^2`` factor
keeps the soft-target gradients at the same scale whatever the temperature (section 2 of the paper). Samples
without a label (``--alpha 0`` on unlabelled data, or the extra *transfer* samples) contribute only the second
term.

How the pieces fit:

* The teacher (any kind ``models.load_model`` reads: Keras 3, tf_keras, SavedModel) only runs inference, once,
  before training: its logits for every training, transfer and validation sample travel with the labels as the
  training targets, so the training step never calls the teacher and ``fit`` stays a plain Keras ``fit``.
* A teacher (or student) whose output is a probability distribution (softmax last layer) is detected from its
  outputs (every row non-negative and summing to 1) and its logs are used as logits: ``log softmax(z)`` equals
  ``z`` up to a per-sample constant, which softmax ignores, so the soft targets are exactly the same.
* The student (a Keras 3 or tf_keras file) is trained in its own Keras, inside the ``tf.distribute`` strategy of
  ``--distribute`` (``training.fit.make_strategy``), and saved in its own Keras format, compiled with the
  plain cross-entropy that fits its output (so later ``prune``/``qat`` runs pick the right loss).
* ``baseline=True`` also trains the same architecture from the same initial weights with the same seed, the
  same number of optimizer steps and plain cross-entropy on the labelled samples alone ("scratch"), so the gain
  from the teacher is measured rather than assumed. When transfer samples make the distillation epochs longer,
  the baseline cycles its labelled samples to make as many steps.

Nothing here imports click or prints; results are dataclasses and errors are ``tflite_opt.errors`` exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from tflite_opt.errors import DataError, TfliteOptError, TrainingError
from tflite_opt.progress import ensure
from tflite_opt.representative_data import Dataset
from tflite_opt.specs import TensorSpec
from tflite_opt.training.fit import FitConfig, FitHistory

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.conversion import ConversionOptions
    from tflite_opt.evaluation import EvaluationOptions
    from tflite_opt.models import LoadedModel
    from tflite_opt.progress import Progress
    from tflite_opt.report import Report, VariantResult

DEFAULT_TEMPERATURE = 4.0
DEFAULT_ALPHA = 0.1
DEFAULT_EPOCHS = 10
DEFAULT_BATCH_SIZE = 32
DEFAULT_LEARNING_RATE = 1e-3
# Probabilities are clipped to the smallest normal float32 before the log: a softmax that underflowed to 0 gets
# the most negative logit float32 softmax can represent instead of -inf.
_PROBABILITY_FLOOR = float(np.finfo(np.float32).tiny)
_PROBABILITY_TOLERANCE = 1e-3
_DETECTION_SAMPLES = 64
_PREDICT_BATCH = 256
NO_LABEL = -1

TEACHER_NAME = "teacher"
SCRATCH_NAME = "scratch"
DISTILLED_NAME = "distilled"


class OutputKind(str, Enum):
    """What a model's output holds (``--teacher-outputs``)."""

    AUTO = "auto"
    LOGITS = "logits"
    PROBABILITIES = "probabilities"


OUTPUT_KIND_NAMES = [kind.value for kind in OutputKind]


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
class ModelPair:
    """How the teacher's tensors line up with the student's (checked before any training).

    Attributes:
        input_names: student input name -> teacher input name (equal names, or the one input of each).
        output_shape: the (shared) output shape, batch axis ``None``.
        num_classes: size of the output's last axis.
        teacher_output: the teacher's output name.
        teacher_parameters: parameters (weights and statistics) of the teacher.
        student_parameters: parameters of the student.
    """

    input_names: dict[str, str]
    output_shape: tuple[int | None, ...]
    num_classes: int
    teacher_output: str
    teacher_parameters: int
    student_parameters: int

    @property
    def parameter_ratio(self) -> float:
        """Teacher parameters per student parameter (4.0: the student is 4x smaller)."""
        return self.teacher_parameters / max(self.student_parameters, 1)


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


# --------------------------------------------------------------------------------------------- the loss, in NumPy

def looks_like_probabilities(outputs: np.ndarray) -> bool:
    """Whether every row of ``(samples, classes)`` outputs is a probability distribution (softmax output)."""
    values = np.asarray(outputs, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] < 2 or not values.size:
        return False
    if values.min() < 0 or values.max() > 1 + _PROBABILITY_TOLERANCE:
        return False
    return bool(np.all(np.abs(values.sum(axis=1) - 1) <= _PROBABILITY_TOLERANCE))


def to_logits(
    outputs: np.ndarray, kind: str = OutputKind.AUTO.value, *, who: str = "teacher"
) -> tuple[np.ndarray, str]:
    """A model's outputs as logits.

    Probabilities become their logs (``log softmax(z) = z - logsumexp(z)``: the same softmax at any temperature).

    Args:
        outputs: ``(samples, classes)`` outputs.
        kind: ``auto`` (probabilities when every row is non-negative and sums to 1), ``logits`` or
            ``probabilities``.
        who: the model's role, for messages.

    Returns:
        ``(logits as float32, the kind that was used)``.

    Raises:
        TrainingError: ``probabilities`` was asked for but the outputs are not probabilities.
    """
    values = np.asarray(outputs, dtype=np.float32)
    kind = OutputKind(kind)
    if kind == OutputKind.AUTO:
        kind = OutputKind.PROBABILITIES if looks_like_probabilities(values) else OutputKind.LOGITS
    if kind == OutputKind.PROBABILITIES:
        if values.size and (values.min() < 0 or not np.all(np.isfinite(values))):
            raise TrainingError(
                f"the {who}'s outputs include negative or non-finite values, so they are not probabilities; "
                "use --teacher-outputs logits"
            )
        return np.log(np.maximum(values, _PROBABILITY_FLOOR)).astype(np.float32), kind.value
    return values, kind.value


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def distillation_loss_numpy(
    labels: np.ndarray, teacher_logits: np.ndarray, student_logits: np.ndarray, *, alpha: float, temperature: float
) -> np.ndarray:
    """The per-sample distillation loss in NumPy (the reference the TensorFlow loss is tested against).

    ``labels`` of :data:`NO_LABEL` (-1) contribute the soft-target term only.
    """
    labels = np.asarray(labels, dtype=np.int64)
    teacher_logits = np.asarray(teacher_logits, dtype=np.float64)
    student_logits = np.asarray(student_logits, dtype=np.float64)
    log_p = _log_softmax(student_logits)
    ce = -log_p[np.arange(len(labels)), np.maximum(labels, 0)] * (labels >= 0)
    teacher_log = _log_softmax(teacher_logits / temperature)
    student_log = _log_softmax(student_logits / temperature)
    kl = np.sum(np.exp(teacher_log) * (teacher_log - student_log), axis=-1)
    return alpha * ce + (1 - alpha) * temperature**2 * kl


def make_loss(*, alpha: float, temperature: float, student_probabilities: bool = False):
    """The distillation loss as a Keras loss function (works for Keras 3 and tf_keras on TensorFlow).

    ``y_true`` packs ``[label, teacher logits...]`` per sample (label -1: no label); ``y_pred`` is the student's
    output (logits, or probabilities when ``student_probabilities``). Returns per-sample losses.
    """
    from tflite_opt import tf_runtime

    tf = tf_runtime.import_tensorflow()
    t = float(temperature)

    def distillation_loss(y_true, y_pred):
        y_true = tf.cast(y_true, tf.float32)
        student = tf.cast(y_pred, tf.float32)
        if student_probabilities:
            student = tf.math.log(tf.maximum(student, _PROBABILITY_FLOOR))
        labels = tf.cast(y_true[:, 0], tf.int32)
        loss = tf.zeros_like(y_true[:, 0])
        if alpha > 0:
            log_p = tf.nn.log_softmax(student, axis=-1)
            ce = -tf.gather(log_p, tf.maximum(labels, 0), axis=1, batch_dims=1)
            loss += alpha * tf.where(labels >= 0, ce, tf.zeros_like(ce))
        if alpha < 1:
            teacher_log = tf.nn.log_softmax(y_true[:, 1:] / t, axis=-1)
            student_log = tf.nn.log_softmax(student / t, axis=-1)
            kl = tf.reduce_sum(tf.exp(teacher_log) * (teacher_log - student_log), axis=-1)
            loss += (1.0 - alpha) * t * t * kl
        return loss

    return distillation_loss


def describe_loss(alpha: float, temperature: float) -> str:
    if alpha >= 1:
        return "cross-entropy"
    if alpha <= 0:
        return f"T²·KL(teacher‖student), T={temperature:g}"
    return f"{alpha:g}·CE + {1 - alpha:g}·T²·KL(teacher‖student), T={temperature:g}"


# -------------------------------------------------------------------------------------------------- the checks

def _fmt(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _shape(shape) -> tuple[int | None, ...]:
    dims = shape.as_list() if hasattr(shape, "as_list") else list(shape)
    return tuple(None if d is None else int(d) for d in dims)


def _output_specs(model: "LoadedModel") -> list[TensorSpec]:
    """A model's outputs (Keras models: from the model itself, without exporting a SavedModel)."""
    if model.keras_model is None:
        return list(model.outputs)
    try:
        tensors = list(model.keras_model.outputs)
    except (AttributeError, ValueError) as exc:
        raise TrainingError(
            f"model {model.path} has no defined outputs (a subclassed model that was never called?); save a "
            "Functional or Sequential model"
        ) from exc
    names = getattr(model.keras_model, "output_names", None) or [str(getattr(t, "name", "output")) for t in tensors]
    return [TensorSpec(str(name), _shape(tensor.shape)) for name, tensor in zip(names, tensors)]


def count_parameters(model: "LoadedModel") -> int:
    """Weights and statistics of a model (``count_params`` for Keras; the signature's variables otherwise)."""
    if model.keras_model is not None:
        return int(model.keras_model.count_params())
    function = model.signature_function()
    seen: set[int] = set()
    total = 0
    for variable in getattr(function, "variables", ()):
        if id(variable) in seen:
            continue
        seen.add(id(variable))
        total += int(np.prod(variable.shape))
    return total


def _compatible(want: Sequence[int | None], got: Sequence[int | None]) -> bool:
    return len(want) == len(got) and all(a is None or b is None or a == b for a, b in zip(want, got))


def check_pair(teacher: "LoadedModel", student: "LoadedModel") -> ModelPair:
    """Check that the teacher's inputs and output match the student's, before any data is touched.

    Inputs are matched by name; a one-input teacher and a one-input student are matched whatever their names.

    Raises:
        TrainingError: the student is not a Keras model, either model does not have exactly one output, or an
            input or output shape differs ("teacher outputs (None, 10) but student outputs (None, 5)").
    """
    if not student.is_keras or student.keras_model is None:
        raise TrainingError(
            f"the student {student.path} is a {student.kind.value}; distillation trains the student, so it must "
            "be a Keras file (.keras or .h5, Keras 3 or tf_keras)"
        )
    teacher_outputs = _output_specs(teacher)
    student_outputs = _output_specs(student)
    for role, outputs in (("teacher", teacher_outputs), ("student", student_outputs)):
        if len(outputs) != 1:
            raise TrainingError(
                f"the {role} has {len(outputs)} outputs ({', '.join(o.name for o in outputs)}); distillation needs "
                "one output of class scores (logits or probabilities)"
            )
    t_shape, s_shape = teacher_outputs[0].shape, student_outputs[0].shape
    if not _compatible(t_shape, s_shape):
        raise TrainingError(
            f"teacher outputs {_fmt(t_shape)} but student outputs {_fmt(s_shape)}; the student must predict the "
            "same classes as the teacher"
        )
    if len(s_shape) != 2 or (s_shape[-1] or t_shape[-1]) is None or (s_shape[-1] or t_shape[-1]) < 2:
        raise TrainingError(
            f"the output has shape {_fmt(s_shape)}; distillation needs (batch, classes) with at least 2 classes"
        )
    input_names = _match_inputs(teacher.inputs, student.inputs)
    return ModelPair(
        input_names=input_names,
        output_shape=tuple(s if s is not None else t for s, t in zip(s_shape, t_shape)),
        num_classes=int(s_shape[-1] or t_shape[-1]),
        teacher_output=teacher_outputs[0].name,
        teacher_parameters=count_parameters(teacher),
        student_parameters=count_parameters(student),
    )


def _match_inputs(teacher_inputs: Sequence[TensorSpec], student_inputs: Sequence[TensorSpec]) -> dict[str, str]:
    teacher_by_name = {spec.name: spec for spec in teacher_inputs}
    if len(teacher_inputs) == 1 and len(student_inputs) == 1:
        pairs = [(student_inputs[0], teacher_inputs[0])]
    else:
        student_names = sorted(spec.name for spec in student_inputs)
        if student_names != sorted(teacher_by_name):
            raise TrainingError(
                f"teacher inputs {', '.join(sorted(map(repr, teacher_by_name)))} do not match student inputs "
                f"{', '.join(map(repr, student_names))}; models with several inputs are matched by input name"
            )
        pairs = [(spec, teacher_by_name[spec.name]) for spec in student_inputs]
    for student_spec, teacher_spec in pairs:
        if not _compatible(teacher_spec.shape, student_spec.shape):
            raise TrainingError(
                f"teacher input '{teacher_spec.name}' takes {_fmt(teacher_spec.shape)} but student input "
                f"'{student_spec.name}' takes {_fmt(student_spec.shape)}; both must read the same samples"
            )
    return {student_spec.name: teacher_spec.name for student_spec, teacher_spec in pairs}


def for_teacher(dataset: Dataset, pair: ModelPair) -> dict[str, np.ndarray]:
    """A dataset's inputs (keyed by student input name) keyed by the teacher's input names."""
    return {pair.input_names[name]: array for name, array in dataset.inputs.items() if name in pair.input_names}


def with_teacher_aliases(dataset: Dataset, pair: ModelPair) -> Dataset:
    """The dataset with each input also under the teacher's name (same arrays), for tools that match by name."""
    inputs = dict(dataset.inputs)
    for name, array in for_teacher(dataset, pair).items():
        inputs.setdefault(name, array)
    return Dataset(inputs=inputs, labels=dataset.labels, source=dataset.source, class_names=dataset.class_names,
                   warnings=list(dataset.warnings))


# ------------------------------------------------------------------------------------------------- inference

def teacher_logits(
    teacher: "LoadedModel", dataset: Dataset, pair: ModelPair, kind: str = OutputKind.AUTO.value
) -> tuple[np.ndarray, str]:
    """Run the teacher (inference only) on a dataset keyed by student input names; returns (logits, kind used)."""
    feed = {}
    specs = {spec.name: spec for spec in teacher.inputs}
    for name, array in for_teacher(dataset, pair).items():
        dtype = np.dtype(specs[name].dtype) if name in specs else array.dtype
        feed[name] = array.astype(dtype, copy=False)
    try:
        outputs = teacher.predict(feed, batch_size=_PREDICT_BATCH)
    except TfliteOptError:
        raise
    except Exception as exc:  # noqa: BLE001 - TensorFlow raises many types for a bad feed
        raise TrainingError(f"the teacher {teacher.path} failed on {dataset.source}: {_first_line(exc)}") from exc
    values = outputs.get(pair.teacher_output, next(iter(outputs.values())))
    values = np.asarray(values).reshape(len(dataset), -1)
    if not np.all(np.isfinite(values)):
        bad = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
        raise TrainingError(f"the teacher outputs NaN or Inf for sample {bad} of {dataset.source}")
    return to_logits(values, kind, who="teacher")


def _feed(dataset: Dataset, student_inputs: Sequence[TensorSpec]):
    """Inputs for ``fit``/``predict``: the array of a one-input model, else a dict keyed by input name."""
    if len(student_inputs) == 1:
        return dataset.inputs[student_inputs[0].name]
    return {spec.name: dataset.inputs[spec.name] for spec in student_inputs}


def _top1_agreement(logits_a: np.ndarray, logits_b: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits_a, axis=1) == np.argmax(logits_b, axis=1)))


def _accuracy(scores: np.ndarray, labels: np.ndarray | None) -> float | None:
    if labels is None or not len(labels):
        return None
    return float(np.mean(np.argmax(scores, axis=1) == labels))


# -------------------------------------------------------------------------------------------------- training

def _keras_of(student: "LoadedModel"):
    from tflite_opt import tf_runtime
    from tflite_opt.models import ModelKind

    return tf_runtime.import_keras3() if student.kind == ModelKind.KERAS3 else tf_runtime.import_tf_keras()


def _copy(keras, model: Any, weights: list[np.ndarray]) -> Any:
    try:
        copy = keras.models.clone_model(model)
    except Exception as exc:  # noqa: BLE001 - clone_model refuses subclassed models and unknown custom layers
        raise TrainingError(
            f"cannot copy the student '{getattr(model, 'name', '?')}' (class {type(model).__name__}) for "
            f"training: {_first_line(exc)}; save it as a Sequential or Functional model"
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
            accuracy = _accuracy(scores, labels)
            agreement = _top1_agreement(scores, teacher_val)
            if logs is not None:
                if accuracy is not None:
                    logs["val_accuracy"] = accuracy
                logs["val_agreement"] = agreement
            record.append((accuracy, agreement))

    return Validate()


@dataclass
class _Job:
    """One training run's data, ready for ``tf.data``."""

    name: str
    description: str
    inputs: Any  # array or dict of arrays
    targets: np.ndarray  # [label, teacher logits...]
    alpha: float


def _train(
    keras, job: _Job, student: "LoadedModel", initial_weights: list[np.ndarray], *, config: DistillConfig,
    steps_per_epoch: int, student_probabilities: bool, validation, strategy, progress,
) -> TrainedStudent:
    from tflite_opt import tf_runtime
    from tflite_opt.training.fit import epoch_progress_callback

    tf = tf_runtime.import_tensorflow()
    fit_config = config.fit
    keras.utils.set_random_seed(fit_config.seed)
    loss_fn = make_loss(alpha=job.alpha, temperature=config.temperature, student_probabilities=student_probabilities)
    with strategy.scope():
        model = _copy(keras, student.keras_model, initial_weights)
        # metrics=[] rather than None: Keras 3's clone_model copies the user's compile settings, and only a
        # non-None value replaces their metrics (an "accuracy" on the packed targets would be meaningless).
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=fit_config.learning_rate), loss=loss_fn,
                      metrics=[])
    n = len(job.targets)
    data = (
        tf.data.Dataset.from_tensor_slices((job.inputs, job.targets))
        .shuffle(n, seed=fit_config.seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(fit_config.batch_size)
        .prefetch(2)
    )
    history = FitHistory(
        loss=describe_loss(job.alpha, config.temperature), loss_source="flag", train_samples=n,
        val_samples=0 if validation is None else len(validation[2]), strategy=strategy_name(strategy),
        replicas=int(strategy.num_replicas_in_sync),
    )
    record: list[tuple[float | None, float]] = []
    callbacks = []
    if validation is not None:
        callbacks.append(_validation_callback(keras, *validation, fit_config.batch_size * 8, record))
    progress.info(
        f"{job.description}: {n} samples, {fit_config.epochs} epoch(s) of {steps_per_epoch} steps, "
        f"loss {history.loss}, {history.strategy} x{history.replicas}"
    )
    with progress.task(job.description, total=steps_per_epoch * fit_config.epochs) as task:
        reporter = epoch_progress_callback(keras, progress, task, fit_config.epochs, history)
        try:
            model.fit(
                data, epochs=fit_config.epochs, steps_per_epoch=steps_per_epoch, verbose=0,
                callbacks=[*callbacks, reporter, keras.callbacks.TerminateOnNaN()],
            )
        except TfliteOptError:
            raise
        except Exception as exc:  # noqa: BLE001 - TF raises many types from inside fit
            raise TrainingError(f"{job.description} failed: {_first_line(exc)}") from exc
    if not history.epochs or not np.isfinite(history.epochs[-1].loss):
        raise TrainingError(
            f"{job.description} diverged (loss is NaN or Inf); lower --learning-rate or --temperature"
        )
    accuracy, agreement = record[-1] if record else (None, None)
    return TrainedStudent(
        name=job.name, model=_export_copy(keras, student.keras_model, model, student_probabilities), history=history,
        val_accuracy=accuracy, val_agreement=agreement, loss=history.loss,
    )


def strategy_name(strategy) -> str:
    """``MirroredStrategy``, or ``default strategy`` for TensorFlow's private default-strategy class."""
    name = type(strategy).__name__
    return "default strategy" if name.startswith("_Default") else name


def _targets(labels: np.ndarray | None, logits: np.ndarray, n: int) -> np.ndarray:
    ids = np.full(n, NO_LABEL, dtype=np.float32) if labels is None else labels.astype(np.float32)
    return np.concatenate([ids[:, None], logits.astype(np.float32)], axis=1)


def _concat(first: Dataset, second: Dataset, names: Sequence[str]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([first.inputs[name], second.inputs[name]]) for name in names}


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
    from tflite_opt.training.fit import make_strategy, split

    config = config or DistillConfig()
    progress = ensure(progress)
    config.validate()
    pair = check_pair(teacher, student)
    needs_labels = config.alpha > 0 or baseline
    if needs_labels and not train.has_labels:
        why = "--baseline trains a student on labels alone" if baseline and config.alpha == 0 else (
            f"--alpha {config.alpha:g} weighs a cross-entropy with the labels"
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
    fit = config.fit
    train_set, val_set = split(train, val, fit)
    student_inputs = list(student.inputs)
    names = [spec.name for spec in student_inputs]

    progress.info(
        f"Teacher: {teacher.kind.value}, {pair.teacher_parameters:,} parameters; student: {student.kind.value}, "
        f"{pair.student_parameters:,} parameters ({pair.parameter_ratio:.1f}x fewer); outputs {_fmt(pair.output_shape)}"
    )
    with progress.task("Running the teacher"):
        train_logits, teacher_kind = teacher_logits(teacher, train_set, pair, config.teacher_outputs)
        transfer_logits = None
        if transfer is not None:
            transfer_logits, _ = teacher_logits(teacher, transfer, pair, teacher_kind)
        val_logits = None if val_set is None else teacher_logits(teacher, val_set, pair, teacher_kind)[0]
    if teacher_kind == OutputKind.PROBABILITIES.value:
        progress.info("The teacher outputs probabilities (softmax): distilling from their logs as logits")
    teacher_val_accuracy = None if val_set is None else _accuracy(val_logits, val_set.labels)

    keras = _keras_of(student)
    sample = _feed(train_set.take(_DETECTION_SAMPLES), student_inputs)
    try:
        student_out = np.asarray(student.keras_model.predict(sample, verbose=0))
    except Exception as exc:  # noqa: BLE001
        raise TrainingError(f"the student {student.path} failed on {train.source}: {_first_line(exc)}") from exc
    student_probabilities = looks_like_probabilities(student_out.reshape(len(student_out), -1))
    if student_probabilities:
        progress.info("The student outputs probabilities (softmax): the loss uses their logs as logits")
    initial_weights = student.keras_model.get_weights()

    if transfer is not None:
        distill_inputs = _concat(train_set, transfer, names)
        distill_targets = np.concatenate([
            _targets(train_set.labels if config.alpha > 0 else None, train_logits, len(train_set)),
            _targets(None, transfer_logits, len(transfer)),
        ])
    else:
        distill_inputs = {name: train_set.inputs[name] for name in names}
        distill_targets = _targets(train_set.labels if config.alpha > 0 else None, train_logits, len(train_set))
    n_train = len(distill_targets)
    steps_per_epoch = max(1, -(-n_train // fit.batch_size))
    single = names[0] if len(names) == 1 else None

    def inputs_of(arrays: Mapping[str, np.ndarray]):
        return arrays[single] if single is not None else dict(arrays)

    validation = None
    if val_set is not None:
        validation = (_feed(val_set, student_inputs), val_set.labels, val_logits)

    strategy = make_strategy(fit.distribute)
    common = dict(
        config=config, steps_per_epoch=steps_per_epoch, student_probabilities=student_probabilities,
        validation=validation, strategy=strategy, progress=progress,
    )
    distilled = _train(
        keras,
        _Job(DISTILLED_NAME, "Distilling", inputs_of(distill_inputs), distill_targets, config.alpha),
        student, initial_weights, **common,
    )
    scratch = None
    if baseline:
        scratch = _train(
            keras,
            _Job(SCRATCH_NAME, "Training the scratch baseline", inputs_of({n: train_set.inputs[n] for n in names}),
                 _targets(train_set.labels, train_logits, len(train_set)), 1.0),
            student, initial_weights, **common,
        )
    return DistillResult(
        student=distilled, baseline=scratch, pair=pair, teacher_output_kind=teacher_kind,
        student_output_kind=OutputKind.PROBABILITIES.value if student_probabilities else OutputKind.LOGITS.value,
        teacher_val_accuracy=teacher_val_accuracy, train_samples=n_train,
        labelled_samples=len(train_set) if train_set.has_labels else 0,
        transfer_samples=0 if transfer is None else len(transfer), val=val_set,
        steps=steps_per_epoch * fit.epochs,
    )


# ------------------------------------------------------------------------------------------------ comparison

@dataclass
class ComparisonRow:
    """One model in the comparison table.

    Attributes:
        name: ``teacher``, ``scratch`` or ``distilled``.
        parameters: parameter count of the source model.
        keras_val_accuracy: accuracy of the source model (TensorFlow) on the validation samples.
        variant: its ``.tflite`` measured by the evaluation engine (size, accuracy, agreement with the teacher,
            latency), or the error that stopped it.
    """

    name: str
    parameters: int
    keras_val_accuracy: float | None
    variant: "VariantResult"


@dataclass
class Comparison:
    """The comparison table's rows and the same data as a SPEC §4 report (reference: the teacher)."""

    rows: list[ComparisonRow]
    report: "Report"
    mode: str


def compare(
    result: DistillResult,
    teacher: "LoadedModel",
    options: "ConversionOptions",
    representative: Dataset | None,
    *,
    student_tflite: bytes | None = None,
    student_error: str | None = None,
    evaluation_options: "EvaluationOptions | None" = None,
    progress: "Progress | None" = None,
) -> Comparison:
    """Convert teacher, scratch and distilled student with ``options`` and measure them in LiteRT.

    Accuracy is on the validation samples, agreement is with the teacher's ``.tflite``. A model whose conversion
    fails is reported with its error; the others are still measured.

    Args:
        result: from :func:`distill`.
        teacher: the teacher as loaded for :func:`distill`.
        options: the conversion mode (and int8 settings) for all three.
        representative: calibration samples keyed by the student's input names (int8/int16x8).
        student_tflite: the distilled student already converted with ``options`` (saves a conversion).
        student_error: the distilled student's conversion already failed with this error.
        evaluation_options: latency runs/threads etc. for the evaluation engine.
        progress: progress reporter.
    """
    from tflite_opt import conversion, evaluation

    progress = ensure(progress)
    pair = result.pair
    teacher_representative = None if representative is None else with_teacher_aliases(representative, pair)

    def convert_source(name, make) -> "evaluation.VariantSource":
        try:
            with progress.task(f"Converting the {name} ({options.mode.value})"):
                return evaluation.VariantSource(name=name, content=make(), mode=options.mode.value)
        except TfliteOptError as exc:
            return evaluation.VariantSource(name=name, mode=options.mode.value, error=str(exc))

    sources = [convert_source(TEACHER_NAME, lambda: conversion.convert(teacher, options, teacher_representative,
                                                                        progress))]
    trained = [s for s in (result.baseline, result.student) if s is not None]
    for student in trained:
        if student is result.student and (student_tflite is not None or student_error is not None):
            sources.append(evaluation.VariantSource(name=student.name, content=student_tflite,
                                                    mode=options.mode.value, error=student_error))
            continue
        sources.append(convert_source(
            student.name, lambda s=student: conversion.convert_keras_model(s.model, options, representative, progress)
        ))
    data = None if result.val is None else with_teacher_aliases(result.val, pair)
    evaluation_options = evaluation_options or evaluation.EvaluationOptions()
    run = evaluation.evaluate_variants(sources, data, reference=TEACHER_NAME, options=evaluation_options,
                                       progress=progress)
    report = evaluation.build_report(run, evaluation_options)
    by_name = {variant.name: variant for variant in report.variants}
    rows = [ComparisonRow(TEACHER_NAME, pair.teacher_parameters, result.teacher_val_accuracy, by_name[TEACHER_NAME])]
    rows += [
        ComparisonRow(student.name, pair.student_parameters, student.val_accuracy, by_name[student.name])
        for student in trained
    ]
    return Comparison(rows=rows, report=report, mode=options.mode.value)


COMPARISON_HEADERS = ("model", "parameters", "size", "accuracy", "agreement", "latency")


def comparison_rows(comparison: Comparison) -> list[tuple[str, ...]]:
    """The comparison table as display strings (accuracy and agreement of the ``.tflite`` files)."""
    from tflite_opt.report import format_size

    def pct(value: float | None) -> str:
        return "—" if value is None else f"{value * 100:.2f}%"

    rows = []
    for row in comparison.rows:
        variant = row.variant
        rows.append((
            row.name,
            f"{row.parameters:,}",
            format_size(variant.size_bytes) if variant.size_bytes else "—",
            pct(variant.accuracy),
            pct(variant.agreement),
            "—" if variant.latency_ms is None else f"{variant.latency_ms.median:.3f} ms",
        ))
    return rows


def render_comparison(comparison: Comparison):
    """A rich renderable: the table, then a note on how it was measured and any errors."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(header_style="bold")
    for index, header in enumerate(COMPARISON_HEADERS):
        table.add_column(header, justify="left" if index == 0 else "right", no_wrap=True)
    for row, cells in zip(comparison.rows, comparison_rows(comparison)):
        table.add_row(*cells, style="red" if row.variant.error else None)
    settings = comparison.report.settings
    samples = "no validation data" if settings.num_samples is None else f"{settings.num_samples} validation samples"
    latency = (f"latency: median of {settings.runs} runs, {settings.threads} thread(s)" if settings.runs
               else "latency not measured (--runs 0)")
    parts: list[Any] = [
        table,
        Text(
            f".tflite files in {comparison.mode} mode; accuracy on {samples}; agreement: top-1 equal to the "
            f"teacher's; {latency}",
            style="dim",
        ),
    ]
    for row in comparison.rows:
        if row.variant.error:
            parts.append(Text(f"{row.name}: {row.variant.error}", style="red"))
    return Group(*parts)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]

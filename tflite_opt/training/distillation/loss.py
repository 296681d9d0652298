"""The distillation loss: teacher and student outputs as logits, and the Hinton loss in TensorFlow and NumPy.

Per sample::

    alpha * CE(label, softmax(s))  +  (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))

where ``t`` and ``s`` are the teacher's and the student's logits and ``T`` the temperature; samples without a
label (:data:`NO_LABEL`) contribute only the second term.
"""

from __future__ import annotations

from enum import Enum

import numpy as np

from tflite_opt.errors import TrainingError

# Probabilities are clipped to the smallest normal float32 before the log: a softmax that underflowed to 0 gets
# the most negative logit float32 softmax can represent instead of -inf.
_PROBABILITY_FLOOR = float(np.finfo(np.float32).tiny)
_PROBABILITY_TOLERANCE = 1e-3
NO_LABEL = -1


class OutputKind(str, Enum):
    """What a model's output holds (``--teacher-outputs``)."""

    AUTO = "auto"
    LOGITS = "logits"
    PROBABILITIES = "probabilities"


OUTPUT_KIND_NAMES = [kind.value for kind in OutputKind]


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
    from tflite_opt.models import tf_runtime

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


def packed_targets(labels: np.ndarray | None, logits: np.ndarray, n: int) -> np.ndarray:
    """``y_true`` for :func:`make_loss`: ``[label, teacher logits...]`` per sample (:data:`NO_LABEL` without)."""
    ids = np.full(n, NO_LABEL, dtype=np.float32) if labels is None else labels.astype(np.float32)
    return np.concatenate([ids[:, None], logits.astype(np.float32)], axis=1)

"""Loss and accuracy of a Keras model at ``w + delta``, fast: one ``tf.function`` sets the weights and runs the
data in batches, so a grid point costs one graph call.

The loss is the cross-entropy the model trains with (``training.loss_choice``: its compiled cross-entropy, else
one matching the output layer's activation), averaged over the samples, without regularization terms. The
weights are always restored to their float values afterwards (``restore``), also after an error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tflite_opt.errors import DataError
from tflite_opt.training.loss_choice import LossSpec
from tflite_opt.workflows.landscape_directions import Parameter

PROBABILITY_EPSILON = 1e-7  # Keras' backend epsilon: probabilities are clipped to [eps, 1 - eps]
BATCH_BYTES = 32 << 20  # input bytes per batch inside the graph


@dataclass
class PointValue:
    """Loss and top-1 accuracy at one point of weight space."""

    loss: float
    accuracy: float


def select_output(outputs: Any, output_names: Sequence[str] | None):
    """The output that loss and accuracy are taken on: the only one, else the one whose name sorts first (as
    ``evaluate`` picks its accuracy output)."""
    if isinstance(outputs, dict):
        return outputs[sorted(outputs)[0]]
    if isinstance(outputs, (list, tuple)):
        if len(outputs) == 1 or not output_names:
            return outputs[0]
        names = list(output_names)
        return outputs[names.index(sorted(names)[0])]
    return outputs


class LandscapeEvaluator:
    """Evaluates the model at ``w + delta`` for deltas over ``parameters`` (one array per parameter).

    Only the parameters whose delta can be non-zero (``moving``) are assigned, so BatchNorm statistics and the
    rest of the model are untouched.
    """

    def __init__(
        self,
        keras_model,
        parameters: Sequence[Parameter],
        moving: Sequence[bool],
        inputs: dict,
        labels: np.ndarray,
        loss: LossSpec,
    ) -> None:
        from tflite_opt.models import tf_runtime

        tf = tf_runtime.import_tensorflow()
        self._tf = tf
        self.parameters = [p for p, move in zip(parameters, moving) if move]
        self._positions = [i for i, move in enumerate(moving) if move]
        self._origin = [tf.constant(p.value) for p in self.parameters]
        names = sorted(inputs)
        self._single = len(names) == 1
        self._inputs = {name: tf.constant(inputs[name]) for name in names}
        self._labels = tf.constant(labels.astype(np.int64))
        self.samples = len(labels)
        sample_bytes = sum(int(np.prod(a.shape[1:])) * a.dtype.itemsize for a in inputs.values())
        self.batch_size = int(max(1, min(self.samples, BATCH_BYTES // max(sample_bytes, 1))))
        self._batches = math.ceil(self.samples / self.batch_size)
        self._model = keras_model
        self._loss = loss
        self._function = tf.function(self._evaluate, autograph=False, reduce_retracing=True)

    def _per_sample(self, scores, labels):
        """(loss, correct) per sample for the chosen cross-entropy."""
        tf = self._tf
        scores = tf.reshape(tf.cast(scores, tf.float32), [tf.shape(scores)[0], -1])
        if self._loss.binary:
            target = tf.cast(tf.reshape(labels, [-1, 1]), tf.float32)
            scores = scores[:, :1]
            if self._loss.from_logits:
                losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=scores)
                predicted = scores > 0.0
            else:
                p = tf.clip_by_value(scores, PROBABILITY_EPSILON, 1.0 - PROBABILITY_EPSILON)
                losses = -(target * tf.math.log(p) + (1.0 - target) * tf.math.log(1.0 - p))
                predicted = scores > 0.5
            correct = tf.equal(tf.cast(predicted, tf.int64), tf.reshape(labels, [-1, 1]))
            return tf.reshape(losses, [-1]), tf.reshape(correct, [-1])
        if self._loss.from_logits:
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=scores)
        else:
            p = scores / tf.reduce_sum(scores, axis=-1, keepdims=True)
            p = tf.clip_by_value(p, PROBABILITY_EPSILON, 1.0 - PROBABILITY_EPSILON)
            losses = -tf.math.log(tf.gather(p, labels, axis=1, batch_dims=1))
        return losses, tf.equal(tf.argmax(scores, axis=-1), labels)

    def _evaluate(self, deltas):
        tf = self._tf
        for parameter, origin, delta in zip(self.parameters, self._origin, deltas):
            parameter.variable.assign(origin + delta)
        size = self.batch_size
        output_names = getattr(self._model, "output_names", None)

        def body(index, total, correct):
            start = index * size
            feed = {name: value[start : start + size] for name, value in self._inputs.items()}
            scores = select_output(
                self._model(next(iter(feed.values())) if self._single else feed, training=False), output_names
            )
            losses, hits = self._per_sample(scores, self._labels[start : start + size])
            return (
                index + 1,
                total + tf.reduce_sum(tf.cast(losses, tf.float64)),
                correct + tf.reduce_sum(tf.cast(hits, tf.int64)),
            )

        # An explicit while loop (no autograph: converting the model's own code costs seconds per trace).
        _, total, correct = tf.while_loop(
            lambda index, total, correct: index < self._batches,
            body,
            (tf.constant(0), tf.constant(0.0, tf.float64), tf.constant(0, tf.int64)),
        )
        return total / self.samples, tf.cast(correct, tf.float64) / self.samples

    def at(self, delta: Sequence[np.ndarray] | None) -> PointValue:
        """Loss and accuracy at ``w + delta`` (``delta`` over all parameters; ``None`` = the float weights)."""
        tf = self._tf
        if delta is None:
            deltas = [tf.zeros_like(origin) for origin in self._origin]
        else:
            deltas = [tf.constant(delta[i]) for i in self._positions]
        loss, accuracy = self._function(deltas)
        return PointValue(float(loss), float(accuracy))

    def restore(self) -> None:
        """Put the float weights back."""
        for parameter, origin in zip(self.parameters, self._origin):
            parameter.variable.assign(origin)


def check_labels(labels: np.ndarray | None, num_classes: int, binary: bool, source: str) -> np.ndarray:
    """The labels as int64 class ids, checked against the output size.

    Raises:
        DataError: no labels, or a label outside the model's classes.
    """
    if labels is None:
        raise DataError(
            f"{source} has no labels; the loss landscape needs labels ('y' in a .npz, or DIR/<class>/* folders)"
        )
    labels = np.asarray(labels).astype(np.int64)
    limit = 2 if binary else num_classes
    bad = np.flatnonzero((labels < 0) | (labels >= limit))
    if bad.size:
        raise DataError(
            f"label {int(labels[bad[0]])} of sample {int(bad[0])} in {source} is outside the model's {limit} "
            f"classes (0..{limit - 1}); fix the labels or the model's output size"
        )
    return labels

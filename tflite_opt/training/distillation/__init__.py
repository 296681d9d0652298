"""Knowledge distillation (Hinton, Vinyals & Dean 2015): train a small student on a large teacher's soft targets.

The student is trained on, per sample::

    alpha * CE(label, softmax(s))  +  (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))

where ``t`` and ``s`` are the teacher's and the student's logits and ``T`` the temperature. The ``T^2`` factor
keeps the soft-target gradients at the same scale whatever the temperature (section 2 of the paper). Samples
without a label (``--alpha 0`` on unlabelled data, or the extra *transfer* samples) contribute only the second
term.

How the pieces fit (one submodule each; callers use the names re-exported here, ``distillation.distill`` ...):

* ``loss``: outputs as logits, and the loss in TensorFlow and NumPy. A teacher (or student) whose output is a
  probability distribution (softmax last layer) is detected from its outputs (every row non-negative and summing
  to 1) and its logs are used as logits: ``log softmax(z)`` equals ``z`` up to a per-sample constant, which
  softmax ignores, so the soft targets are exactly the same.
* ``pairing``: the teacher (any kind ``models.load_model`` reads: Keras 3, tf_keras, SavedModel) is checked
  against the student before any data is read, and only runs inference, once, before training: its logits for
  every training, transfer and validation sample travel with the labels as the training targets, so the training
  step never calls the teacher and ``fit`` stays a plain Keras ``fit``.
* ``student``: the student (a Keras 3 or tf_keras file) is trained in its own Keras, inside the ``tf.distribute``
  strategy of ``--distribute`` (``training.fit.make_strategy``, ``training.fit.run_fit``), and handed back
  compiled with the plain cross-entropy that fits its output (so later ``prune``/``qat`` runs pick the right loss).
* ``train``: ``distill``. ``baseline=True`` also trains the same architecture from the same initial weights with
  the same seed, the same number of optimizer steps and plain cross-entropy on the labelled samples alone
  ("scratch"), so the gain from the teacher is measured rather than assumed. When transfer samples make the
  distillation epochs longer, the baseline cycles its labelled samples to make as many steps.
* ``compare``: the three models converted in one mode and measured in LiteRT by the evaluation engine, as a
  report and a ``TextTable``.

Nothing here imports click or prints; results are dataclasses and errors are ``tflite_opt.errors`` exceptions.
"""

from tflite_opt.training.distillation.compare import (
    COMPARISON_HEADERS,
    Comparison,
    ComparisonRow,
    compare,
    comparison_rows,
    comparison_table,
)
from tflite_opt.training.distillation.loss import (
    NO_LABEL,
    OUTPUT_KIND_NAMES,
    OutputKind,
    _log_softmax,
    describe_loss,
    distillation_loss_numpy,
    looks_like_probabilities,
    make_loss,
    to_logits,
)
from tflite_opt.training.distillation.pairing import (
    ModelPair,
    check_pair,
    count_parameters,
    for_teacher,
    teacher_logits,
    with_teacher_aliases,
)
from tflite_opt.training.distillation.student import TrainedStudent
from tflite_opt.training.distillation.train import (
    DEFAULT_ALPHA,
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_LEARNING_RATE,
    DEFAULT_TEMPERATURE,
    DISTILLED_NAME,
    SCRATCH_NAME,
    TEACHER_NAME,
    DistillConfig,
    DistillResult,
    distill,
)

__all__ = [
    "COMPARISON_HEADERS",
    "DEFAULT_ALPHA",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_EPOCHS",
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_TEMPERATURE",
    "DISTILLED_NAME",
    "NO_LABEL",
    "OUTPUT_KIND_NAMES",
    "SCRATCH_NAME",
    "TEACHER_NAME",
    "Comparison",
    "ComparisonRow",
    "DistillConfig",
    "DistillResult",
    "ModelPair",
    "OutputKind",
    "TrainedStudent",
    "_log_softmax",  # the NumPy log-softmax the tests compare soft targets with
    "check_pair",
    "compare",
    "comparison_rows",
    "comparison_table",
    "count_parameters",
    "describe_loss",
    "distill",
    "distillation_loss_numpy",
    "for_teacher",
    "looks_like_probabilities",
    "make_loss",
    "teacher_logits",
    "to_logits",
    "with_teacher_aliases",
]

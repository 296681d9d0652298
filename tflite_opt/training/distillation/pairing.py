"""How a teacher lines up with its student: shapes checked before any data is read, inputs matched by name, and
the teacher run once (inference only) for its logits on samples keyed by the student's input names.

The teacher may be any kind ``models.load_model`` reads (Keras 3, tf_keras, SavedModel); the student must be a
Keras file, because it is trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tflite_opt.errors import TfliteOptError, TrainingError, first_line
from tflite_opt.representative_data import Dataset
from tflite_opt.specs import TensorSpec
from tflite_opt.training.distillation.loss import OutputKind, to_logits

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.models import LoadedModel

_PREDICT_BATCH = 256


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


def format_shape(shape: Sequence[int | None]) -> str:
    """``(None, 10)``: a shape as messages show it (``None`` for an unknown axis, Python's one-tuple comma)."""
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
            f"teacher outputs {format_shape(t_shape)} but student outputs {format_shape(s_shape)}; the student must predict the "
            "same classes as the teacher"
        )
    if len(s_shape) != 2 or (s_shape[-1] or t_shape[-1]) is None or (s_shape[-1] or t_shape[-1]) < 2:
        raise TrainingError(
            f"the output has shape {format_shape(s_shape)}; distillation needs (batch, classes) with at least 2 classes"
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
                f"teacher input '{teacher_spec.name}' takes {format_shape(teacher_spec.shape)} but student input "
                f"'{student_spec.name}' takes {format_shape(student_spec.shape)}; both must read the same samples"
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
    return Dataset(
        inputs=inputs,
        labels=dataset.labels,
        source=dataset.source,
        class_names=dataset.class_names,
        warnings=list(dataset.warnings),
    )


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
        raise TrainingError(f"the teacher {teacher.path} failed on {dataset.source}: {first_line(exc)}") from exc
    values = outputs.get(pair.teacher_output, next(iter(outputs.values())))
    values = np.asarray(values).reshape(len(dataset), -1)
    if not np.all(np.isfinite(values)):
        bad = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
        raise TrainingError(f"the teacher outputs NaN or Inf for sample {bad} of {dataset.source}")
    return to_logits(values, kind, who="teacher")

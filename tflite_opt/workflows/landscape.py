"""The loss landscape around a model's weights and along its quantization direction (Li et al. 2018).

Three measurements on the Keras model, all with the same batched ``tf.function`` (``landscape_eval``):

* a 2-D grid ``L(w + a·d1 + b·d2)`` over two filter-normalized random directions (``landscape_directions``),
  ``a, b`` in ``[-span, span]``; the float weights are the centre;
* a 1-D curve ``L(w + α·q)``, α in ``[0, 2]``, along the quantization direction ``q`` = the converted file's
  dequantized weights minus the float weights (``landscape_quantized``); α = 1 is the weight-quantized model,
  shown beside the real ``.tflite`` file's accuracy in LiteRT (which also quantizes activations);
* sharpness: the mean loss rise at a fixed filter-normalized radius over fresh random directions.

The model's weights are restored when this returns, also after an error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tflite_opt.errors import ModelLoadError
from tflite_opt.modes import Mode
from tflite_opt.progress import Progress, ensure
from tflite_opt.workflows.landscape_directions import (
    combine,
    filter_normalized_distance,
    model_parameters,
    random_direction,
)
from tflite_opt.workflows.landscape_results import LandscapeGrid, LandscapeResult, QuantizationCurve, Sharpness

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.models import LoadedModel
    from tflite_opt.representative_data import Dataset
    from tflite_opt.training.loss_choice import LossSpec
    from tflite_opt.workflows.landscape_eval import LandscapeEvaluator

DEFAULT_SAMPLES = 500
# Modes whose weights differ from the float weights (fp32 would give a zero direction).
LANDSCAPE_MODES = [m.value for m in Mode if m != Mode.FP32]


@dataclass
class LandscapeOptions:
    """What to measure (the ``landscape`` flags).

    Attributes:
        mode: the conversion whose weights give the quantization direction.
        grid: points per side of the 2-D grid (odd, so that the float weights are a grid point).
        span: the grid covers ``[-span, span]`` along both directions.
        num_samples: samples of the data to evaluate on (the first N).
        seed: seed of the random directions.
        curve_points: points of the α curve over ``[0, 2]`` (odd, so that α = 1 is one of them).
        sharpness_radius: filter-normalized radius of the sharpness number.
        sharpness_directions: random directions the sharpness is averaged over (each in both signs).
        loss: a ``training.loss_choice.LossChoice`` value (``auto``: the model's compiled cross-entropy).
        allow_float_fallback: int8: keep ops without an int8 kernel in float instead of failing.
    """

    mode: Mode = Mode.INT8
    grid: int = 21
    span: float = 1.0
    num_samples: int | None = DEFAULT_SAMPLES
    seed: int = 0
    curve_points: int = 21
    sharpness_radius: float = 0.25
    sharpness_directions: int = 8
    loss: str = "auto"
    allow_float_fallback: bool = False

    def validate(self) -> None:
        from tflite_opt.errors import TfliteOptError

        if self.grid < 3 or self.grid % 2 == 0:
            raise TfliteOptError(
                f"the grid size must be odd and at least 3 (got {self.grid}), so that the float weights are its centre"
            )
        if self.curve_points < 3 or self.curve_points % 2 == 0:
            raise TfliteOptError(f"the curve needs an odd number of points, at least 3 (got {self.curve_points})")
        if self.span <= 0 or self.sharpness_radius <= 0 or self.sharpness_directions < 1:
            raise TfliteOptError("span and sharpness radius must be positive, and there must be a direction")


def _convert(model: "LoadedModel", mode: Mode, options: LandscapeOptions, representative, progress: Progress):
    """The model converted with ``mode`` (calibrated on ``representative`` where the mode needs it)."""
    from tflite_opt.quantize.conversion import ConversionOptions, convert

    conversion = ConversionOptions(
        mode=mode, allow_float_fallback=options.allow_float_fallback, num_samples=options.num_samples
    )
    return convert(model, conversion, representative if mode.needs_representative_data else None, progress)


def _run_tflite(content: bytes, dataset: "Dataset", labels: np.ndarray, loss: "LossSpec", progress: Progress):
    """(accuracy, loss) of the real file in LiteRT on the same samples; (None, None) if it cannot run."""
    from tflite_opt.errors import TfliteOptError
    from tflite_opt.measure.evaluation import pick_accuracy_output, run_dataset, top1

    try:
        outputs = run_dataset(content, dataset, source="the converted file")
    except TfliteOptError as exc:
        progress.warn(f"the converted file could not be run in LiteRT: {exc}")
        return None, None
    scores = outputs[pick_accuracy_output(sorted(outputs))].astype(np.float64).reshape(len(labels), -1)
    accuracy = float(np.mean(top1(scores) == labels))
    return accuracy, float(np.mean(_numpy_loss(scores, labels, loss)))


def _numpy_loss(scores: np.ndarray, labels: np.ndarray, loss: "LossSpec") -> np.ndarray:
    """Per-sample cross-entropy in NumPy, as ``landscape_eval`` computes it in TensorFlow."""
    from tflite_opt.workflows.landscape_eval import PROBABILITY_EPSILON as eps

    if loss.binary:
        target = labels.astype(np.float64)
        z = scores[:, 0]
        if loss.from_logits:
            return np.maximum(z, 0) - z * target + np.log1p(np.exp(-np.abs(z)))
        p = np.clip(z, eps, 1 - eps)
        return -(target * np.log(p) + (1 - target) * np.log(1 - p))
    if loss.from_logits:
        shifted = scores - scores.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return -log_p[np.arange(len(labels)), labels]
    p = np.clip(scores / scores.sum(axis=1, keepdims=True), eps, 1 - eps)
    return -np.log(p[np.arange(len(labels)), labels])


def _grid(evaluator: "LandscapeEvaluator", directions, options: LandscapeOptions, progress: Progress) -> LandscapeGrid:
    coordinates = np.linspace(-options.span, options.span, options.grid)
    coordinates[options.grid // 2] = 0.0  # exactly the float weights, whatever linspace rounds to
    loss = np.zeros((options.grid, options.grid))
    accuracy = np.zeros_like(loss)
    started = time.perf_counter()
    with progress.task(f"Loss landscape {options.grid}×{options.grid}", total=options.grid**2) as task:
        for i, b in enumerate(coordinates):
            for j, a in enumerate(coordinates):
                value = evaluator.at(combine(directions, (a, b)))
                loss[i, j], accuracy[i, j] = value.loss, value.accuracy
                task.advance()
    return LandscapeGrid(
        [float(c) for c in coordinates], loss.tolist(), accuracy.tolist(), time.perf_counter() - started
    )


def _curve(evaluator: "LandscapeEvaluator", direction, options: LandscapeOptions, progress: Progress):
    alphas = np.linspace(0.0, 2.0, options.curve_points)
    alphas[options.curve_points // 2] = 1.0
    loss, accuracy = [], []
    with progress.task(f"Along the {options.mode.value} direction", total=len(alphas)) as task:
        for alpha in alphas:
            value = evaluator.at(None if alpha == 0 else combine([direction], (alpha,)))
            loss.append(value.loss)
            accuracy.append(value.accuracy)
            task.advance()
    return [float(a) for a in alphas], loss, accuracy


def _sharpness(
    evaluator: "LandscapeEvaluator", parameters, base: float, options: LandscapeOptions, progress: Progress
) -> Sharpness:
    rng = np.random.default_rng([options.seed, 1])  # a stream apart from the grid's two directions
    rises = []
    with progress.task("Sharpness", total=2 * options.sharpness_directions) as task:
        for _ in range(options.sharpness_directions):
            direction = random_direction(parameters, rng)
            for sign in (1.0, -1.0):
                rises.append(evaluator.at(combine([direction], (sign * options.sharpness_radius,))).loss - base)
                task.advance()
    return Sharpness(
        options.sharpness_radius,
        options.sharpness_directions,
        float(np.mean(rises)),
        float(np.max(rises)),
        [float(r) for r in rises],
    )


def _model_and_loss(model: "LoadedModel", data: "Dataset", options: LandscapeOptions, progress: Progress):
    """(Keras model, its parameters, the loss, the checked labels), or the error that stops the run early."""
    from tflite_opt.training.loss_choice import choose_loss
    from tflite_opt.workflows.landscape_eval import check_labels, select_output

    keras_model = model.keras_model
    if keras_model is None:
        raise ModelLoadError(
            f"{model.path} is a SavedModel; the loss landscape moves a Keras model's weights, "
            "so pass the .keras or .h5 file it was saved from"
        )
    parameters = model_parameters(keras_model)
    if not any(p.is_kernel for p in parameters):
        raise ModelLoadError(f"{model.path} has no trainable kernels (Conv/Dense weights) to move")
    sample = {name: values[:2] for name, values in data.inputs.items()}
    probe = select_output(
        keras_model(next(iter(sample.values())) if len(sample) == 1 else sample, training=False),
        getattr(keras_model, "output_names", None),
    )
    num_classes = int(np.prod(probe.shape[1:]))
    loss = choose_loss(keras_model, keras_model, num_classes, options.loss, progress)
    labels = check_labels(data.labels, num_classes, loss.binary, data.source or "the data")
    return keras_model, parameters, loss, labels


def run_landscape(
    model: "LoadedModel",
    dataset: "Dataset",
    options: LandscapeOptions,
    *,
    representative: "Dataset | None" = None,
    quantized: bytes | None = None,
    quantized_source: str = "the converted file",
    progress: Progress | None = None,
) -> LandscapeResult:
    """Measure the loss landscape of a Keras model and its quantization direction.

    Args:
        model: a loaded Keras 3 or tf_keras model.
        dataset: labelled data (the first ``options.num_samples`` are used).
        options: grid, span, mode, seed, sharpness radius.
        representative: calibration data for int8/int16x8 (default: ``dataset``).
        quantized: an already converted ``.tflite`` of this model to take the weights from (default: convert
            with ``options.mode``).
        quantized_source: what to call ``quantized`` in messages (its path).
        progress: status and progress bars.

    Raises:
        ModelLoadError: the model is not a Keras model or has no kernels.
        DataError: the data has no labels, or labels outside the model's classes.
        ConversionError: the conversion failed, or the file's weights do not belong to this model.
    """
    from tflite_opt.workflows.landscape_eval import LandscapeEvaluator
    from tflite_opt.workflows.landscape_quantized import quantization_direction

    progress = ensure(progress)
    options.validate()
    started = time.perf_counter()
    data = dataset.take(options.num_samples)
    keras_model, parameters, loss, labels = _model_and_loss(model, data, options, progress)
    if quantized is None:
        progress.info(f"Converting to {options.mode.value}")
        quantized = _convert(model, options.mode, options, representative or data, progress)
    progress.info("Converting to fp32 (its kernels give the BatchNorm folding exactly)")
    reference = _convert(model, Mode.FP32, options, None, progress)
    shift = quantization_direction(parameters, quantized, reference, source=quantized_source)
    for warning in shift.warnings:
        progress.warn(warning)
    evaluator = LandscapeEvaluator(
        keras_model, parameters, [p.is_kernel for p in parameters], data.inputs, labels, loss
    )
    try:
        base = evaluator.at(None)
        rng = np.random.default_rng(options.seed)
        plane = [random_direction(parameters, rng), random_direction(parameters, rng)]
        grid = _grid(evaluator, plane, options, progress)
        curve_values = _curve(evaluator, shift.direction, options, progress)  # alpha, loss, accuracy
        sharpness = _sharpness(evaluator, parameters, base.loss, options, progress)
    finally:
        evaluator.restore()
    tflite_accuracy, tflite_loss = _run_tflite(quantized, data, labels, loss, progress)
    distance = filter_normalized_distance(parameters, shift.direction)
    curve = QuantizationCurve(*curve_values, distance, tflite_accuracy, tflite_loss, shift.kernels)
    return LandscapeResult(
        model=str(model.path),
        data=data.source,
        mode=options.mode.value,
        num_samples=len(labels),
        seed=options.seed,
        loss_name=loss.describe(),
        loss_source=loss.source,
        float_loss=base.loss,
        float_accuracy=base.accuracy,
        grid=grid,
        curve=curve,
        sharpness=sharpness,
        seconds=time.perf_counter() - started,
        warnings=list(shift.warnings),
    )

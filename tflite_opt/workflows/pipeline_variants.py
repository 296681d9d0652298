"""Make the ``.tflite`` files of the pipeline variants the cache does not have.

The source model is loaded once and, when a conversion variant needs it, exported to a SavedModel once
(``LoadedModel.saved_model_dir``): every conversion reuses that export, as ``compare`` does. Training variants
fine-tune from the same loaded model, which stays unchanged. A variant that cannot be made is returned as its
error and never stops the others. TensorFlow is imported here only, and only when something has to be made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tflite_opt.errors import TfliteOptError, TrainingError
from tflite_opt.modes import Mode
from tflite_opt.progress import Progress, ensure
from tflite_opt.workflows.pipeline_options import build_conversion_options

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.models import LoadedModel
    from tflite_opt.representative_data import Dataset
    from tflite_opt.specs import TensorSpec
    from tflite_opt.workflows.pipeline_file import ModelSpec, VariantSpec

TFMOT_KINDS = ("prune", "qat", "cluster")


def calibration_source(model: "ModelSpec") -> str | None:
    """The data int8/int16x8 calibrate on: ``calibration``, else ``train``, else ``eval``."""
    data = model.data
    return data.calibration or data.train or data.eval


def needs_calibration(variant: "VariantSpec") -> bool:
    return Mode(variant.mode).needs_representative_data


class _Inputs:
    """The data files, each loaded (and checked against the model's inputs) the first time a variant needs it."""

    def __init__(self, model: "ModelSpec", progress: Progress) -> None:
        self.model = model
        self.progress = progress
        self._loaded: dict[tuple, "Dataset"] = {}

    def load(self, source: str, specs: "list[TensorSpec]", *, labels: bool = False, calibration: bool = False):
        from tflite_opt.representative_data import load_data

        key = (source, tuple((s.name, s.shape, s.dtype) for s in specs), labels, calibration)
        if key not in self._loaded:
            dataset = load_data(
                source,
                specs,
                preprocess=self.model.data.preprocess,
                require_labels=labels,
                num_samples=self.model.data.num_samples if calibration else None,
                allow_random=not labels,
            )
            for warning in dataset.warnings:
                self.progress.warn(warning)
            self._loaded[key] = dataset
        return self._loaded[key]

    def calibration(self, specs: "list[TensorSpec]") -> "Dataset":
        data = self.model.data
        source = calibration_source(self.model)
        if data.calibration is None and source == data.eval and data.train is None:
            self.progress.warn(
                "calibrating on the evaluation data ([data] eval): set [data] calibration to keep "
                "calibration and evaluation apart"
            )
        return self.load(source, specs, calibration=True)

    def train(self, specs: "list[TensorSpec]") -> "Dataset":
        return self.load(self.model.data.train, specs, labels=True)


def build_variants(
    model: "ModelSpec", variants: "list[VariantSpec]", progress: Progress | None = None
) -> dict[str, bytes | TfliteOptError]:
    """Make every variant's ``.tflite`` bytes (or its error), loading and exporting the model once.

    Raises:
        ModelLoadError: the source model cannot be loaded (then no variant can be made).
    """
    from tflite_opt import models
    from tflite_opt.models import tf_runtime

    progress = ensure(progress)
    if models.detect_kind(model.path) == models.ModelKind.TFLITE:
        return _build_from_tflite(model, variants, progress)
    if any(v.kind in TFMOT_KINDS for v in variants):
        tf_runtime.import_tfmot()  # tfmot needs tf_keras, chosen only before TensorFlow's first import
    loaded = models.load_model(
        model.path,
        signature=model.signature,
        trust_model=model.trust_model,
        input_shapes=model.input_shapes,
        progress=progress,
    )
    if any(not v.is_training for v in variants):
        with progress.task("Exporting the model"):
            loaded.saved_model_dir  # noqa: B018 - property with a side effect (the one export)
    inputs = _Inputs(model, progress)
    results: dict[str, bytes | TfliteOptError] = {}
    with progress.task("Building variants", total=len(variants)) as task:
        for variant in variants:
            task.update(description=f"Building {variant.name} ({variant.kind}, {variant.mode})")
            try:
                results[variant.name] = _build(variant, model, loaded, inputs, progress)
            except TfliteOptError as exc:  # reported once, with the variant; a bug in our code propagates
                results[variant.name] = exc
            task.advance()
    return results


def _build_from_tflite(model: "ModelSpec", variants: "list[VariantSpec]", progress) -> dict:
    """A float ``.tflite`` source: the LiteRT Quantizer's modes, straight from the file (no TensorFlow)."""
    from tflite_opt.quantize import conversion
    from tflite_opt.quantize.tflite_source import load_tflite_source

    source = load_tflite_source(model.path, signature=model.signature)
    inputs = _Inputs(model, progress)
    results: dict[str, bytes | TfliteOptError] = {}
    for variant in variants:
        try:
            if variant.is_training:
                raise TrainingError(f"{variant.kind} fine-tunes a Keras model; {model.path} is a .tflite file")
            representative = inputs.calibration(source.inputs) if needs_calibration(variant) else None
            options = _conversion_options(variant, model)
            results[variant.name] = conversion.convert_tflite(source, options, representative, progress).content
        except TfliteOptError as exc:  # reported once, with the variant
            results[variant.name] = exc
    return results


def _conversion_options(variant: "VariantSpec", model: "ModelSpec"):
    values = dict(variant.conversion)
    if values.get("num_samples") is None:
        values["num_samples"] = model.data.num_samples
    return build_conversion_options(variant.mode, values)


def _build(variant: "VariantSpec", model: "ModelSpec", loaded: "LoadedModel", inputs: _Inputs, progress) -> bytes:
    from tflite_opt.quantize import conversion

    options = _conversion_options(variant, model)
    if not variant.is_training:
        representative = inputs.calibration(loaded.inputs) if needs_calibration(variant) else None
        return conversion.convert(loaded, options, representative, progress)
    if not loaded.is_keras or loaded.keras_model is None:
        raise TrainingError(
            f"{variant.kind} fine-tunes a Keras model (.keras/.h5); {model.path} is a "
            f"{loaded.kind.value}: point [model] path at the Keras file"
        )
    trained, specs = _train(variant, loaded, inputs, progress)
    if variant.kind == "prune" and "sparsity" not in variant.conversion:
        options.sparsity = Mode(variant.mode) in conversion.SPARSE_ENCODING_MODES
    representative = inputs.calibration(specs) if needs_calibration(variant) else None
    return conversion.convert_keras_model(trained, options, representative, progress)


def _fit_config(settings: dict[str, Any]):
    from tflite_opt.training.fit import FitConfig

    return FitConfig(
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"],
        val_split=settings["val_split"],
        loss=settings.get("loss", "auto"),
        seed=settings["seed"],
    )


def _train(variant: "VariantSpec", loaded: "LoadedModel", inputs: _Inputs, progress) -> tuple[Any, list]:
    """Fine-tune (or distill) and return the trained Keras model and the inputs its data is keyed by."""
    settings = variant.training
    config = _fit_config(settings)
    if variant.kind == "prune":
        from tflite_opt.training.pruning import parse_structure, prune_model

        result = prune_model(
            loaded.keras_model,
            inputs.train(loaded.inputs),
            sparsity=settings["sparsity"],
            schedule=settings["schedule"],
            structure=parse_structure(settings["structure"]),
            skip_layers=settings["skip_layers"],
            config=config,
            progress=progress,
        )
        return result.model, loaded.inputs
    if variant.kind == "qat":
        from tflite_opt.training.qat import qat_model

        result = qat_model(
            loaded.keras_model,
            inputs.train(loaded.inputs),
            preserve_sparsity=settings["preserve_sparsity"],
            skip_layers=settings["skip_layers"],
            config=config,
            progress=progress,
        )
        return result.model, loaded.inputs
    if variant.kind == "cluster":
        from tflite_opt.training.clustering import cluster_model

        result = cluster_model(
            loaded.keras_model,
            inputs.train(loaded.inputs),
            clusters=settings["clusters"],
            init=settings["init"],
            preserve_sparsity=settings["preserve_sparsity"],
            skip_layers=settings["skip_layers"],
            config=config,
            progress=progress,
        )
        return result.model, loaded.inputs
    from tflite_opt import models
    from tflite_opt.training import distillation

    student = models.load_model(settings["student"], progress=progress)
    distill_config = distillation.DistillConfig(
        temperature=settings["temperature"], alpha=settings["alpha"], fit=config
    )
    result = distillation.distill(
        loaded, student, inputs.train(student.inputs), config=distill_config, progress=progress
    )
    return result.student.model, student.inputs

"""``compare``: one model, every conversion mode (and optional training-time rows), measured side by side.

The source model is loaded and exported to a SavedModel once; every mode converts from that export. A variant
whose conversion or training fails is reported with its ``error`` and never stops the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from tflite_opt.conversion import ConversionOptions, convert, convert_keras_model
from tflite_opt.errors import DataError, TfliteOptError
from tflite_opt.fileio import atomic_write_bytes
from tflite_opt.modes import IoType, Mode
from tflite_opt.progress import Progress, ensure

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.evaluation import EvaluationOptions
    from tflite_opt.models import LoadedModel
    from tflite_opt.report import Report
    from tflite_opt.representative_data import Dataset


@dataclass
class TrainingRows:
    """Training-time variants to add (each fine-tuned from the same source model on ``train``)."""

    train: "Dataset"
    qat: bool = False
    prune_sparsity: float | None = None
    cluster_count: int | None = None
    epochs: int = 2
    batch_size: int = 32
    learning_rate: float | None = None  # None: each technique's default (prune 1e-3, QAT and clustering 1e-4)
    validation_split: float = 0.1
    seed: int = 0

    @property
    def any(self) -> bool:
        return self.qat or self.prune_sparsity is not None or self.cluster_count is not None


@dataclass
class CompareResult:
    report: "Report"
    files: dict[str, Path] = field(default_factory=dict)


def run_compare(
    model: "LoadedModel",
    data: "Dataset",
    output_dir: Path,
    *,
    modes: Sequence[Mode],
    representative: "Dataset | None",
    evaluation_options: "EvaluationOptions",
    io_type: IoType = IoType.INT8,
    allow_float_fallback: bool = False,
    num_samples: int | None = None,
    training: TrainingRows | None = None,
    gates: Sequence = (),
    progress: Progress | None = None,
) -> CompareResult:
    """Convert ``model`` in every mode, add training rows, evaluate everything on ``data``, check ``gates``.

    Files are written to ``output_dir`` as ``<variant>.tflite``. The reference is the ``fp32`` variant when it
    is among the modes, else the first variant.
    """
    from tflite_opt import evaluation

    progress = ensure(progress)
    if training is not None and training.any and not model.is_keras:
        raise DataError("--qat/--prune/--cluster fine-tune a Keras model (.keras/.h5); a SavedModel cannot be "
                        "fine-tuned — run compare on the Keras file")
    output_dir.mkdir(parents=True, exist_ok=True)
    sources: list[evaluation.VariantSource] = []
    files: dict[str, Path] = {}
    modes = [Mode(m) for m in modes]
    # The source model is exported once; every conversion below reuses this SavedModel.
    with progress.task("Exporting the model"):
        model.saved_model_dir  # noqa: B018 - property with a side effect (the one export)

    def add(name: str, mode: str, make: Callable[[], bytes]) -> None:
        path = output_dir / f"{name}.tflite"
        try:
            content = make()
        except TfliteOptError as exc:
            sources.append(evaluation.VariantSource(name=name, path=str(path), mode=mode, error=str(exc)))
            progress.warn(f"{name}: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - one variant's crash must not stop the others
            message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            sources.append(evaluation.VariantSource(name=name, path=str(path), mode=mode, error=message[:500]))
            progress.warn(f"{name}: {message[:500]}")
            return
        atomic_write_bytes(path, content)
        files[name] = path
        sources.append(evaluation.VariantSource(name=name, path=str(path), content=content, mode=mode))

    with progress.task("Converting", total=len(modes)) as task:
        for mode in modes:
            task.update(description=f"Converting ({mode.value})")
            options = ConversionOptions(
                mode=mode, io_type=io_type if mode == Mode.INT8 else IoType.INT8,
                allow_float_fallback=allow_float_fallback, num_samples=num_samples,
            )
            needs_data = mode.needs_representative_data
            if needs_data and representative is None:
                sources.append(evaluation.VariantSource(
                    name=mode.value, mode=mode.value, path=str(output_dir / f"{mode.value}.tflite"),
                    error="needs representative data (--representative-data)"))
            else:
                add(mode.value, mode.value,
                    lambda options=options: convert(model, options, representative if needs_data else None, progress))
            task.advance()

    if training is not None and training.any:
        _add_training_rows(model, training, representative, io_type, add, progress)

    names = [s.name for s in sources]
    reference = Mode.FP32.value if Mode.FP32.value in names else (names[0] if names else None)
    run = evaluation.evaluate_variants(sources, data, reference=reference, options=evaluation_options,
                                       progress=progress)
    report = evaluation.build_report(run, evaluation_options, gates)
    return CompareResult(report=report, files=files)


def write_reports(report: "Report", output_dir: Path, plot_path: str | Path | None = None) -> None:
    """``report.json`` and ``report.md`` into ``output_dir`` (atomically), and the trade-off plot if asked for."""
    from tflite_opt import report as report_mod
    from tflite_opt.fileio import atomic_write_text

    atomic_write_text(output_dir / "report.json", report_mod.render_text(report, "json"))
    atomic_write_text(output_dir / "report.md", report_mod.render_text(report, "markdown"))
    if plot_path:
        from tflite_opt.plotting import plot_tradeoff

        plot_tradeoff(report, plot_path)


def _add_training_rows(model, training: TrainingRows, representative, io_type, add, progress) -> None:
    """QAT, pruning and clustering rows, each fine-tuned from the same source model (which stays unchanged)."""
    from tflite_opt import training as tfmot_training

    calibration = representative if representative is not None else training.train

    def config(default_learning_rate: float):
        return tfmot_training.FitConfig(
            epochs=training.epochs, batch_size=training.batch_size,
            learning_rate=training.learning_rate or default_learning_rate, val_split=training.validation_split,
            seed=training.seed,
        )

    if training.qat:
        def qat() -> bytes:
            result = tfmot_training.qat_model(model.keras_model, training.train, config=config(1e-4), progress=progress)
            options = ConversionOptions(mode=Mode.INT8, io_type=io_type)
            return convert_keras_model(result.model, options, calibration, progress)

        add("qat_int8", "qat", qat)
    if training.prune_sparsity is not None:
        def prune() -> bytes:
            result = tfmot_training.prune_model(model.keras_model, training.train, sparsity=training.prune_sparsity,
                                                config=config(1e-3), progress=progress)
            return convert_keras_model(result.model, ConversionOptions(mode=Mode.FP32, sparsity=True), None, progress)

        add(f"pruned_{int(round(training.prune_sparsity * 100))}", "prune", prune)
    if training.cluster_count is not None:
        def cluster() -> bytes:
            result = tfmot_training.cluster_model(model.keras_model, training.train, clusters=training.cluster_count,
                                                  config=config(1e-4), progress=progress)
            return convert_keras_model(result.model, ConversionOptions(mode=Mode.FP32), None, progress)

        add(f"clustered_{training.cluster_count}", "cluster", cluster)

"""``compare``: one model, every conversion mode (and optional training-time rows), measured side by side.

The source model is loaded and exported to a SavedModel once; every mode converts from that export. A variant
whose conversion or training fails is reported with its ``error`` and never stops the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tflite_opt.errors import DataError, TfliteOptError
from tflite_opt.fileio import atomic_write_bytes
from tflite_opt.modes import Backend, IoType, Mode, parse_variant_mode
from tflite_opt.progress import Progress, ensure
from tflite_opt.quantize.conversion import ConversionOptions, convert, convert_keras_model, quantize_float_tflite
from tflite_opt.quantize.recipes import needs_calibration

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.measure.evaluation import EvaluationOptions
    from tflite_opt.models import LoadedModel
    from tflite_opt.reporting.report import Report
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
    modes: Sequence[str],
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

    ``modes`` are ``MODE`` or ``BACKEND:MODE`` items (:func:`tflite_opt.modes.parse_variant_mode`). Files are
    written to ``output_dir`` as ``<variant>.tflite``. The reference is the ``fp32`` variant when it is among the
    modes, else the first variant. Quantizer rows quantize the converter's fp32 file, made once.
    """
    from tflite_opt.measure import evaluation

    progress = ensure(progress)
    if training is not None and training.any and not model.is_keras:
        raise DataError(
            "--qat/--prune/--cluster fine-tune a Keras model (.keras/.h5); a SavedModel cannot be "
            "fine-tuned — run compare on the Keras file"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    rows = _Rows(output_dir, progress)
    # The source model is exported once; every conversion below reuses this SavedModel.
    with progress.task("Exporting the model"):
        model.saved_model_dir  # noqa: B018 - property with a side effect (the one export)
    converters = _Converters(model, representative, progress)
    with progress.task("Converting", total=len(modes)) as task:
        for token in modes:
            mode, backend, name = parse_variant_mode(token)
            task.update(description=f"Converting ({name})")
            options = ConversionOptions(
                mode=mode,
                io_type=io_type if mode == Mode.INT8 else IoType.INT8,
                backend=backend,
                allow_float_fallback=allow_float_fallback,
                num_samples=num_samples,
            )
            if mode.needs_representative_data and representative is None:
                rows.failed(name, mode.value, backend, "needs representative data (--representative-data)")
            else:
                rows.add(name, mode.value, lambda options=options: converters.make(options), backend)
            task.advance()

    if training is not None and training.any:
        _add_training_rows(model, training, representative, io_type, rows.add, progress)

    names = [s.name for s in rows.sources]
    reference = Mode.FP32.value if Mode.FP32.value in names else (names[0] if names else None)
    run = evaluation.evaluate_variants(
        rows.sources, data, reference=reference, options=evaluation_options, progress=progress
    )
    for variant in run.variants:
        variant.backend = rows.backends.get(variant.name)
    report = evaluation.build_report(run, evaluation_options, gates)
    return CompareResult(report=report, files=rows.files)


class _Rows:
    """The variants of a compare run as they are made: written files, failures, and which backend made each."""

    def __init__(self, output_dir: Path, progress: Progress) -> None:
        from tflite_opt.measure import evaluation

        self._evaluation = evaluation
        self.output_dir = output_dir
        self.progress = progress
        self.sources: list = []
        self.files: dict[str, Path] = {}
        self.backends: dict[str, str] = {}

    def failed(self, name: str, mode: str, backend: Backend | None, error: str) -> None:
        path = self.output_dir / f"{name}.tflite"
        self.sources.append(self._evaluation.VariantSource(name=name, path=str(path), mode=mode, error=error))
        if backend is not None:
            self.backends[name] = backend.value

    def add(self, name: str, mode: str, make: Callable[[], bytes], backend: Backend | None = Backend.CONVERTER) -> None:
        path = self.output_dir / f"{name}.tflite"
        try:
            content = make()
        except TfliteOptError as exc:  # a variant that cannot be made is reported; a bug in our code propagates
            self.failed(name, mode, backend, str(exc))
            return
        atomic_write_bytes(path, content)
        self.files[name] = path
        self.sources.append(self._evaluation.VariantSource(name=name, path=str(path), content=content, mode=mode))
        if backend is not None:
            self.backends[name] = backend.value


class _Converters:
    """Both backends from the one export: the quantizer quantizes the converter's fp32 file, made once."""

    def __init__(self, model: "LoadedModel", representative: "Dataset | None", progress: Progress) -> None:
        self.model = model
        self.representative = representative
        self.progress = progress
        self._fp32: bytes | None = None

    def make(self, options: ConversionOptions) -> bytes:
        data = self.representative if needs_calibration(options) else None
        if options.resolved_backend == Backend.CONVERTER:
            content = convert(self.model, options, data, self.progress)
            if options.mode == Mode.FP32 and self._fp32 is None:
                self._fp32 = content
            return content
        if self._fp32 is None:
            self._fp32 = convert(self.model, ConversionOptions(mode=Mode.FP32), None, self.progress)
        return quantize_float_tflite(self._fp32, self.model.signature_key, options, data, self.progress).content


def write_reports(report: "Report", output_dir: Path, plot_path: str | Path | None = None) -> None:
    """``report.json`` and ``report.md`` into ``output_dir`` (atomically), and the trade-off plot if asked for."""
    from tflite_opt.fileio import atomic_write_text
    from tflite_opt.reporting import report as report_mod

    atomic_write_text(output_dir / "report.json", report_mod.render_text(report, "json"))
    atomic_write_text(output_dir / "report.md", report_mod.render_text(report, "markdown"))
    if plot_path:
        from tflite_opt.reporting.plotting import plot_tradeoff

        plot_tradeoff(report, plot_path)


def _add_training_rows(model, training: TrainingRows, representative, io_type, add, progress) -> None:
    """QAT, pruning and clustering rows, each fine-tuned from the same source model (which stays unchanged)."""
    from tflite_opt.training.clustering import cluster_model
    from tflite_opt.training.fit import FitConfig
    from tflite_opt.training.pruning import prune_model
    from tflite_opt.training.qat import qat_model

    calibration = representative if representative is not None else training.train

    def config(default_learning_rate: float):
        return FitConfig(
            epochs=training.epochs,
            batch_size=training.batch_size,
            learning_rate=training.learning_rate or default_learning_rate,
            val_split=training.validation_split,
            seed=training.seed,
        )

    if training.qat:

        def qat() -> bytes:
            result = qat_model(model.keras_model, training.train, config=config(1e-4), progress=progress)
            options = ConversionOptions(mode=Mode.INT8, io_type=io_type)
            return convert_keras_model(result.model, options, calibration, progress)

        add("qat_int8", "qat", qat)
    if training.prune_sparsity is not None:

        def prune() -> bytes:
            result = prune_model(
                model.keras_model,
                training.train,
                sparsity=training.prune_sparsity,
                config=config(1e-3),
                progress=progress,
            )
            return convert_keras_model(result.model, ConversionOptions(mode=Mode.FP32, sparsity=True), None, progress)

        add(f"pruned_{int(round(training.prune_sparsity * 100))}", "prune", prune)
    if training.cluster_count is not None:

        def cluster() -> bytes:
            result = cluster_model(
                model.keras_model,
                training.train,
                clusters=training.cluster_count,
                config=config(1e-4),
                progress=progress,
            )
            return convert_keras_model(result.model, ConversionOptions(mode=Mode.FP32), None, progress)

        add(f"clustered_{training.cluster_count}", "cluster", cluster)

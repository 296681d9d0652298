"""The comparison of teacher, scratch and distilled student: their ``.tflite`` files converted in one mode and
measured by the evaluation engine (size, accuracy, agreement with the teacher, latency), as a SPEC §4 report and a
``TextTable``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tflite_opt.errors import TfliteOptError
from tflite_opt.progress import ensure
from tflite_opt.reporting.tables import Note, TextTable
from tflite_opt.representative_data import Dataset
from tflite_opt.training.distillation.pairing import with_teacher_aliases
from tflite_opt.training.distillation.train import TEACHER_NAME, DistillResult

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.measure.evaluation import EvaluationOptions
    from tflite_opt.models import LoadedModel
    from tflite_opt.progress import Progress
    from tflite_opt.quantize.conversion import ConversionOptions
    from tflite_opt.reporting.report import Report, VariantResult


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
    from tflite_opt.measure import evaluation
    from tflite_opt.quantize import conversion

    progress = ensure(progress)
    pair = result.pair
    teacher_representative = None if representative is None else with_teacher_aliases(representative, pair)

    def convert_source(name, make) -> "evaluation.VariantSource":
        try:
            with progress.task(f"Converting the {name} ({options.mode.value})"):
                return evaluation.VariantSource(name=name, content=make(), mode=options.mode.value)
        except TfliteOptError as exc:
            return evaluation.VariantSource(name=name, mode=options.mode.value, error=str(exc))

    sources = [
        convert_source(TEACHER_NAME, lambda: conversion.convert(teacher, options, teacher_representative, progress))
    ]
    trained = [s for s in (result.baseline, result.student) if s is not None]
    for student in trained:
        if student is result.student and (student_tflite is not None or student_error is not None):
            sources.append(
                evaluation.VariantSource(
                    name=student.name, content=student_tflite, mode=options.mode.value, error=student_error
                )
            )
            continue
        sources.append(
            convert_source(
                student.name,
                lambda s=student: conversion.convert_keras_model(s.model, options, representative, progress),
            )
        )
    data = None if result.val is None else with_teacher_aliases(result.val, pair)
    evaluation_options = evaluation_options or evaluation.EvaluationOptions()
    run = evaluation.evaluate_variants(
        sources, data, reference=TEACHER_NAME, options=evaluation_options, progress=progress
    )
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
    from tflite_opt.reporting.report import format_size

    def pct(value: float | None) -> str:
        return "—" if value is None else f"{value * 100:.2f}%"

    rows = []
    for row in comparison.rows:
        variant = row.variant
        rows.append(
            (
                row.name,
                f"{row.parameters:,}",
                format_size(variant.size_bytes) if variant.size_bytes else "—",
                pct(variant.accuracy),
                pct(variant.agreement),
                "—" if variant.latency_ms is None else f"{variant.latency_ms.median:.3f} ms",
            )
        )
    return rows


def comparison_table(comparison: Comparison) -> TextTable:
    """The table, then a note on how it was measured and any errors."""
    settings = comparison.report.settings
    samples = "no validation data" if settings.num_samples is None else f"{settings.num_samples} validation samples"
    latency = (
        f"latency: median of {settings.runs} runs, {settings.threads} thread(s)"
        if settings.runs
        else "latency not measured (--runs 0)"
    )
    notes = [
        Note(
            f".tflite files in {comparison.mode} mode; accuracy on {samples}; agreement: top-1 equal to the "
            f"teacher's; {latency}",
            "dim",
        )
    ]
    notes += [Note(f"{row.name}: {row.variant.error}", "error") for row in comparison.rows if row.variant.error]
    return TextTable(
        headers=COMPARISON_HEADERS,
        rows=comparison_rows(comparison),
        right=frozenset(range(1, 6)),
        error_rows=frozenset(i for i, row in enumerate(comparison.rows) if row.variant.error),
        notes=notes,
    )

"""Measure ``.tflite`` files on a dataset: what each one costs and buys, against a reference.

:func:`evaluate_variants` measures every file on the same data (loaded once per distinct input description) with
one pool of workers (:mod:`tflite_opt.measure.workers`) for the whole call. The fixed costs of a file are work for
the same workers, not extra threads competing with them for the cores: a helper computes sha256 and gzip (which
release the GIL) while the calling thread walks the flatbuffer (which holds it), then both join the inference.
Everything is done before latency is timed, and whatever fails, those facts have been gathered.

Metrics (SPEC §4; computed by :mod:`tflite_opt.measure.metrics`):

* ``accuracy`` / ``top5``: top-1 / top-5 against the labels, on the **accuracy output**: the output named by
  ``output=`` (the ``--output NAME`` option), else the signature output whose name sorts first (for a model with
  outputs ``digit`` and ``parity`` that is ``digit``). Outputs are flattened to ``(samples, classes)``; a
  single-unit output is a binary classifier (threshold 0.5 when all values lie in [0, 1], else 0 for logits).
  ``top5`` is ``None`` with fewer than 5 classes.
* ``agreement``: share of samples whose top-1 (on the accuracy output) equals the reference's.
* ``sqnr_db``: ``10·log10(Σ ref² / Σ (ref − out)²)`` over **all** outputs matched by name (a single output on
  both sides is matched regardless of name), in real units. Identical outputs report :data:`SQNR_CAP_DB`.
* ``size_bytes``, ``gzip_bytes`` (gzip level 6, how the TF model-optimization guides measure compressibility),
  ``sha256``, ``sparsity`` (share of zero kernel weights, see :mod:`tflite_opt.measure.inspection`).
* ``latency_ms``: :mod:`tflite_opt.measure.latency`; ``speedup`` = reference median / this median.
* ``mode``: given by the caller (``compare``), else inferred from the file's contents.

The metric helpers and :func:`run_dataset` are importable from here too. No TensorFlow import here.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tflite_opt.errors import DataError, EvaluationError, TfliteOptError
from tflite_opt.measure.metrics import (
    GZIP_LEVEL,
    SQNR_CAP_DB,
    gzip_size,
    num_classes,
    pair_outputs,
    pick_accuracy_output,
    sqnr_db,
    top1,
    topk_accuracy,
)
from tflite_opt.measure.preflight import DataCache, check_data_fits, describe_files, signature_difference
from tflite_opt.measure.runtime import ModelRunner, SignatureInfo, read_model_bytes
from tflite_opt.measure.workers import (
    MAX_BATCH,
    TARGET_BATCH_BYTES,
    WorkerPool,
    available_cpus,
    run_batches,
    run_dataset,
    worker_count,
)
from tflite_opt.progress import Progress, ensure
from tflite_opt.reporting.report import Report, Settings, VariantResult
from tflite_opt.representative_data import Dataset
from tflite_opt.representative_data.ranges import clipping_warnings

__all__ = [
    "GZIP_LEVEL",
    "MAX_BATCH",
    "SQNR_CAP_DB",
    "TARGET_BATCH_BYTES",
    "EvaluationOptions",
    "EvaluationRun",
    "MeasuredVariant",
    "RunOutputs",
    "VariantSource",
    "available_cpus",
    "build_report",
    "evaluate_variants",
    "gzip_size",
    "num_classes",
    "pick_accuracy_output",
    "run_dataset",
    "sqnr_db",
    "top1",
    "topk_accuracy",
    "variant_names",
]


@dataclass
class VariantSource:
    """A file to evaluate.

    Attributes:
        name: the variant's name in the report (unique within a run).
        path: where the file is (shown in the report; read when ``content`` is not given).
        content: the file's bytes, when the caller already holds them (e.g. ``compare`` after converting).
        mode: the post-training mode that produced it; inferred from the file when ``None``.
        error: the variant failed before it could be measured (e.g. its conversion failed); it is reported
            with this error and no measurements.
    """

    name: str
    path: str = ""
    content: bytes | None = None
    mode: str | None = None
    error: str | None = None


@dataclass
class EvaluationOptions:
    """How to evaluate (the command-line options of ``evaluate``; ``compare`` passes the same)."""

    threads: int = 1
    xnnpack: bool = True
    warmup: int = 5
    runs: int = 50
    signature: str | None = None
    output: str | None = None
    preprocess: str = "unit"
    num_samples: int | None = None
    allow_random: bool = True
    batch_size: int | None = None
    workers: int | None = None
    input_shapes: dict[str, tuple[int | None, ...]] = field(default_factory=dict)


@dataclass
class RunOutputs:
    """What one file produced on the dataset (real-valued outputs by name) — kept to compare with the reference."""

    outputs: dict[str, np.ndarray]
    accuracy_output: str | None
    predictions: np.ndarray | None


@dataclass
class MeasuredVariant:
    """A variant measured by an earlier :func:`evaluate_variants` call, to pass back in instead of measuring it
    again (``auto`` measures the fp32 reference once and compares every trial with it).

    It must have been measured on the same data with the same options.
    """

    result: VariantResult
    outputs: RunOutputs | None


@dataclass
class EvaluationRun:
    """The measured variants plus what is needed to build a :class:`~tflite_opt.reporting.report.Report`.

    ``outputs`` holds each measured variant's outputs on the data (``None`` without data or on failure), for
    :meth:`measured`.
    """

    variants: list[VariantResult]
    reference: str | None
    num_samples: int | None
    warnings: list[str] = field(default_factory=list)
    outputs: dict[str, RunOutputs | None] = field(default_factory=dict, repr=False)

    def measured(self, name: str) -> MeasuredVariant:
        """Variant ``name`` as measured here, for ``evaluate_variants(..., measured={name: ...})``."""
        result = next(v for v in self.variants if v.name == name)
        return MeasuredVariant(copy.deepcopy(result), self.outputs.get(name))


def variant_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Unique variant names for files: the file stem, with the parent folder (then a counter) on clashes."""
    stems = [Path(p).stem for p in paths]
    names = []
    for path, stem in zip(paths, stems):
        name = stem
        if stems.count(stem) > 1:
            name = f"{Path(path).parent.name}/{stem}" if Path(path).parent.name else stem
        base, counter = name, 2
        while name in names:
            name = f"{base}#{counter}"
            counter += 1
        names.append(name)
    return names


def _file_bytes_facts(content: bytes, result: VariantResult) -> None:
    """sha256 and gzip size of a file, into ``result`` (both release the GIL; fine on any bytes)."""
    from tflite_opt.measure.inspection import file_digest

    result.sha256 = file_digest(content)
    result.gzip_bytes = gzip_size(content)


def _flatbuffer_facts(content: bytes, label: str, result: VariantResult) -> None:
    """Sparsity and (unless given) mode of a file the interpreter's verifier has accepted, into ``result``."""
    from tflite_opt.measure import inspection

    details = inspection.analyze(content, source=label)
    result.sparsity = details["sparsity"]
    result.integer_only = details["integer_only"]
    result.file_mode = details["mode"]
    if result.mode is None:
        result.mode = details["mode"]


def _measure(
    source: VariantSource,
    result: VariantResult,
    data: DataCache,
    options: EvaluationOptions,
    progress: Progress,
    pool: WorkerPool,
) -> RunOutputs | None:
    """Fill ``result`` for one file; returns its outputs on the data (``None`` without data).

    Hashing and gzip go to a helper at once (or run here without helpers); the file is loaded, walked and run on
    the data meanwhile, then timed.
    """
    content = source.content if source.content is not None else read_model_bytes(source.path)
    label = source.path or source.name
    result.size_bytes = len(content)
    hashing = pool.submit(_file_bytes_facts, content, result)
    try:
        run, dataset = _load_and_run(content, label, source, result, data, options, progress, pool)
    finally:
        hashing.result()

    if options.runs > 0:
        from tflite_opt.measure.latency import measure_latency

        sample = None
        if dataset is not None:
            sample = {name: array[:1] for name, array in dataset.inputs.items()}
        with progress.task(f"{source.name}: latency, {options.runs} runs", total=None):
            result.latency_ms = measure_latency(
                content,
                threads=options.threads,
                xnnpack=options.xnnpack,
                warmup=options.warmup,
                runs=options.runs,
                sample=sample,
                signature=options.signature,
                source=label,
                input_shapes=options.input_shapes,
            )
    return run


def _load_and_run(
    content: bytes,
    label: str,
    source: VariantSource,
    result: VariantResult,
    data: DataCache,
    options: EvaluationOptions,
    progress: Progress,
    pool: WorkerPool,
) -> tuple[RunOutputs | None, Dataset | None]:
    # The interpreter's verifier rejects damaged files here, before the flatbuffer is walked. This runner
    # (delegate not applied until it is prepared) is then the calling thread's inference worker.
    runner = ModelRunner(
        content,
        threads=1,
        xnnpack=options.xnnpack,
        signature=options.signature,
        source=label,
        input_shapes=options.input_shapes,
    )
    # The walk runs here while a helper hashes: it holds the GIL, the hashing does not (beside the inference it
    # would stall the workers). Its error — a file the verifier accepted but the flatbuffer reader cannot walk — is
    # reported before any from the data or the inference: neither is tried then.
    _flatbuffer_facts(content, label, result)
    dataset = data.fitted(runner.signature)
    if dataset is None:
        return None, None
    specs = runner.signature.input_specs
    data.note(clipping_warnings(specs, dataset.inputs, label, dataset.source, dataset.known_ranges()))
    with progress.task(f"{source.name}: {len(dataset)} samples", total=len(dataset)) as task:
        outputs = run_batches(
            content,
            dataset,
            pool=pool,
            first=runner,
            signature=options.signature,
            xnnpack=options.xnnpack,
            batch_size=options.batch_size,
            source=label,
            on_batch=task.advance,
            input_shapes=options.input_shapes,
        )
    return _score(outputs, runner.signature, dataset, options, result), dataset


def _score(
    outputs: dict[str, np.ndarray],
    info: SignatureInfo,
    dataset: Dataset,
    options: EvaluationOptions,
    result: VariantResult,
) -> RunOutputs:
    """Top-1 predictions on the accuracy output; accuracy and top-5 into ``result`` when there are labels."""
    accuracy_output = pick_accuracy_output([b.name for b in info.outputs], options.output)
    predictions = top1(outputs[accuracy_output])
    if dataset.labels is not None:
        try:
            dataset.check_labels(num_classes(outputs[accuracy_output]))
        except DataError as exc:
            raise DataError(f"{exc} (output '{accuracy_output}')") from exc
        result.accuracy = float(np.mean(predictions == dataset.labels))
        result.top5 = topk_accuracy(outputs[accuracy_output], dataset.labels, 5)
    return RunOutputs(outputs, accuracy_output, predictions)


def _compare_to_reference(
    result: VariantResult, run: RunOutputs | None, ref: VariantResult, ref_run: RunOutputs | None
) -> None:
    if ref.size_bytes and result.size_bytes:
        result.size_ratio = result.size_bytes / ref.size_bytes
    if result.accuracy is not None and ref.accuracy is not None:
        result.accuracy_delta = result.accuracy - ref.accuracy
    if run is not None and ref_run is not None:
        if result is not ref:
            result.sqnr_db = sqnr_db(ref_run.outputs, run.outputs)
        # Agreement only makes sense when both accuracy outputs are the same (matched) output.
        pairs = dict(pair_outputs(ref_run.outputs, run.outputs))
        if pairs.get(ref_run.accuracy_output) == run.accuracy_output and len(run.predictions) == len(
            ref_run.predictions
        ):
            result.agreement = float(np.mean(run.predictions == ref_run.predictions))
    if result.latency_ms is not None and ref.latency_ms is not None and result.latency_ms.median > 0:
        result.speedup = ref.latency_ms.median / result.latency_ms.median


def evaluate_variants(
    sources: Sequence[VariantSource],
    data: str | os.PathLike | Dataset | None,
    *,
    reference: str | None = None,
    options: EvaluationOptions | None = None,
    progress: Progress | None = None,
    measured: Mapping[str, MeasuredVariant] | None = None,
) -> EvaluationRun:
    """Measure every file; a file that fails is reported with ``error`` and the others are still measured.

    Args:
        sources: the files, in report order. Names must be unique.
        data: a data path (``.npz``/``.npy``/image folder/``"random"``), a loaded :class:`Dataset` (real values,
            keyed by input name; a one-input model takes a one-array dataset under any key), or ``None`` (size,
            sparsity and latency only). Labelled data gives accuracy. It is validated against each file's
            inputs, and loaded once per distinct input description.
        reference: name of the source that ratios, deltas, agreement and SQNR are against (default: the first).
        options: see :class:`EvaluationOptions`.
        progress: progress reporter (default: silent).
        measured: variants already measured on the same data with the same options (by name, e.g. from
            :meth:`EvaluationRun.measured`): those sources are not run again, their results and outputs are
            reused (copied) and compared as usual.

    Returns:
        The results in the order of ``sources``.

    Raises:
        EvaluationError: no sources, duplicate names, or an unknown reference name.
        DataError: the data fits none of the files (checked before anything is measured).
    """
    options = options or EvaluationOptions()
    progress = ensure(progress)
    reference = _check_names(sources, reference)
    cache = DataCache(data, options)
    # A variant that was never made has no file: its path, size and digest are unknown (null), not "" or 0.
    results = {
        s.name: VariantResult(name=s.name, mode=s.mode, path=(s.path or None) if s.error is None else None)
        for s in sources
    }
    runs: dict[str, RunOutputs | None] = {}
    # The reference goes first so that a failure to read the data is reported against it.
    order = sorted(sources, key=lambda s: s.name != reference)
    measured = measured or {}
    signatures = describe_files([s for s in order if s.name not in measured and s.error is None], options)
    check_data_fits(signatures, cache)
    with WorkerPool(worker_count(options.workers)) as pool:  # one pool for every file
        for source in order:
            if source.name in measured:
                results[source.name], runs[source.name] = _reuse(source.name, measured[source.name])
            elif source.error is not None:
                results[source.name].error = source.error
            else:
                try:
                    runs[source.name] = _measure(source, results[source.name], cache, options, progress, pool)
                except TfliteOptError as exc:  # one broken file must not stop the others; a bug in our code propagates
                    results[source.name].error = str(exc)
    num_samples = None
    for source in order:
        if runs.get(source.name) is not None:
            num_samples = len(runs[source.name].predictions)

    _compare_all(results, runs, reference, signatures, progress)
    for warning in cache.warnings:
        progress.warn(warning)
    return EvaluationRun(
        variants=[results[s.name] for s in sources],
        reference=reference,
        num_samples=num_samples,
        warnings=list(cache.warnings),
        outputs=runs,
    )


def _compare_all(results, runs, reference: str, signatures, progress: Progress) -> None:
    """Fields against the reference, for every variant with the reference's signature (others are warned about)."""
    ref = results[reference]
    if not ref.ok:
        return
    for name, result in results.items():
        difference = signature_difference(signatures.get(reference), signatures.get(name))
        if difference is not None:
            progress.warn(
                f"{name} is not the same model as the reference {reference} ({difference}): its size ratio, "
                "speedup, Δ accuracy, agreement and SQNR are left empty"
            )
        elif result.ok:
            _compare_to_reference(result, runs.get(name), ref, runs.get(reference))


def _check_names(sources: Sequence[VariantSource], reference: str | None) -> str:
    """The reference's name (default: the first source's).

    Raises:
        EvaluationError: no sources, duplicate names, or an unknown reference name.
    """
    if not sources:
        raise EvaluationError("no .tflite files to evaluate")
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise EvaluationError(f"variant names must be unique; repeated: {', '.join(duplicates)}")
    reference = reference if reference is not None else names[0]
    if reference not in names:
        raise EvaluationError(f"the reference {reference!r} is not among the variants {', '.join(names)}")
    return reference


def _reuse(name: str, earlier: MeasuredVariant) -> tuple[VariantResult, RunOutputs | None]:
    """A variant measured before, copied under ``name``."""
    result = copy.deepcopy(earlier.result)
    result.name = name
    return result, earlier.outputs


def build_report(run: EvaluationRun, options: EvaluationOptions, gates=()) -> Report:
    """Wrap an :class:`EvaluationRun` into a :class:`Report` and check ``gates`` (parsed gate specs)."""
    from tflite_opt.reporting.gates import check_gates

    report = Report(
        settings=Settings(
            threads=options.threads,
            xnnpack=options.xnnpack,
            warmup=options.warmup,
            runs=options.runs,
            num_samples=run.num_samples,
        ),
        reference=run.reference,
        variants=run.variants,
    )
    report.gates = check_gates(gates, report.variants, report.reference)
    return report

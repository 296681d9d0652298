"""Run ``.tflite`` files on a dataset, fast, and compute what each one costs and buys.

Speed: samples are run in batches — the batch axis is resized when the file's ``shape_signature`` allows it
(``-1``), otherwise samples go one by one (the file's fixed batch) — and the batches are spread over one
single-threaded interpreter per CPU core (``invoke`` releases the GIL). The last, short batch is padded and the
padding's outputs dropped, so the interpreter is allocated once per worker.

Integer I/O: a file whose inputs/outputs are quantized (int8/uint8/int16 with a scale) is fed by quantizing the
real-valued samples with each input's scale and zero point, and its outputs are dequantized, so an int8 file and
its float source are compared on the same data in the same units.

Metrics (SPEC §4):

* ``accuracy`` / ``top5``: top-1 / top-5 against the labels, on the **accuracy output**: the output named by
  ``output=`` (the ``--output NAME`` option), else the signature output whose name sorts first (for a model with
  outputs ``digit`` and ``parity`` that is ``digit``). Outputs are flattened to ``(samples, classes)``; a
  single-unit output is a binary classifier (threshold 0.5 when all values lie in [0, 1], else 0 for logits).
  ``top5`` is ``None`` with fewer than 5 classes.
* ``agreement``: share of samples whose top-1 (on the accuracy output) equals the reference's.
* ``sqnr_db``: ``10·log10(Σ ref² / Σ (ref − out)²)`` over **all** outputs matched by name (a single output on
  both sides is matched regardless of name), in real units. Identical outputs report :data:`SQNR_CAP_DB`.
* ``size_bytes``, ``gzip_bytes`` (gzip level 6, how the TF model-optimization guides measure compressibility),
  ``sha256``, ``sparsity`` (share of zero kernel weights, see :mod:`tflite_opt.inspection`).
* ``latency_ms``: :mod:`tflite_opt.latency`; ``speedup`` = reference median / this median.
* ``mode``: given by the caller (``compare``), else inferred from the file's contents.

No TensorFlow import here.
"""

from __future__ import annotations

import gzip
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from tflite_opt.errors import DataError, EvaluationError, TfliteOptError
from tflite_opt.progress import Progress, ensure
from tflite_opt.report import Report, Settings, VariantResult
from tflite_opt.representative_data import Dataset, load_data
from tflite_opt.runtime import ModelRunner, SignatureInfo, dequantize, quantize, read_model_bytes

SQNR_CAP_DB = 200.0
GZIP_LEVEL = 6
# Samples per invoke: one batch of inputs is about this many bytes, at most MAX_BATCH samples. Larger batches
# stop paying off once the per-invoke Python overhead is amortized, and start losing cache locality
# (measured: the digits CNN is fastest around 64, MobileNetV2 at 96x96 around 4).
TARGET_BATCH_BYTES = 512 << 10
MAX_BATCH = 64


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


@dataclass
class RunOutputs:
    """What one file produced on the dataset (real-valued outputs by name) — kept to compare with the reference."""

    outputs: dict[str, np.ndarray]
    accuracy_output: str | None
    predictions: np.ndarray | None


@dataclass
class EvaluationRun:
    """The measured variants plus what is needed to build a :class:`~tflite_opt.report.Report`."""

    variants: list[VariantResult]
    reference: str | None
    num_samples: int | None
    warnings: list[str] = field(default_factory=list)


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


# ------------------------------------------------------------------------------------------------ running data

def prepare_inputs(
    signature: SignatureInfo, sample_inputs: Mapping[str, np.ndarray], batch: int, *, source: str = "model"
) -> dict[str, np.ndarray]:
    """Real-valued samples -> stored-dtype arrays of exactly ``batch`` rows (quantized, padded by repetition).

    Raises:
        DataError: an input is missing from ``sample_inputs``.
    """
    arrays = {}
    for binding in signature.inputs:
        if binding.name not in sample_inputs:
            raise DataError(f"no data for input '{binding.name}' of {source}")
        values = np.asarray(sample_inputs[binding.name])
        if binding.is_quantized:
            values = quantize(values, binding.spec)
        else:
            values = values.astype(np.dtype(binding.spec.dtype), copy=False)
        if len(values) < batch:
            values = np.concatenate([values, np.repeat(values[-1:], batch - len(values), axis=0)])
        arrays[binding.name] = values
    return arrays


def available_cpus() -> int:
    """CPU cores this process may run on (respects affinity masks and container CPU sets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def _auto_batch(signature: SignatureInfo) -> int:
    sample_bytes = 0
    for binding in signature.inputs:
        dims = [max(int(d), 1) for d in binding.shape_signature[1:]]
        sample_bytes += int(np.prod(dims)) * np.dtype(binding.spec.dtype).itemsize
    return int(max(1, min(MAX_BATCH, TARGET_BATCH_BYTES // max(sample_bytes, 1))))


def run_dataset(
    content: bytes,
    dataset: Dataset,
    *,
    signature: str | None = None,
    xnnpack: bool = True,
    batch_size: int | None = None,
    workers: int | None = None,
    source: str = "model",
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Run a model on every sample and return its outputs by signature name, in real units.

    Args:
        content: the ``.tflite`` bytes.
        dataset: samples keyed by input name (real values, already validated against the model).
        signature: signature key (default ``serving_default``/the first).
        xnnpack: apply the XNNPACK delegate.
        batch_size: samples per invoke for files with a resizable batch axis (default: by input size).
        workers: interpreters run in parallel (default: one per CPU core).
        source: name for messages.
        on_batch: called with the number of samples after each batch (progress; may be called from threads).

    Returns:
        output name -> array with a leading axis of ``len(dataset)``; quantized outputs are dequantized.

    Raises:
        EvaluationError: the model cannot be loaded or run.
    """
    first = ModelRunner(content, threads=1, xnnpack=xnnpack, signature=signature, source=source)
    info = first.signature
    n = len(dataset)
    if n == 0:
        raise DataError(f"no samples to run {source} on")
    want = batch_size or _auto_batch(info)
    batch = first.prepare(want)
    starts = list(range(0, n, batch))
    workers = max(1, min(workers or available_cpus(), len(starts)))
    shards = [starts[i::workers] for i in range(workers)]

    def work(runner: ModelRunner | None, shard: list[int]) -> list[tuple[int, dict[str, np.ndarray]]]:
        # Each worker builds its own interpreter in its own thread: creation and XNNPACK's weight packing
        # then run in parallel too.
        if runner is None:
            runner = ModelRunner(content, threads=1, xnnpack=xnnpack, signature=signature, source=source)
        runner.prepare(want)
        results = []
        for start in shard:
            stop = min(start + batch, n)
            chunk = {name: array[start:stop] for name, array in dataset.inputs.items()}
            outputs = runner.run(prepare_inputs(info, chunk, batch, source=source))
            results.append((start, {k: v[: stop - start] for k, v in outputs.items()}))
            if on_batch is not None:
                on_batch(stop - start)
        return results

    runners = [first] + [None] * (workers - 1)
    if workers == 1:
        pieces = work(first, shards[0])
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tflite-opt-eval") as pool:
            futures = [pool.submit(work, runner, shard) for runner, shard in zip(runners, shards)]
            pieces = [piece for future in futures for piece in future.result()]
    pieces.sort(key=lambda item: item[0])
    outputs = {}
    for binding in info.outputs:
        array = np.concatenate([piece[binding.name] for _, piece in pieces], axis=0)
        outputs[binding.name] = dequantize(array, binding.spec) if binding.is_quantized else array
    return outputs


# ----------------------------------------------------------------------------------------------------- metrics

def pick_accuracy_output(output_names: Sequence[str], requested: str | None = None) -> str:
    """The output accuracy is computed on: ``requested``, else the name that sorts first.

    Raises:
        EvaluationError: ``requested`` is not one of the outputs.
    """
    if not output_names:
        raise EvaluationError("the model has no outputs")
    if requested is not None:
        if requested not in output_names:
            raise EvaluationError(
                f"--output {requested!r} is not an output of the model; its outputs are "
                + ", ".join(repr(n) for n in output_names)
            )
        return requested
    return sorted(output_names)[0]


def _as_scores(output: np.ndarray) -> np.ndarray:
    scores = np.asarray(output, dtype=np.float32)
    return scores.reshape(len(scores), -1)


def top1(output: np.ndarray) -> np.ndarray:
    """Predicted class per sample (a single-unit output is thresholded as a binary classifier)."""
    scores = _as_scores(output)
    if scores.shape[1] == 1:
        threshold = 0.5 if scores.size and scores.min() >= 0 and scores.max() <= 1 else 0.0
        return (scores[:, 0] > threshold).astype(np.int64)
    return scores.argmax(axis=1).astype(np.int64)


def num_classes(output: np.ndarray) -> int:
    """Classes of a classifier output (2 for a single-unit binary output)."""
    width = _as_scores(output).shape[1]
    return 2 if width == 1 else width


def topk_accuracy(output: np.ndarray, labels: np.ndarray, k: int) -> float | None:
    """Share of samples whose label is among the k highest scores (``None`` when there are fewer than k classes)."""
    scores = _as_scores(output)
    if k == 1:
        return float(np.mean(top1(output) == labels))
    if scores.shape[1] < k:
        return None
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float(np.mean((best == labels[:, None]).any(axis=1)))


def _pair_outputs(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> list[tuple[str, str]]:
    common = [name for name in reference if name in candidate]
    if common:
        return [(name, name) for name in common]
    if len(reference) == 1 and len(candidate) == 1:
        return [(next(iter(reference)), next(iter(candidate)))]
    return []


def sqnr_db(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> float | None:
    """Signal-to-quantization-noise ratio of ``candidate`` against ``reference`` over all matched outputs, dB.

    Returns:
        dB value, :data:`SQNR_CAP_DB` for identical outputs, ``None`` when no output can be matched, shapes
        differ, or the reference signal is all zeros.
    """
    pairs = _pair_outputs(reference, candidate)
    if not pairs:
        return None
    signal = noise = 0.0
    for ref_name, cand_name in pairs:
        ref = np.asarray(reference[ref_name], dtype=np.float64)
        cand = np.asarray(candidate[cand_name], dtype=np.float64)
        if ref.shape != cand.shape:
            return None
        signal += float(np.sum(ref * ref))
        noise += float(np.sum((ref - cand) ** 2))
    if signal == 0.0:
        return None
    if noise == 0.0:
        return SQNR_CAP_DB
    return float(min(SQNR_CAP_DB, 10.0 * math.log10(signal / noise)))


def gzip_size(content: bytes) -> int:
    """Bytes of the file gzip-compressed (level 6): how far clustering/pruning shrink a download."""
    return len(gzip.compress(content, compresslevel=GZIP_LEVEL, mtime=0))


# ------------------------------------------------------------------------------------------------ the evaluation

class _DataCache:
    """Loads the data once per distinct input description (names, shapes, real dtypes) of the files."""

    def __init__(self, data: str | os.PathLike | Dataset | None, options: EvaluationOptions) -> None:
        self.data = data
        self.options = options
        self._cache: dict[tuple, Dataset] = {}
        self.warnings: list[str] = []

    def get(self, info: SignatureInfo) -> Dataset | None:
        from tflite_opt.representative_data.dataset import validate

        if self.data is None:
            return None
        specs = info.data_specs
        key = tuple((s.name, s.shape[1:], s.dtype) for s in specs)
        if key not in self._cache:
            if isinstance(self.data, Dataset):
                dataset = Dataset(
                    inputs=dict(self.data.inputs), labels=self.data.labels, source=self.data.source,
                    class_names=self.data.class_names, warnings=list(self.data.warnings),
                ).take(self.options.num_samples)
                dataset.inputs = dict(dataset.inputs)
                if len(specs) == 1 and len(dataset.inputs) == 1 and specs[0].name not in dataset.inputs:
                    # One array for a one-input model, whatever its key (as 'x' in a .npz).
                    dataset.inputs = {specs[0].name: next(iter(dataset.inputs.values()))}
                validate(dataset, specs)
            else:
                dataset = load_data(
                    self.data, specs, preprocess=self.options.preprocess, num_samples=self.options.num_samples,
                    allow_random=self.options.allow_random,
                )
            for warning in dataset.warnings:
                if warning not in self.warnings:
                    self.warnings.append(warning)
            self._cache[key] = dataset
        return self._cache[key]


def _file_facts(content: bytes) -> tuple[str, int]:
    """(sha256, gzip size) of a file; both release the GIL, so they can run beside inference."""
    from tflite_opt.inspection import file_digest

    return file_digest(content), gzip_size(content)


def _measure(
    source: VariantSource,
    result: VariantResult,
    data: _DataCache,
    options: EvaluationOptions,
    progress: Progress,
) -> RunOutputs | None:
    """Fill ``result`` for one file; returns its outputs on the data (``None`` without data)."""
    from tflite_opt.latency import measure_latency

    content = source.content if source.content is not None else read_model_bytes(source.path)
    label = source.path or source.name
    result.size_bytes = len(content)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tflite-opt-hash") as background:
        # Hashing and gzip overlap with inference, but are finished before any latency is timed.
        facts = background.submit(_file_facts, content)
        try:
            run, dataset = _run_on_data(content, label, source, result, data, options, progress)
        finally:
            result.sha256, result.gzip_bytes = facts.result()

    if options.runs > 0:
        sample = None
        if dataset is not None:
            sample = {name: array[:1] for name, array in dataset.inputs.items()}
        with progress.task(f"{source.name}: latency, {options.runs} runs", total=None):
            result.latency_ms = measure_latency(
                content, threads=options.threads, xnnpack=options.xnnpack, warmup=options.warmup,
                runs=options.runs, sample=sample, signature=options.signature, source=label,
            )
    return run


def _run_on_data(
    content: bytes,
    label: str,
    source: VariantSource,
    result: VariantResult,
    data: _DataCache,
    options: EvaluationOptions,
    progress: Progress,
) -> tuple[RunOutputs | None, Dataset | None]:
    from tflite_opt import inspection
    from tflite_opt.runtime import load_signature

    info = load_signature(content, signature=options.signature, source=label)
    facts = inspection.analyze(content, source=label)
    result.sparsity = facts["sparsity"]
    if result.mode is None:
        result.mode = facts["mode"]

    dataset = data.get(info)
    if dataset is None:
        return None, None
    with progress.task(f"{source.name}: {len(dataset)} samples", total=len(dataset)) as task:
        outputs = run_dataset(
            content, dataset, signature=options.signature, xnnpack=options.xnnpack,
            batch_size=options.batch_size, workers=options.workers, source=label, on_batch=task.advance,
        )
    accuracy_output = pick_accuracy_output([b.name for b in info.outputs], options.output)
    predictions = top1(outputs[accuracy_output])
    if dataset.labels is not None:
        try:
            dataset.check_labels(num_classes(outputs[accuracy_output]))
        except DataError as exc:
            raise DataError(f"{exc} (output '{accuracy_output}')") from exc
        result.accuracy = float(np.mean(predictions == dataset.labels))
        result.top5 = topk_accuracy(outputs[accuracy_output], dataset.labels, 5)
    return RunOutputs(outputs, accuracy_output, predictions), dataset


def _compare_to_reference(result: VariantResult, run: RunOutputs | None, ref: VariantResult,
                          ref_run: RunOutputs | None) -> None:
    if ref.size_bytes and result.size_bytes:
        result.size_ratio = result.size_bytes / ref.size_bytes
    if result.accuracy is not None and ref.accuracy is not None:
        result.accuracy_delta = result.accuracy - ref.accuracy
    if run is not None and ref_run is not None:
        if result is not ref:
            result.sqnr_db = sqnr_db(ref_run.outputs, run.outputs)
        # Agreement only makes sense when both accuracy outputs are the same (matched) output.
        pairs = dict(_pair_outputs(ref_run.outputs, run.outputs))
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

    Returns:
        The results in the order of ``sources``.

    Raises:
        EvaluationError: no sources, duplicate names, or an unknown reference name.
    """
    options = options or EvaluationOptions()
    progress = ensure(progress)
    if not sources:
        raise EvaluationError("no .tflite files to evaluate")
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise EvaluationError(f"variant names must be unique; repeated: {', '.join(duplicates)}")
    reference = reference if reference is not None else names[0]
    if reference not in names:
        raise EvaluationError(f"the reference {reference!r} is not among the variants {', '.join(names)}")

    cache = _DataCache(data, options)
    results = {s.name: VariantResult(name=s.name, mode=s.mode, path=s.path) for s in sources}
    runs: dict[str, RunOutputs | None] = {}
    # The reference goes first so that a failure to read the data is reported against it.
    order = sorted(sources, key=lambda s: s.name != reference)
    num_samples = None
    for source in order:
        result = results[source.name]
        if source.error is not None:
            result.error = source.error
            continue
        try:
            runs[source.name] = _measure(source, result, cache, options, progress)
            if runs[source.name] is not None:
                num_samples = len(runs[source.name].predictions)
        except TfliteOptError as exc:
            result.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - one broken file must not stop the others being measured
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            result.error = f"{type(exc).__name__}: {first_line[:300]}"

    ref = results[reference]
    if ref.ok:
        for source in sources:
            result = results[source.name]
            if result.ok:
                _compare_to_reference(result, runs.get(source.name), ref, runs.get(reference))
    for warning in cache.warnings:
        progress.warn(warning)
    return EvaluationRun(
        variants=[results[s.name] for s in sources], reference=reference, num_samples=num_samples,
        warnings=list(cache.warnings),
    )


def build_report(run: EvaluationRun, options: EvaluationOptions, gates=()) -> Report:
    """Wrap an :class:`EvaluationRun` into a :class:`Report` and check ``gates`` (parsed gate specs)."""
    from tflite_opt.gates import check_gates

    report = Report(
        settings=Settings(
            threads=options.threads, xnnpack=options.xnnpack, warmup=options.warmup, runs=options.runs,
            num_samples=run.num_samples,
        ),
        reference=run.reference,
        variants=run.variants,
    )
    report.gates = check_gates(gates, report.variants, report.reference)
    return report

"""Run ``.tflite`` files on a dataset, fast, and compute what each one costs and buys.

Speed: samples are run in batches — the batch axis is resized when the file's ``shape_signature`` allows it
(``-1``), otherwise samples go one by one (the file's fixed batch) — and the batches are spread over one
single-threaded interpreter per CPU core (``invoke`` releases the GIL; the calling thread is one of the workers,
the others are kept for the next file). Batches are handed out one at a time, so every core stays busy to the end
whatever else runs on it. The automatic batch size is evened out over the data, and the last, short batch is
padded and the padding's outputs dropped, so the interpreter is allocated once per worker. Outputs are written
into preallocated arrays (dequantized per batch). The fixed costs of a file — sha256 and gzip (which release the
GIL), the flatbuffer walk, the NaN/Inf scan of in-memory data — are tasks for the same workers, not extra threads
competing with them for the cores.

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

import copy
import functools
import math
import os
import threading
import zlib
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
_GZIP_FRAME_BYTES = 18  # header without name/comment/extra, then CRC-32 and size
# Samples per invoke: one batch of inputs is about this many bytes, at most MAX_BATCH samples. Larger batches
# stop paying off once the per-invoke Python overhead is amortized, and start losing cache locality
# (measured with two workers on two cores: the digits CNN is fastest at 32-64; MobileNetV2 at 96x96 fp32 at
# 6-8 (1,500/s, against 1,040/s one by one and 1,340/s at 24); its int8 file is flat from 2 to 24).
TARGET_BATCH_BYTES = 768 << 10
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
class MeasuredVariant:
    """A variant measured by an earlier :func:`evaluate_variants` call, to pass back in instead of measuring it
    again (``auto`` measures the fp32 reference once and compares every trial with it).

    It must have been measured on the same data with the same options.
    """

    result: VariantResult
    outputs: RunOutputs | None


@dataclass
class EvaluationRun:
    """The measured variants plus what is needed to build a :class:`~tflite_opt.report.Report`.

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
    return _run_batches(
        content, dataset, signature=signature, xnnpack=xnnpack, batch_size=batch_size, workers=workers,
        source=source, on_batch=on_batch,
    )


def _run_batches(
    content: bytes,
    dataset: Dataset,
    *,
    signature: str | None,
    xnnpack: bool,
    batch_size: int | None,
    workers: int | None,
    source: str,
    on_batch: Callable[[int], None] | None,
    beside: Sequence[Callable[[], None]] = (),
    first: ModelRunner | None = None,
    pool: ThreadPoolExecutor | None = None,
    helpers: int = 0,
) -> dict[str, np.ndarray]:
    """:func:`run_dataset`, plus ``beside``: tasks (such as the flatbuffer inspection) that free
    workers run before taking batches, so that they share the cores with inference instead of competing for
    them; ``first``: an unprepared runner of ``content`` to use as one of the workers; ``pool``: an executor
    whose ``helpers`` threads join the calling thread as workers (once they are done with what was submitted to
    them before), instead of a pool started here.

    Every ``beside`` task runs exactly once, even when the model fails to load; when one raises, the exception
    of the *last* failing task in ``beside`` wins over earlier ones and over one from inference.
    """
    beside = list(beside)
    try:
        if first is None:
            first = ModelRunner(content, threads=1, xnnpack=xnnpack, signature=signature, source=source)
        info = first.signature
        n = len(dataset)
        if n == 0:
            raise DataError(f"no samples to run {source} on")
    except BaseException:
        _run_all(beside)
        raise
    want = batch_size or _auto_batch(info)
    if batch_size is None:
        # As many batches as the size asks for, evened out: the last one then pads at most a sample or so
        # (1797 samples by 64 would pad 59, 3% of the work for nothing).
        want = -(-n // -(-n // want))
    # What ModelRunner.prepare will settle on; each worker prepares (allocates, packs weights) its own.
    batch = int(want) if info.batch_resizable else info.fixed_batch
    batches = -(-n // batch)
    if pool is not None:
        workers = helpers + 1
    else:
        workers = max(1, min(workers or available_cpus(), batches + len(beside)))
    sink = _OutputSink(info, n, batch)
    # Work is handed out one item at a time (``beside`` first, then the batches in order), so a worker that is
    # busy with ``beside`` or slowed down by another process on its core simply takes fewer batches.
    items = iter(list(beside) + list(range(batches)))
    lock = threading.Lock()
    beside_errors: dict[int, BaseException] = {}

    def work(runner: ModelRunner | None) -> None:
        inputs = dataset.inputs
        while not sink.failed:
            with lock:
                item = next(items, None)
            if item is None:
                return
            if not isinstance(item, int):
                try:
                    item()
                except BaseException as exc:  # noqa: BLE001 - re-raised by the calling thread below
                    beside_errors[beside.index(item)] = exc
                    sink.failed = True
                continue
            if runner is None:
                # Each worker builds its own interpreter in its own thread: creation and XNNPACK's weight
                # packing then run in parallel too.
                runner = ModelRunner(content, threads=1, xnnpack=xnnpack, signature=signature, source=source)
            if runner.batch_size is None:
                runner.prepare(want)
            start = item * batch
            stop = min(start + batch, n)
            chunk = {name: array[start:stop] for name, array in inputs.items()}
            sink.put(start, stop, runner.run(prepare_inputs(info, chunk, batch, source=source)))
            if on_batch is not None:
                on_batch(stop - start)

    def guarded(runner: ModelRunner | None) -> None:
        try:
            work(runner)
        except BaseException:
            sink.failed = True  # the other workers stop at their next batch
            raise

    try:
        if workers == 1:
            guarded(first)
        else:
            # The calling thread is one of the workers: one thread fewer to start.
            own = pool is None
            if own:
                pool = ThreadPoolExecutor(max_workers=workers - 1, thread_name_prefix="tflite-opt-eval")
            try:
                futures = [pool.submit(guarded, None) for _ in range(workers - 1)]
                try:
                    guarded(first)
                finally:
                    errors = [future.exception() for future in futures]
                for error in errors:
                    if error is not None:
                        raise error
            finally:
                if own:
                    pool.shutdown()
    finally:
        # Tasks beside that no worker took (every worker stopped at a failure) still run, here.
        for item in items:
            if not isinstance(item, int):
                try:
                    item()
                except BaseException as exc:  # noqa: BLE001 - raised below
                    beside_errors[beside.index(item)] = exc
        if beside_errors:
            raise beside_errors[max(beside_errors)]
    return sink.result()


def _run_all(tasks: Sequence[Callable[[], None]]) -> None:
    """Run every task; raise the exception of the last one that failed (see :func:`_run_batches`)."""
    error = None
    for task in tasks:
        try:
            task()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            error = exc
    if error is not None:
        raise error


class _OutputSink:
    """Outputs of a dataset run, written batch by batch (from any worker) into preallocated arrays.

    Quantized outputs are dequantized as they arrive (elementwise, so the same values as dequantizing the whole
    array at the end), which keeps that work in the parallel part too. An output whose leading axis is not the
    batch axis is kept piecewise and concatenated at the end, as the rows the batches gave.
    """

    def __init__(self, info: SignatureInfo, n: int, batch: int) -> None:
        self.info = info
        self.n = n
        self.batch = batch
        self.failed = False
        self._arrays: dict[str, np.ndarray] | None = None
        self._pieces: dict[str, list[tuple[int, np.ndarray]]] = {}
        self._lock = threading.Lock()

    def _allocate(self, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            if self._arrays is None:
                arrays = {}
                for binding in self.info.outputs:
                    value = outputs[binding.name]
                    if value.ndim == 0 or value.shape[0] != self.batch:
                        self._pieces[binding.name] = []
                        continue
                    dtype = np.float32 if binding.is_quantized else value.dtype
                    arrays[binding.name] = np.empty((self.n,) + value.shape[1:], dtype=dtype)
                self._arrays = arrays
            return self._arrays

    def put(self, start: int, stop: int, outputs: Mapping[str, np.ndarray]) -> None:
        arrays = self._arrays if self._arrays is not None else self._allocate(outputs)
        for binding in self.info.outputs:
            value = outputs[binding.name][: stop - start]
            if binding.is_quantized:
                value = dequantize(value, binding.spec)
            target = arrays.get(binding.name)
            if target is not None:
                target[start:stop] = value
            else:
                with self._lock:
                    self._pieces[binding.name].append((start, value))

    def result(self) -> dict[str, np.ndarray]:
        arrays = self._arrays or {}
        outputs = {}
        for binding in self.info.outputs:
            if binding.name in arrays:
                outputs[binding.name] = arrays[binding.name]
            else:
                pieces = sorted(self._pieces.get(binding.name, []), key=lambda item: item[0])
                outputs[binding.name] = np.concatenate([piece for _, piece in pieces], axis=0)
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
    """Bytes of the file gzip-compressed (level 6): how far clustering/pruning shrink a download.

    That is ``len(gzip.compress(content, 6, mtime=0))``, computed as the raw deflate stream plus gzip's fixed
    10-byte header and 8-byte trailer, which skips the CRC-32 pass over the file.
    """
    return len(zlib.compress(content, GZIP_LEVEL, wbits=-15)) + _GZIP_FRAME_BYTES


# ------------------------------------------------------------------------------------------------ the evaluation

class _DataCache:
    """Loads and validates the data once per distinct input description (names, shapes, real dtypes) of the files."""

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
                validate(dataset, specs)  # raises its message, or casts
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


_helpers: ThreadPoolExecutor | None = None
_helpers_size = 0
_helpers_lock = threading.Lock()


def _shared_helpers(count: int) -> ThreadPoolExecutor | None:
    """The process's idle helper threads (one per core but one, started on first use and then kept, as BLAS
    and OpenMP keep theirs: starting and joining threads costs about a millisecond a file), or ``None`` when
    more are asked for than cores (a pool of its own, then)."""
    global _helpers, _helpers_size
    if count > available_cpus() - 1:
        return None
    with _helpers_lock:
        if _helpers is None:
            _helpers_size = available_cpus() - 1
            _helpers = ThreadPoolExecutor(max_workers=_helpers_size, thread_name_prefix="tflite-opt-eval")
        return _helpers


def _file_bytes_facts(content: bytes, result: VariantResult) -> None:
    """sha256 and gzip size of a file, into ``result`` (both release the GIL; fine on any bytes)."""
    from tflite_opt.inspection import file_digest

    result.sha256 = file_digest(content)
    result.gzip_bytes = gzip_size(content)


def _flatbuffer_facts(content: bytes, label: str, result: VariantResult) -> None:
    """Sparsity and (unless given) mode of a file the interpreter's verifier has accepted, into ``result``."""
    from tflite_opt import inspection

    details = inspection.analyze(content, source=label)
    result.sparsity = details["sparsity"]
    if result.mode is None:
        result.mode = details["mode"]


def _measure(
    source: VariantSource,
    result: VariantResult,
    data: _DataCache,
    options: EvaluationOptions,
    progress: Progress,
) -> RunOutputs | None:
    """Fill ``result`` for one file; returns its outputs on the data (``None`` without data).

    Hashing and gzip start at once on a helper thread, which then joins the calling thread as an inference
    worker (one per core); the flatbuffer walk is handed out to the workers beside the batches. Everything is done before latency is timed, and whatever fails, the facts have been gathered.
    """
    from tflite_opt.latency import measure_latency

    content = source.content if source.content is not None else read_model_bytes(source.path)
    label = source.path or source.name
    result.size_bytes = len(content)
    helpers = max(1, options.workers or available_cpus()) - 1
    if helpers == 0:
        _file_bytes_facts(content, result)
        run, dataset = _load_and_run(content, label, source, result, data, options, progress, None, 0)
    else:
        shared = _shared_helpers(helpers)
        pool = shared or ThreadPoolExecutor(max_workers=helpers, thread_name_prefix="tflite-opt-eval")
        try:
            hashing = pool.submit(_file_bytes_facts, content, result)
            try:
                run, dataset = _load_and_run(content, label, source, result, data, options, progress, pool, helpers)
            finally:
                hashing.result()
        finally:
            if shared is None:
                pool.shutdown()

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


def _load_and_run(
    content: bytes,
    label: str,
    source: VariantSource,
    result: VariantResult,
    data: _DataCache,
    options: EvaluationOptions,
    progress: Progress,
    pool: ThreadPoolExecutor | None,
    helpers: int,
) -> tuple[RunOutputs | None, Dataset | None]:
    # The interpreter's verifier rejects damaged files here, before the flatbuffer is walked. This runner
    # (delegate not applied until it is prepared) is then one of the inference workers.
    runner = ModelRunner(content, threads=1, xnnpack=options.xnnpack, signature=options.signature, source=label)
    info = runner.signature
    facts = functools.partial(_flatbuffer_facts, content, label, result)
    try:
        dataset = data.get(info)
    except BaseException:
        _run_all([facts])  # a flatbuffer the reader cannot walk reports that first, as it always did
        raise
    if dataset is None:
        facts()
        return None, None
    # Errors rank: the flatbuffer walk, then running the model.
    beside = [facts]
    with progress.task(f"{source.name}: {len(dataset)} samples", total=len(dataset)) as task:
        outputs = _run_batches(
            content, dataset, signature=options.signature, xnnpack=options.xnnpack,
            batch_size=options.batch_size, workers=options.workers, source=label, on_batch=task.advance,
            beside=beside, first=runner, pool=pool, helpers=helpers,
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
    measured = measured or {}
    for source in order:
        if source.name in measured:
            earlier = measured[source.name]
            result = results[source.name] = copy.deepcopy(earlier.result)
            result.name = source.name
            runs[source.name] = earlier.outputs
            if earlier.outputs is not None:
                num_samples = len(earlier.outputs.predictions)
            continue
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
        warnings=list(cache.warnings), outputs=runs,
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

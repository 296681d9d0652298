"""Run a ``.tflite`` file on every sample of a dataset, fast: batches spread over one interpreter per CPU core.

Samples are run in batches — the batch axis is resized when the file's ``shape_signature`` allows it (``-1``),
otherwise samples go one by one (the file's fixed batch) — and the batches are spread over one single-threaded
interpreter per worker (``invoke`` releases the GIL). The workers are the calling thread plus the helper threads
of a :class:`WorkerPool`, which the caller owns for as long as it has files to run (starting and joining threads
costs about a millisecond a file). Batches are handed out one at a time, so every core stays busy to the end
whatever else runs on it. The automatic batch size is evened out over the data, and the last, short batch is
padded and the padding's outputs dropped, so each worker's interpreter is allocated once. Outputs are written into
preallocated arrays (dequantized per batch).

Integer I/O: a file whose inputs/outputs are quantized (int8/uint8/int16 with a scale) is fed by quantizing the
real-valued samples with each input's scale and zero point, and its outputs are dequantized, so an int8 file and
its float source are compared on the same data in the same units.

No TensorFlow import here.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Mapping

import numpy as np

from tflite_opt.errors import DataError
from tflite_opt.measure import runtime
from tflite_opt.measure.runtime import ModelRunner, SignatureInfo, dequantize, prepare_inputs
from tflite_opt.representative_data import Dataset

# Samples per invoke: one batch of inputs is about this many bytes, at most MAX_BATCH samples. Larger batches
# stop paying off once the per-invoke Python overhead is amortized, and start losing cache locality
# (measured with two workers on two cores: the digits CNN is fastest at 32-64; MobileNetV2 at 96x96 fp32 at
# 6-8 (1,500/s, against 1,040/s one by one and 1,340/s at 24); its int8 file is flat from 2 to 24).
TARGET_BATCH_BYTES = 768 << 10
MAX_BATCH = 64
THREAD_NAME_PREFIX = "tflite-opt-eval"


def available_cpus() -> int:
    """CPU cores this process may run on (respects affinity masks and container CPU sets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def worker_count(requested: int | None = None) -> int:
    """Interpreters to run in parallel: ``requested``, else one per CPU core."""
    return max(1, requested or available_cpus())


class Task:
    """What :meth:`WorkerPool.submit` returns: :meth:`result` waits for the task and returns its value or raises
    its exception."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._value: object = None
        self._error: BaseException | None = None

    def run(self, task: Callable[..., object], args: tuple) -> None:
        """Run ``task(*args)`` here, keeping its value or exception (done once, by the pool)."""
        try:
            self._value = task(*args)
        except BaseException as exc:  # noqa: BLE001 - kept for result(), as concurrent.futures does
            self._error = exc
        finally:
            self._done.set()

    def result(self) -> object:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


class WorkerPool:
    """The calling thread plus ``count - 1`` helper threads, for as long as the ``with`` block lasts.

    The helpers run what is submitted in submission order; :func:`run_batches` submits its batch loop after
    whatever the caller submitted before (a file's sha256, say), so a helper joins the inference once it is done
    with that. Leaving the block waits for the helpers and stops them. Without helpers (``count`` 1),
    :meth:`submit` runs the task at once on the calling thread. (Plain threads and a deque rather than
    ``concurrent.futures``, whose import, with ``logging``, costs every ``evaluate`` several milliseconds.)
    """

    def __init__(self, count: int) -> None:
        self.count = max(1, int(count))
        self._tasks: deque = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._idle = 0  # helpers waiting for a task
        self._threads: list[threading.Thread] = []

    @property
    def helpers(self) -> int:
        return self.count - 1

    def submit(self, task: Callable[..., object], *args: object) -> Task:
        """Run ``task(*args)`` on a helper (or here, without helpers); its result or exception is in the task."""
        handle = Task()
        if self.helpers == 0:
            handle.run(task, args)
            return handle
        with self._ready:
            self._tasks.append((handle, task, args))
            # A helper thread is started only when there is work for it (started threads live to the end).
            if len(self._threads) < self.helpers and len(self._tasks) > self._idle:
                thread = threading.Thread(target=self._serve, name=f"{THREAD_NAME_PREFIX}_{len(self._threads)}")
                thread.daemon = True
                self._threads.append(thread)
                thread.start()
            self._ready.notify()
        return handle

    def _serve(self) -> None:
        while True:
            with self._ready:
                self._idle += 1
                while not self._tasks and not self._closed:
                    self._ready.wait()
                self._idle -= 1
                if not self._tasks:
                    return
                handle, task, args = self._tasks.popleft()
            handle.run(task, args)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join()


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
    input_shapes: Mapping[str, tuple[int | None, ...]] | None = None,
) -> dict[str, np.ndarray]:
    """Run a model on every sample and return its outputs by signature name, in real units.

    Args:
        content: the ``.tflite`` bytes.
        dataset: samples keyed by input name (real values, already validated against the model).
        signature: signature key (default ``serving_default``/the first).
        xnnpack: apply the XNNPACK delegate.
        batch_size: samples per invoke for files with a resizable batch axis (default: by input size).
        workers: interpreters run in parallel (default: one per CPU core); their threads live for this call.
        source: name for messages.
        on_batch: called with the number of samples after each batch (progress; may be called from threads).
        input_shapes: sizes for dynamic input axes (``--input-shape``), by input name.

    Returns:
        output name -> array with a leading axis of ``len(dataset)``; quantized outputs are dequantized.

    Raises:
        EvaluationError: the model cannot be loaded or run.
        DataError: the dataset is empty.
    """
    first = ModelRunner(
        content, threads=1, xnnpack=xnnpack, signature=signature, source=source, input_shapes=input_shapes
    )
    _, batch = _batching(first.signature, len(dataset), batch_size, source)
    batches = -(-len(dataset) // batch)
    with WorkerPool(min(worker_count(workers), batches)) as pool:
        return run_batches(
            content,
            dataset,
            pool=pool,
            first=first,
            signature=signature,
            xnnpack=xnnpack,
            batch_size=batch_size,
            source=source,
            on_batch=on_batch,
            input_shapes=input_shapes,
        )


def run_batches(
    content: bytes,
    dataset: Dataset,
    *,
    pool: WorkerPool,
    first: ModelRunner | None = None,
    signature: str | None = None,
    xnnpack: bool = True,
    batch_size: int | None = None,
    source: str = "model",
    on_batch: Callable[[int], None] | None = None,
    input_shapes: Mapping[str, tuple[int | None, ...]] | None = None,
) -> dict[str, np.ndarray]:
    """:func:`run_dataset` on a pool the caller owns: the calling thread and every helper of ``pool``.

    ``first`` is an unprepared runner of ``content`` the caller already loaded (it becomes the calling thread's
    interpreter); each helper builds its own in its own thread, so creation and XNNPACK's weight packing run in
    parallel too. When a batch fails, the other workers stop at their next one and the first error is raised
    here once all of them have stopped.
    """

    def new_runner() -> ModelRunner:
        return ModelRunner(
            content, threads=1, xnnpack=xnnpack, signature=signature, source=source, input_shapes=input_shapes
        )

    if first is None:
        first = new_runner()
    info = first.signature
    n = len(dataset)
    want, batch = _batching(info, n, batch_size, source)
    queue = _BatchQueue(-(-n // batch))
    sink = _OutputSink(info, n, batch)
    nonnegative = frozenset(name for name, (low, _) in dataset.known_ranges().items() if low >= 0)

    def work(runner: ModelRunner | None) -> None:
        scratch: dict = {}  # this worker's quantization buffers, reused batch after batch
        try:
            for index in queue:
                if runner is None:
                    runner = new_runner()
                if runner.batch_size is None:
                    runner.prepare(want)
                start, stop = index * batch, min(index * batch + batch, n)
                chunk = {name: array[start:stop] for name, array in dataset.inputs.items()}
                inputs = prepare_inputs(info, chunk, batch, source=source, scratch=scratch, nonnegative=nonnegative)
                sink.put(start, stop, runner.run(inputs))
                if on_batch is not None:
                    on_batch(stop - start)
        except BaseException as exc:  # noqa: BLE001 - raised by the calling thread once every worker stopped
            queue.fail(exc)

    if runtime.xnnpack_banner_due(xnnpack):
        # LiteRT prints its XNNPACK banner when the process's first XNNPACK interpreter is prepared, and hiding it
        # swaps the whole process's descriptors, which only the main thread does: that interpreter is prepared
        # here, on the calling thread, before any helper starts.
        first.prepare(want)
    helpers = [pool.submit(work, None) for _ in range(min(pool.helpers, queue.count - 1))]
    work(first)
    for helper in helpers:
        helper.result()
    queue.raise_failure()
    return sink.result()


def _batching(info: SignatureInfo, n: int, batch_size: int | None, source: str) -> tuple[int, int]:
    """(batch size asked of :meth:`ModelRunner.prepare`, batch size it settles on) for ``n`` samples.

    Raises:
        DataError: no samples.
    """
    if n == 0:
        raise DataError(f"no samples to run {source} on")
    want = batch_size or _auto_batch(info)
    if batch_size is None:
        # As many batches as the size asks for, evened out: the last one then pads at most a sample or so
        # (1797 samples by 64 would pad 59, 3% of the work for nothing).
        want = -(-n // -(-n // want))
    return int(want), (int(want) if info.batch_resizable else info.fixed_batch)


def _auto_batch(signature: SignatureInfo) -> int:
    sample_bytes = 0
    for binding in signature.inputs:
        dims = [max(int(d), 1) for d in binding.shape_signature[1:]]
        sample_bytes += int(np.prod(dims)) * np.dtype(binding.spec.dtype).itemsize
    return int(max(1, min(MAX_BATCH, TARGET_BATCH_BYTES // max(sample_bytes, 1))))


class _BatchQueue:
    """Batch numbers, handed out in order one at a time to whichever worker asks, until all are taken or one
    worker failed (a worker that is slowed down by other work on its core simply takes fewer)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._next = 0
        self._failure: BaseException | None = None
        self._lock = threading.Lock()

    def __iter__(self) -> _BatchQueue:
        return self

    def __next__(self) -> int:
        with self._lock:
            if self._failure is not None or self._next >= self.count:
                raise StopIteration
            self._next += 1
            return self._next - 1

    def fail(self, exc: BaseException) -> None:
        """Stop handing out batches; the first failure is the one :meth:`raise_failure` raises."""
        with self._lock:
            if self._failure is None:
                self._failure = exc

    def raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure


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

"""Latency the benchmark_model way: warm-up invokes, then timed invokes of one batch-1 inference.

This follows ``ai_edge_litert/tools/benchmark_litert_model.py`` (shipped in the wheel): inputs are set once,
each timed run is a single ``invoke`` measured with ``time.perf_counter``, warm-up runs are not counted, and the
summary is median / p90 / mean / sample standard deviation / min over the timed runs, with the percentile
interpolated linearly between sorted runs exactly as that script does. ``benchmarks/bench_latency.py`` checks
that both agree within 10% on the same file and thread count.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence

import numpy as np

from tflite_opt.errors import EvaluationError
from tflite_opt.measure.runtime import ModelRunner, prepare_inputs
from tflite_opt.reporting.report import LatencyStats

DEFAULT_WARMUP = 5
DEFAULT_RUNS = 50


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100), interpolated linearly between neighbours (NumPy's default method)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    return float(np.percentile(sorted_values, p))


def summarize(times_ms: Sequence[float]) -> LatencyStats:
    """Summarize per-run times (milliseconds).

    Raises:
        ValueError: no times.
    """
    if not times_ms:
        raise ValueError("no timed runs to summarize")
    ordered = sorted(float(t) for t in times_ms)
    return LatencyStats(
        median=statistics.median(ordered),
        p90=percentile(ordered, 90),
        mean=statistics.fmean(ordered),
        std=statistics.stdev(ordered) if len(ordered) > 1 else 0.0,
        min=ordered[0],
        runs=len(ordered),
    )


def synthetic_inputs(runner, seed: int = 0) -> dict[str, np.ndarray]:
    """Stored-dtype batch inputs for a prepared runner when no data is given (uniform noise, like the benchmark)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for binding in runner.inputs:
        shape = [runner.batch_size] + [max(int(d), 1) for d in binding.shape_signature[1:]]
        dtype = np.dtype(binding.spec.dtype)
        if dtype.kind == "f":
            arrays[binding.name] = rng.uniform(-1.0, 1.0, shape).astype(dtype)
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            arrays[binding.name] = rng.integers(max(info.min, -128), min(info.max, 127) + 1, shape).astype(dtype)
        else:
            arrays[binding.name] = np.zeros(shape, dtype=dtype)
    return arrays


def measure_latency(
    content: bytes,
    *,
    threads: int = 1,
    xnnpack: bool = True,
    warmup: int = DEFAULT_WARMUP,
    runs: int = DEFAULT_RUNS,
    sample: Mapping[str, np.ndarray] | None = None,
    signature: str | None = None,
    source: str = "model",
    input_shapes: Mapping[str, tuple[int | None, ...]] | None = None,
) -> LatencyStats:
    """Time single-sample inference of a model.

    Args:
        content: the ``.tflite`` bytes.
        threads: interpreter threads (``--threads``).
        xnnpack: apply the XNNPACK delegate.
        warmup: untimed invokes first (the first ones pay for lazy packing of weights).
        runs: timed invokes (at least 1).
        sample: one sample per input name with a leading batch axis of 1, in *real* values (quantized inputs are
            quantized with their scale/zero point); ``None`` feeds uniform noise as the benchmark tool does.
        signature: signature key (default ``serving_default``/the first).
        source: name for error messages.
        input_shapes: sizes for dynamic input axes (``--input-shape``), by input name.

    Raises:
        EvaluationError: the model cannot be loaded or run, or ``runs`` < 1.
    """

    if runs < 1:
        raise EvaluationError(f"--runs must be at least 1 to measure latency, got {runs}")
    if warmup < 0:
        raise EvaluationError(f"--warmup must be 0 or more, got {warmup}")
    runner = ModelRunner(
        content, threads=threads, xnnpack=xnnpack, signature=signature, source=source, input_shapes=input_shapes
    )
    batch = runner.prepare(1)
    if sample is None:
        arrays = synthetic_inputs(runner)
    else:
        arrays = prepare_inputs(runner.signature, sample, batch, source=source)
    runner.set_inputs(arrays)
    invoke = runner.invoke
    for _ in range(warmup):
        invoke()
    times = []
    clock = time.perf_counter
    for _ in range(runs):
        start = clock()
        invoke()
        times.append((clock() - start) * 1000.0)
    return summarize(times)

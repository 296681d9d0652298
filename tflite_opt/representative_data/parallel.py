"""Whole-array reductions over every core: the passes that check a large dataset before it is used.

NumPy's reductions release the GIL, so a big array split along its sample axis is summed (or its minimum taken)
by one thread per core; for a memory-mapped array that also spreads the page faults of its first reading. Small
arrays are reduced on the calling thread. Results are the same as one pass, except that a sum's rounding
depends on the split (callers only test sums for finiteness).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import numpy as np

# Below this many bytes a second thread costs more than it saves.
PARALLEL_BYTES = 8 << 20


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def reduce_chunks(function: Callable[[np.ndarray], object], array: np.ndarray) -> list:
    """``function`` of each chunk of ``array`` (split along its first axis, one chunk per core), in order."""
    parts = min(_cores(), len(array)) if array.ndim and array.nbytes >= PARALLEL_BYTES else 1
    if parts <= 1:
        return [function(array)]
    bounds = np.linspace(0, len(array), parts + 1).astype(int)
    results: list = [None] * parts
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = function(array[bounds[index] : bounds[index + 1]])
        except BaseException as exc:  # noqa: BLE001 - raised on the calling thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(1, parts)]
    for thread in threads:
        thread.start()
    run(0)
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def _quiet_sum(chunk: np.ndarray):
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is an answer here, not a warning
        return np.sum(chunk)


def all_finite(array: np.ndarray) -> bool:
    """No NaN or Inf in a float array (a ``False`` may also mean finite values so large that a sum overflows)."""
    return all(np.isfinite(total) for total in reduce_chunks(_quiet_sum, array))


def min_max(array: np.ndarray) -> tuple[float, float]:
    """(min, max) of a non-empty array, as floats."""
    pairs = reduce_chunks(lambda chunk: (np.min(chunk), np.max(chunk)), array)
    return float(np.min([low for low, _ in pairs])), float(np.max([high for _, high in pairs]))

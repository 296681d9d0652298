"""Whole-array reductions over every core: the passes that check a large dataset before it is used.

NumPy's reductions release the GIL, so a big array split along its sample axis is reduced by one thread per core;
for a memory-mapped array that also spreads the page faults of its first reading. Small arrays are reduced on the
calling thread. A minimum and a maximum are taken block by block (a block stays in the core's cache for the second
of the two reductions), so the pair costs about one reading of the array rather than two; and because both
propagate NaN, and Inf shows in one of them, the pair is also the finiteness check. Results are the same as one
pass.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import numpy as np

# Below this many bytes a second thread costs more than it saves.
PARALLEL_BYTES = 8 << 20
# min_max's blocks: small enough that a block read for the minimum is still in the cache for the maximum, large
# enough that the Python loop over blocks costs nothing (1 MiB: 13 ms for 328 MB on one core, against 19 ms for
# two whole passes and 22 ms in blocks of 128 KiB).
BLOCK_BYTES = 1 << 20


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


def _block_min_max(chunk: np.ndarray) -> tuple[object, object]:
    flat = chunk.reshape(-1)  # a view for the contiguous arrays loaders give; a copy otherwise
    step = max(1, BLOCK_BYTES // max(flat.itemsize, 1))
    lows, highs = [], []
    for start in range(0, flat.size, step):
        block = flat[start : start + step]
        lows.append(np.min(block))
        highs.append(np.max(block))
    return np.min(lows), np.max(highs)  # NaN, if any block had one


def min_max(array: np.ndarray) -> tuple[float, float]:
    """(min, max) of a non-empty array, as floats: NaN when it holds a NaN (as np.min/np.max give)."""
    pairs = reduce_chunks(_block_min_max, array)
    return float(np.min([low for low, _ in pairs])), float(np.max([high for _, high in pairs]))

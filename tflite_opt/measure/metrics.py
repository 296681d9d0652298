"""What a file's outputs on the data score: top-1/top-k accuracy, SQNR against the reference, gzip size.

See :mod:`tflite_opt.measure.evaluation` for how the evaluation uses them (SPEC §4). NumPy only.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from tflite_opt.errors import EvaluationError

SQNR_CAP_DB = 200.0
GZIP_LEVEL = 6
_GZIP_FRAME_BYTES = 18  # header without name/comment/extra, then CRC-32 and size


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


def pair_outputs(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> list[tuple[str, str]]:
    """(reference name, candidate name) of the outputs compared: those with the same name, else the only two."""
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
    pairs = pair_outputs(reference, candidate)
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

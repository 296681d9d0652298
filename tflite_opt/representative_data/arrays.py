"""``.npz`` and ``.npy`` loaders."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tflite_opt.errors import DataError
from tflite_opt.representative_data.dataset import Dataset
from tflite_opt.specs import TensorSpec

LABEL_KEY = "y"
SINGLE_INPUT_KEY = "x"


def normalize_labels(labels: np.ndarray, source: str) -> np.ndarray:
    """Class ids as int64 ``(n,)``; one-hot (or probability) rows are argmax-ed."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        labels = labels.argmax(axis=1)
    elif labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"labels 'y' in {source} must be class ids (n,) or one-hot (n, classes), got {labels.shape}")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.all(np.mod(labels, 1) == 0):
            raise DataError(f"labels 'y' in {source} must be whole class ids")
    elif labels.dtype.kind not in "iub":
        raise DataError(f"labels 'y' in {source} must be integer class ids, got {labels.dtype}")
    return labels.astype(np.int64)


def load_npz(path: Path, input_specs: Sequence[TensorSpec]) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read {path} as a .npz archive: {exc}") from exc
    labels = arrays.pop(LABEL_KEY, None)
    names = [spec.name for spec in input_specs]
    if len(names) == 1 and SINGLE_INPUT_KEY in arrays and names[0] not in arrays:
        arrays[names[0]] = arrays.pop(SINGLE_INPUT_KEY)
    unknown = sorted(set(arrays) - set(names))
    if unknown:
        expected = ", ".join(repr(n) for n in names) + (" (or 'x')" if len(names) == 1 else "")
        raise DataError(
            f"{path} has array(s) {', '.join(repr(u) for u in unknown)} that match no model input; "
            f"expected keys {expected} and optional labels 'y'"
        )
    dataset = Dataset(inputs=arrays, source=str(path))
    if labels is not None:
        dataset.labels = normalize_labels(labels, str(path))
    return dataset


def load_npy(path: Path, input_specs: Sequence[TensorSpec]) -> Dataset:
    if len(input_specs) != 1:
        raise DataError(
            f"{path} is a .npy file (one array) but the model has {len(input_specs)} inputs; "
            "use a .npz keyed by input name"
        )
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read {path} as a .npy array: {exc}") from exc
    return Dataset(inputs={input_specs[0].name: array}, source=str(path))

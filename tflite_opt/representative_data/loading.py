"""``load_data``, the single entry point for every data source: it picks the loader and validates the result."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tflite_opt.errors import DataError
from tflite_opt.representative_data import arrays, images
from tflite_opt.representative_data.dataset import RANDOM_WARNING, Dataset, validate
from tflite_opt.specs import TensorSpec


def load_data(
    source: str | Path,
    input_specs: Sequence[TensorSpec],
    *,
    preprocess: str = "unit",
    num_samples: int | None = None,
    allow_random: bool = False,
    require_labels: bool = False,
    random_seed: int = 0,
) -> Dataset:
    """Load samples from ``source`` and check them against the model's inputs.

    Args:
        source: a ``.npz``/``.npy`` file, an image folder, or ``"random"``.
        input_specs: the model's inputs; samples are matched to them by name and validated (shape, castable
            dtype, finite values) and cast to each input's dtype (float64 -> float32 is fine).
        preprocess: image folders only: ``unit`` [0,1], ``symmetric`` [-1,1], ``imagenet`` mean/std, ``raw`` 0-255.
        num_samples: keep only the first N samples.
        allow_random: whether ``"random"`` is accepted here (smoke tests only; a warning is attached).
        require_labels: raise if the data has no labels (training).
        random_seed: seed for ``"random"``.

    Raises:
        DataError: with a message naming the file, the input and the sample index.
    """
    source_str = str(source)
    if source_str == "random":
        if not allow_random:
            raise DataError("'random' data is not allowed here; pass a .npz, .npy or image folder")
        dataset = _random_dataset(input_specs, num_samples or 100, random_seed)
    else:
        path = Path(source_str)
        if not path.exists():
            raise DataError(f"data path {source_str} does not exist")
        if path.is_dir():
            dataset = images.load_image_folder(path, input_specs, preprocess=preprocess, limit=num_samples)
        elif path.suffix.lower() == ".npz":
            dataset = arrays.load_npz(path, input_specs)
        elif path.suffix.lower() == ".npy":
            dataset = arrays.load_npy(path, input_specs)
        else:
            raise DataError(
                f"cannot read data from {source_str}: expected a .npz or .npy file, an image folder, or 'random'"
            )
    if num_samples is not None:
        if num_samples < 1:
            raise DataError("--num-samples must be at least 1")
        dataset = dataset.take(num_samples)
    if len(dataset) == 0:
        raise DataError(f"{source_str} holds no samples")
    validate(dataset, input_specs)
    if require_labels and dataset.labels is None:
        raise DataError(
            f"{source_str} has no labels; training needs labels ('y' in a .npz, or DIR/<class>/* image folders)"
        )
    return dataset


def _random_dataset(input_specs: Sequence[TensorSpec], n: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    inputs = {}
    for spec in input_specs:
        shape = tuple(1 if d is None else d for d in spec.sample_shape)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            inputs[spec.name] = rng.random((n, *shape), dtype=np.float32).astype(dtype)
        else:
            info = np.iinfo(dtype)
            inputs[spec.name] = rng.integers(max(info.min, 0), min(info.max, 255), (n, *shape)).astype(dtype)
    return Dataset(inputs=inputs, source="random", warnings=[RANDOM_WARNING])

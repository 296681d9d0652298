"""The ``Dataset`` container and the checks every loaded sample goes through (``validate``)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from tflite_opt.errors import DataError
from tflite_opt.representative_data import parallel
from tflite_opt.representative_data.ranges import integer_array_warning
from tflite_opt.specs import TensorSpec

PREPROCESS_CHOICES = ("unit", "symmetric", "imagenet", "raw")
RANDOM_WARNING = "using random data: quantization ranges and accuracy numbers are meaningless (smoke tests only)"


@dataclass
class Dataset:
    """Samples for a model, keyed by input name, with optional class labels.

    Attributes:
        inputs: input name -> array whose leading axis is the sample axis.
        labels: class ids, shape ``(n,)`` int64, or ``None`` for unlabelled data.
        source: where the samples came from (for messages).
        class_names: for labelled image folders, the class folder names in label order.
        warnings: things the user should be told (e.g. random data).
        value_ranges: (min, max) of inputs that :func:`validate` has read, by name, with the array they describe
            (see :meth:`known_ranges`).
    """

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    source: str = ""
    class_names: list[str] | None = None
    warnings: list[str] = field(default_factory=list)
    value_ranges: dict[str, tuple[np.ndarray, float, float]] = field(default_factory=dict, repr=False, compare=False)

    def known_ranges(self) -> dict[str, tuple[float, float]]:
        """(min, max) by input name, for the inputs whose array is still the one :func:`validate` read (its
        finiteness check found them), so that later checks of the same data need not read it again."""
        return {
            name: (low, high)
            for name, (array, low, high) in self.value_ranges.items()
            if self.inputs.get(name) is array
        }

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values()))) if self.inputs else 0

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def take(self, n: int | None) -> "Dataset":
        """The first ``n`` samples (all when ``n`` is None or larger than the set)."""
        if n is None or n >= len(self):
            return self
        return self.subset(np.arange(n))

    def subset(self, index: np.ndarray) -> "Dataset":
        return Dataset(
            inputs={k: v[index] for k, v in self.inputs.items()},
            labels=None if self.labels is None else self.labels[index],
            source=self.source,
            class_names=self.class_names,
            warnings=list(self.warnings),
        )

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Yield dicts of input arrays, ``batch_size`` samples at a time."""
        for start in range(0, len(self), batch_size):
            yield {k: v[start : start + batch_size] for k, v in self.inputs.items()}

    def samples(self) -> Iterator[dict[str, np.ndarray]]:
        """Yield one sample at a time, each with a batch axis of 1 (the representative-dataset form)."""
        return self.batches(1)

    def check_labels(self, num_classes: int) -> None:
        """Reject labels outside ``[0, num_classes)`` before any training starts."""
        if self.labels is None:
            return
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= num_classes):
            bad = int(np.flatnonzero((self.labels < 0) | (self.labels >= num_classes))[0])
            raise DataError(
                f"label {int(self.labels[bad])} of sample {bad} in {self.source} is outside the model's "
                f"{num_classes} classes (0..{num_classes - 1}); fix the labels or the model's output size"
            )


def validate(dataset: Dataset, input_specs: Sequence[TensorSpec]) -> None:
    """Check every input against its spec and cast it to the spec's dtype, in place."""
    expected = {spec.name for spec in input_specs}
    missing = expected - set(dataset.inputs)
    if missing:
        raise DataError(
            f"{dataset.source} has no array for input(s) {', '.join(sorted(repr(m) for m in missing))}; "
            f"the model's inputs are {', '.join(sorted(repr(e) for e in expected))}"
        )
    counts = {name: len(array) for name, array in dataset.inputs.items()}
    if len(set(counts.values())) > 1:
        raise DataError(f"{dataset.source}: inputs have different sample counts {counts}; they must match")
    if dataset.labels is not None and len(dataset.labels) != len(dataset):
        raise DataError(
            f"{dataset.source}: {len(dataset.labels)} labels for {len(dataset)} samples; the counts must match"
        )
    for spec in input_specs:
        array = dataset.inputs[spec.name]
        want = spec.sample_shape
        got = array.shape[1:]
        if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
            hint = ""
            if len(got) + 1 == len(want):
                hint = "; the leading axis of the array is the sample axis: add a trailing/channel axis"
            elif len(got) == len(want) + 1 and got[0] == 1:
                hint = "; each sample carries an extra axis of 1: remove the batch axis from the samples"
            else:
                dims = ", ".join("any" if d is None else str(d) for d in want)
                hint = f"; give an array of shape (samples, {dims})"
            raise DataError(
                f"input '{spec.name}' expects samples of shape {_fmt(want)} but {dataset.source} has "
                f"{_fmt(got)} (array {_fmt(array.shape)}){hint}"
            )
        warning = integer_array_warning(array, spec, dataset.source)
        if warning is not None and warning not in dataset.warnings:
            dataset.warnings.append(warning)
        dataset.inputs[spec.name] = _cast(array, spec, dataset.source, dataset.value_ranges)


def _cast(array: np.ndarray, spec: TensorSpec, source: str, ranges: dict) -> np.ndarray:
    target = np.dtype(spec.dtype)
    # One min/max pass (over every core) finds NaN, which both propagate, and Inf, which one of them is; only then
    # are the samples looked at one by one, to name the first bad one. The range is kept for later checks.
    if array.dtype.kind in "fc" and array.size:
        if array.dtype.kind == "f":
            low, high = parallel.min_max(array)
            finite = math.isfinite(low) and math.isfinite(high)
            if finite and array.dtype == target:
                ranges[spec.name] = (array, low, high)
        else:
            finite = bool(np.isfinite(array).all())
        if not finite:
            _raise_first_non_finite(array, spec, source)
    if array.dtype == target:
        return array
    if array.dtype.kind not in "biuf":
        raise DataError(f"input '{spec.name}' expects {spec.dtype} but {source} holds {array.dtype}")
    if target.kind in "iu" and array.dtype.kind == "f":
        if not np.all(np.mod(array, 1) == 0):
            raise DataError(
                f"input '{spec.name}' expects integers ({spec.dtype}) but {source} holds non-integer floats"
            )
    if target.kind in "iu":
        info = np.iinfo(target)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise DataError(f"values of input '{spec.name}' in {source} do not fit {spec.dtype}")
    return array.astype(target)


def _raise_first_non_finite(array: np.ndarray, spec: TensorSpec, source: str) -> None:
    finite = np.isfinite(array.reshape(len(array), -1)).all(axis=1)
    index = int(np.flatnonzero(~finite)[0])
    raise DataError(
        f"sample {index} of {source} (input '{spec.name}') contains NaN or Inf; remove or fix it before converting"
    )


def _fmt(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def split_validation(dataset: Dataset, fraction: float, seed: int = 0) -> tuple[Dataset, Dataset | None]:
    """Split off a shuffled validation share (``fraction`` in [0, 1)); returns (train, val or None)."""
    if not 0 <= fraction < 1:
        raise DataError(f"validation split must be in [0, 1), got {fraction}")
    if fraction == 0:
        return dataset, None
    n = len(dataset)
    n_val = max(1, int(round(n * fraction)))
    if n_val >= n:
        raise DataError(f"{dataset.source} has {n} samples: too few to split off {fraction:.0%} for validation")
    order = np.random.default_rng(seed).permutation(n)
    return dataset.subset(order[n_val:]), dataset.subset(order[:n_val])

"""What :func:`~tflite_opt.measure.evaluation.evaluate_variants` checks before it measures anything.

* The data is loaded and validated once per distinct input description of the files (:class:`DataCache`), and
  up front: data that fits none of the files is one error, not one error column per file.
* Each file's signature is compared with the reference's (:func:`signature_difference`): ratios between
  unrelated models (a face detector "277× faster" than a wake-word model) are left empty.

No TensorFlow here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from tflite_opt.errors import DataError, TfliteOptError
from tflite_opt.measure.runtime import SignatureInfo, load_signature, read_model_bytes
from tflite_opt.representative_data import Dataset, load_data


class DataCache:
    """Loads and validates the data once per distinct input description (names, shapes, real dtypes) of the files.

    ``options`` is an :class:`~tflite_opt.measure.evaluation.EvaluationOptions` (``preprocess``, ``num_samples``,
    ``allow_random``). A description the data does not fit fails again with the same message, without loading
    the data again.
    """

    def __init__(self, data: str | os.PathLike | Dataset | None, options: Any) -> None:
        self.data = data
        self.options = options
        self._cache: dict[tuple, Dataset] = {}
        self._failures: dict[tuple, str] = {}
        self.warnings: list[str] = []

    def get(self, info: SignatureInfo) -> Dataset | None:
        """The data validated against ``info``'s inputs (``None`` without data).

        Raises:
            DataError: the data does not fit those inputs.
        """
        if self.data is None:
            return None
        specs = info.data_specs
        key = tuple((s.name, s.shape[1:], s.dtype) for s in specs)
        if key in self._failures:
            raise DataError(self._failures[key])
        if key not in self._cache:
            try:
                dataset = self._load(specs)
            except DataError as exc:
                self._failures[key] = str(exc)
                raise
            self.note(dataset.warnings)
            self._cache[key] = dataset
        return self._cache[key]

    def fitted(self, info: SignatureInfo) -> Dataset | None:
        """:meth:`get`, and a clear error when an input has dynamic axes that no ``--input-shape`` sized.

        Raises:
            DataError: the data does not fit, or an input still has a dynamic (-1) axis besides the batch axis.
        """
        dataset = self.get(info)
        if dataset is None:
            return None
        for binding in info.inputs:
            if any(d < 0 for d in binding.shape_signature[1:]):
                sample = dataset.inputs[binding.name].shape[1:]
                sizes = ",".join(str(d) for d in (-1, *sample))
                raise DataError(
                    f"input '{binding.name}' has dynamic axes {_shape(binding)}; give them the data's sizes with "
                    f"--input-shape {binding.name}={sizes}"
                )
        return dataset

    def _load(self, specs) -> Dataset:
        from tflite_opt.representative_data.dataset import validate

        if not isinstance(self.data, Dataset):
            return load_data(
                self.data,
                specs,
                preprocess=self.options.preprocess,
                num_samples=self.options.num_samples,
                allow_random=self.options.allow_random,
            )
        dataset = Dataset(
            inputs=dict(self.data.inputs),
            labels=self.data.labels,
            source=self.data.source,
            class_names=self.data.class_names,
            warnings=list(self.data.warnings),
        ).take(self.options.num_samples)
        dataset.inputs = dict(dataset.inputs)
        if len(specs) == 1 and len(dataset.inputs) == 1 and specs[0].name not in dataset.inputs:
            # One array for a one-input model, whatever its key (as 'x' in a .npz).
            dataset.inputs = {specs[0].name: next(iter(dataset.inputs.values()))}
        validate(dataset, specs)  # raises its message, or casts
        return dataset

    def note(self, warnings) -> None:
        """Keep warnings about the data (each once), to be reported after the run."""
        for warning in warnings:
            if warning not in self.warnings:
                self.warnings.append(warning)


def describe_files(sources: Sequence[Any], options: Any) -> dict[str, SignatureInfo]:
    """Each loadable source's signature, by name (``sources`` are ``VariantSource``-like: name, path, content).

    A file that cannot be read or loaded is left out: it is reported with its error when it is measured.
    """
    from tflite_opt.measure.input_shapes import resize_signature

    signatures: dict[str, SignatureInfo] = {}
    for source in sources:
        label = source.path or source.name
        try:
            content = source.content if source.content is not None else read_model_bytes(source.path)
            info = load_signature(content, signature=options.signature, source=label)
            signatures[source.name] = resize_signature(info, options.input_shapes, label)
        except TfliteOptError:
            continue
    return signatures


def check_data_fits(signatures: dict[str, SignatureInfo], cache: DataCache) -> None:
    """Validate the data against every file once, up front.

    Raises:
        DataError: the data fits none of the files (one line, the first file's reason); data that fits some
            files is reported against each file it does not fit.
    """
    if cache.data is None or not signatures:
        return
    reasons = []
    for info in signatures.values():
        try:
            cache.fitted(info)
            return
        except DataError as exc:
            reasons.append(str(exc))
    if len(reasons) == 1:
        raise DataError(reasons[0])
    raise DataError(f"the data fits none of the {len(reasons)} files: {reasons[0]}")


def _shape(binding) -> str:
    dims = ", ".join("?" if d < 0 else str(d) for d in binding.shape_signature[1:])
    return f"({dims}{',' if len(binding.shape_signature) == 2 else ''})"


def describe_signature_io(info: SignatureInfo) -> str:
    """``image (8, 8, 1) → logits (10,)``: names and per-sample shapes of the inputs, then of the outputs."""
    inputs = ", ".join(f"{b.name} {_shape(b)}" for b in info.inputs)
    outputs = ", ".join(f"{b.name} {_shape(b)}" for b in info.outputs)
    return f"{inputs} → {outputs}"


def _same_sample_shape(a, b) -> bool:
    left, right = a.shape_signature[1:], b.shape_signature[1:]
    return len(left) == len(right) and all(x == y or x < 0 or y < 0 for x, y in zip(left, right))


def _paired(reference, other) -> list[tuple] | None:
    """Tensors matched as evaluation matches them: by name, else the only one on each side (``None``: no match)."""
    by_name = {b.name: b for b in other}
    if {b.name for b in reference} == set(by_name):
        return [(b, by_name[b.name]) for b in reference]
    if len(reference) == 1 and len(other) == 1:
        return [(reference[0], other[0])]
    return None


def signature_difference(reference: SignatureInfo | None, other: SignatureInfo | None) -> str | None:
    """How ``other``'s inputs/outputs differ from the reference's, or ``None`` when they match (or are unknown).

    Inputs and outputs are matched as evaluation matches them (by name, else the only one on each side: a
    tf_keras export names its output ``logits`` where Keras 3 says ``output_0``), then their per-sample shapes
    are compared, a dynamic axis matching anything. Dtypes are not: an int8 file of a float model is the same model.
    """
    if reference is None or other is None or reference is other:
        return None
    for ref_side, other_side in ((reference.inputs, other.inputs), (reference.outputs, other.outputs)):
        pairs = _paired(ref_side, other_side)
        if pairs is None or not all(_same_sample_shape(a, b) for a, b in pairs):
            return f"{describe_signature_io(other)} vs {describe_signature_io(reference)}"
    return None

"""``evaluate --input-shape NAME=D0,D1,...``: give a ``.tflite`` input's dynamic (-1) axes a size.

A file converted from a model with an unknown height and width keeps ``-1`` in its inputs' ``shape_signature``;
LiteRT can resize such an input (``resize_tensor_input``) before it allocates. This module only works out the
shapes: :class:`~tflite_opt.measure.runtime.ModelRunner` resizes to them, and the data is validated against them.
The batch axis stays the file's own when it is dynamic (evaluation picks its batch size itself).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from tflite_opt.errors import EvaluationError


def _fmt(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("-1" if d is None or d < 0 else str(d) for d in shape) + ")"


def _resized(binding: Any, shape: Sequence[int | None], source: str) -> tuple[int, ...]:
    stored = binding.shape_signature
    if len(shape) != len(stored):
        raise EvaluationError(
            f"--input-shape {binding.name} has {len(shape)} dimensions but input '{binding.name}' of {source} has "
            f"{len(stored)} {_fmt(stored)}"
        )
    new = []
    for axis, (want, have) in enumerate(zip(shape, stored)):
        if have >= 0 and want is not None and want != have:
            raise EvaluationError(
                f"--input-shape {binding.name}={_fmt(shape)} conflicts with the fixed shape {_fmt(stored)} of input "
                f"'{binding.name}' in {source}; only its -1 (dynamic) axes can be set"
            )
        keep = have >= 0 or want is None or axis == 0
        new.append(int(have) if keep else int(want))
    return tuple(new)


def resize_signature(info: Any, shapes: Mapping[str, Sequence[int | None]] | None, source: str) -> Any:
    """``info`` (a :class:`~tflite_opt.measure.runtime.SignatureInfo`) with the inputs named in ``shapes`` resized.

    Raises:
        EvaluationError: a name that is not an input, a different number of dimensions, or a size for an axis
            the file fixes to another size.
    """
    if not shapes:
        return info
    names = [binding.name for binding in info.inputs]
    unknown = sorted(set(shapes) - set(names))
    if unknown:
        raise EvaluationError(
            f"--input-shape names {', '.join(unknown)}, but the inputs of {source} are {', '.join(names)}"
        )
    inputs = []
    for binding in info.inputs:
        if binding.name not in shapes:
            inputs.append(binding)
            continue
        signature = _resized(binding, shapes[binding.name], source)
        spec = dataclasses.replace(binding.spec, shape=tuple(None if d < 0 else d for d in signature))
        inputs.append(dataclasses.replace(binding, spec=spec, shape_signature=signature))
    return dataclasses.replace(info, inputs=tuple(inputs))

"""Value-range checks that catch mis-scaled data before it silently ruins calibration or evaluation.

Three mistakes look fine to every shape and dtype check, and cost tens of accuracy points:

* integer arrays (``uint8`` images, ``int16`` audio) given to a float input: a model trained on [0, 1] floats
  then sees 0-255 (:func:`integer_array_warning`, from :func:`~tflite_opt.representative_data.dataset.validate`);
* data outside what a quantized input can represent: an int8 input with scale 1/255 and zero point -128 holds
  [0, 1]; every larger value is clipped when it is quantized (:func:`clipping_warnings`);
* calibration data scaled unlike the evaluation data: the quantization ranges are then set for the wrong values
  (:func:`range_mismatch_warnings`).

Each returns the sentences to warn with (commands pass them to ``progress.warn``, which ``--strict`` makes
errors); nothing here prints or raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from tflite_opt.representative_data import parallel
from tflite_opt.specs import TensorSpec

# More than this share of values outside a quantized input's range is worth a warning (clipping a few outliers
# is what calibration does on purpose).
CLIP_SHARE_LIMIT = 0.01
# Calibration and evaluation ranges whose widths differ by more than this factor are scaled differently.
RANGE_RATIO_LIMIT = 2.0


def _num(value: float) -> str:
    return f"{value:.4g}"


def value_range(array: np.ndarray) -> tuple[float, float]:
    """(min, max) of an array as floats ((0, 0) when empty)."""
    if array.size == 0:
        return 0.0, 0.0
    return parallel.min_max(array)


def integer_array_warning(array: np.ndarray, spec: TensorSpec, source: str) -> str | None:
    """A warning when integer-typed samples feed a float input with values beyond [-1, 1] (e.g. 0-255 pixels).

    Integer arrays of 0/1 flags are left alone; so are float arrays, whatever their range (a float array says
    its scale on purpose).
    """
    if array.dtype.kind not in "iu" or np.dtype(spec.dtype).kind != "f" or array.size == 0:
        return None
    low, high = value_range(array)
    if max(abs(low), abs(high)) <= 1:
        return None
    return (
        f"input '{spec.name}' takes floats but {source} holds {array.dtype} values in [{_num(low)}, {_num(high)}]; "
        "if the model was trained on scaled inputs, scale the arrays (e.g. x / 255 for [0, 1]; an image folder "
        "with --preprocess unit does this), or save them as float32 if it expects this range"
    )


def representable_range(spec: TensorSpec) -> tuple[float, float] | None:
    """The real values a quantized tensor can hold: ``(qmin - zero_point) * scale`` .. ``(qmax - zero_point) * scale``."""
    if not spec.scale or np.dtype(spec.dtype).kind not in "iu":
        return None
    info = np.iinfo(np.dtype(spec.dtype))
    zero_point = spec.zero_point or 0
    return (info.min - zero_point) * spec.scale, (info.max - zero_point) * spec.scale


def clipped_share(array: np.ndarray, spec: TensorSpec, known_range: tuple[float, float] | None = None) -> float:
    """Share of ``array``'s values that quantizing into ``spec`` clips (beyond half a step outside its range).

    ``known_range``: the array's (min, max), when the caller has it (:meth:`Dataset.known_ranges`).
    """
    bounds = representable_range(spec)
    if bounds is None or array.size == 0:
        return 0.0
    tolerance = spec.scale / 2
    low, high = bounds[0] - tolerance, bounds[1] + tolerance
    data_low, data_high = known_range or value_range(array)
    if data_low >= low and data_high <= high:  # the common case: one min/max pass, no counting
        return 0.0
    outside = np.count_nonzero(array < low) + np.count_nonzero(array > high)
    return outside / array.size


def clipping_warnings(
    inputs: Iterable[TensorSpec],
    arrays: Mapping[str, np.ndarray],
    model: str,
    source: str,
    known_ranges: Mapping[str, tuple[float, float]] | None = None,
) -> list[str]:
    """Warnings for the quantized inputs of ``model`` whose range clips more than 1% of the data's values.

    Args:
        inputs: the model's inputs as stored (dtype, scale, zero point).
        arrays: the data, real values by input name.
        model: what to call the model (its path).
        source: what to call the data (its path).
        known_ranges: (min, max) of arrays the caller has already read, by input name.
    """
    warnings = []
    for spec in inputs:
        bounds = representable_range(spec)
        array = arrays.get(spec.name)
        if bounds is None or array is None:
            continue
        known = (known_ranges or {}).get(spec.name)
        share = clipped_share(array, spec, known)
        if share <= CLIP_SHARE_LIMIT:
            continue
        low, high = known or value_range(array)
        warnings.append(
            f"{share:.1%} of the values of input '{spec.name}' in {source} (range [{_num(low)}, {_num(high)}]) lie "
            f"outside what {model} can represent ([{_num(bounds[0])}, {_num(bounds[1])}], {spec.dtype} with scale "
            f"{spec.scale:.6g} and zero point {spec.zero_point or 0}) and are clipped; scale the data like the "
            "data the model was calibrated on"
        )
    return warnings


def range_mismatch_warnings(
    calibration: Mapping[str, np.ndarray], evaluation: Mapping[str, np.ndarray], calibration_source: str,
    evaluation_source: str,
) -> list[str]:  # fmt: skip
    """Warnings for the inputs whose calibration and evaluation value ranges differ in width by more than 2×."""
    warnings = []
    for name in sorted(set(calibration) & set(evaluation)):
        cal_low, cal_high = value_range(np.asarray(calibration[name]))
        eval_low, eval_high = value_range(np.asarray(evaluation[name]))
        cal_width, eval_width = cal_high - cal_low, eval_high - eval_low
        narrow, wide = sorted((cal_width, eval_width))
        if wide == 0 or (narrow > 0 and wide / narrow <= RANGE_RATIO_LIMIT):
            continue
        factor = f"{wide / narrow:.3g}× " if narrow > 0 else ""
        warnings.append(
            f"input '{name}': the calibration data ({calibration_source}) spans [{_num(cal_low)}, {_num(cal_high)}] "
            f"but the evaluation data ({evaluation_source}) spans [{_num(eval_low)}, {_num(eval_high)}] "
            f"(the calibration range is {factor}{'wider' if cal_width > eval_width else 'narrower'}); quantization ranges set on one do not "
            "fit the other: scale both sets the same way"
        )
    return warnings

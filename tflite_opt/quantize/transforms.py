"""The float-model transforms that rescue int8, as ``convert --equalize --bias-correction`` and ``auto`` run them:
cross-layer equalization (:mod:`tflite_opt.quantize.equalize`), then empirical bias correction
(:mod:`tflite_opt.quantize.bias_correction`), then the usual conversion of the transformed Keras model.

Both need the Keras model (a SavedModel has no layer graph to rescale) and the calibration data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tflite_opt.errors import ConversionError
from tflite_opt.modes import Backend, Granularity, Mode

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.models import LoadedModel
    from tflite_opt.progress import Progress
    from tflite_opt.quantize.bias_correction import BiasCorrectionResult
    from tflite_opt.quantize.equalize import EqualizeResult
    from tflite_opt.quantize.options import ConversionOptions
    from tflite_opt.representative_data import Dataset


@dataclass
class TransformedModel:
    """A Keras model after the rescue transforms.

    Attributes:
        keras_model: the model to convert (the source model itself when no transform was asked for).
        transforms: report v2 ``transforms`` entries, in the order applied (``["equalize", "bias_correction"]``).
        equalize: what equalization did, when it ran.
        bias_correction: what bias correction did, when it ran.
    """

    keras_model: Any
    transforms: list[str] = field(default_factory=list)
    equalize: "EqualizeResult | None" = None
    bias_correction: "BiasCorrectionResult | None" = None

    def summaries(self) -> list[str]:
        """One line per transform, for ``progress.info``."""
        results = (self.equalize, self.bias_correction)
        return [result.summary() for result in results if result is not None]


def check_applicable(model: "LoadedModel", options: "ConversionOptions", *, bias_correction: bool) -> None:
    """Refuse the transforms where they cannot work, before any conversion.

    Raises:
        ConversionError: not a Keras model, or bias correction on a mode/backend whose weights it does not model.
    """
    if getattr(model, "keras_model", None) is None:
        raise ConversionError(
            f"--equalize and --bias-correction rescale a Keras model's layers; {model.path} is a SavedModel, which has "
            "no layer graph to rescale (convert from the .keras/.h5 file)"
        )
    if bias_correction and (
        Mode(options.mode) != Mode.INT8
        or options.resolved_backend != Backend.CONVERTER
        or Granularity(options.granularity) not in (Granularity.CHANNEL, Granularity.TENSOR)
    ):
        raise ConversionError(
            "--bias-correction corrects the converter's int8 weights: use it with --mode int8 (--backend converter)"
        )


def transform(
    model: "LoadedModel",
    representative: "Dataset | None",
    options: "ConversionOptions",
    *,
    equalize: bool = False,
    bias_correction: bool = False,
    relu6: str = "keep",
    progress: "Progress | None" = None,
) -> TransformedModel:
    """Apply the asked-for transforms to ``model``'s Keras model (equalization first, then bias correction).

    Args:
        model: the loaded source model (Keras 3 or tf_keras).
        representative: the calibration samples; equalization is checked on them, bias correction measured on them.
        options: the conversion the result is for (bias correction needs its mode, backend and granularity).
        equalize: run cross-layer equalization.
        bias_correction: run empirical bias correction.
        relu6: how equalization treats ReLU6 (``"keep"`` or ``"unclipped"``).
        progress: progress reporter.

    Raises:
        ConversionError: a transform does not apply, or equalization changed the float function.
    """
    from tflite_opt.quantize.bias_correction import apply_bias_correction
    from tflite_opt.quantize.equalize import equalize_model

    result = TransformedModel(getattr(model, "keras_model", None))
    if not (equalize or bias_correction):
        return result
    check_applicable(model, options, bias_correction=bias_correction)
    if representative is None:
        raise ConversionError("--equalize and --bias-correction need calibration data (--representative-data)")
    if equalize:
        result.equalize = equalize_model(
            result.keras_model, representative, num_samples=options.num_samples, relu6=relu6, progress=progress
        )
        result.keras_model = result.equalize.model
        result.transforms += result.equalize.transforms
    if bias_correction:
        per_tensor = Granularity(options.granularity) == Granularity.TENSOR
        result.bias_correction = apply_bias_correction(
            result.keras_model,
            representative,
            num_samples=options.num_samples,
            per_tensor=per_tensor,
            progress=progress,
        )
        result.keras_model = result.bias_correction.model
        result.transforms += result.bias_correction.transforms
    return result


def convert_transformed(
    model: "LoadedModel",
    options: "ConversionOptions",
    representative: "Dataset | None",
    *,
    equalize: bool = False,
    bias_correction: bool = False,
    relu6: str = "keep",
    save_transformed: str | None = None,
    progress: "Progress | None" = None,
) -> tuple[bytes, TransformedModel]:
    """:func:`transform`, then convert the transformed Keras model with ``options`` (``--keep-float`` included).

    Args:
        model, options, representative, equalize, bias_correction, relu6, progress: as for :func:`transform`.
        save_transformed: also save the transformed Keras model there (``--save-equalized model.keras``).

    Returns:
        The ``.tflite`` bytes and what was done.
    """
    from tflite_opt.quantize import conversion
    from tflite_opt.quantize.equalize import save_keras_model

    transformed = transform(
        model,
        representative,
        options,
        equalize=equalize,
        bias_correction=bias_correction,
        relu6=relu6,
        progress=progress,
    )
    if save_transformed is not None and (equalize or bias_correction):
        save_keras_model(transformed.keras_model, save_transformed)
    if not transformed.transforms:  # nothing was rescaled or corrected: the source model converts as it is
        return conversion.convert(model, options, representative, progress), transformed
    content = conversion.convert_keras_model(transformed.keras_model, options, representative, progress)
    return content, transformed

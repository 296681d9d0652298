"""What a conversion should produce, as a value shared by every backend and transform (the ``convert`` flags)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tflite_opt.modes import Algorithm, Backend, Granularity, IoType, Mode, default_backend

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.progress import Progress
    from tflite_opt.representative_data import Dataset

DEFAULT_CALIBRATION_SAMPLES = 500
MIN_CALIBRATION_SAMPLES = 100  # below this, calibration is warned about
# EXPERIMENTAL_SPARSITY on int8/dynamic files makes XNNPACK fail to prepare FULLY_CONNECTED (google/XNNPACK#1419).
SPARSE_ENCODING_MODES = (Mode.FP32, Mode.FLOAT16, Mode.INT16X8)


@dataclass
class ConversionOptions:
    """What a conversion should produce (the ``convert`` flags, as a value).

    Attributes:
        mode: the post-training mode.
        io_type: int8 mode only: the type of the model's inputs and outputs (int8 = integer-only I/O).
        allow_float_fallback: int8 mode: keep ops without an int8 kernel in float instead of failing.
        keep_float: layer names, tensor names or op types to keep in float (int8 mode; selective quantization).
        num_samples: calibration samples to use (``None``: all given, at most ``DEFAULT_CALIBRATION_SAMPLES``).
        sparsity: add ``EXPERIMENTAL_SPARSITY`` (pruned models: sparse weights encoded compactly).
        backend: who makes the file (``None``: the mode's default, :func:`tflite_opt.modes.default_backend`).
        granularity: weight scales per channel (default), per tensor, or per block (quantizer int4).
        algorithm: quantizer only: how weight scales are chosen.
        recipe: quantizer only: a recipe JSON file (the LiteRT Quantizer's format) applied after the mode's recipe.
    """

    mode: Mode
    io_type: IoType = IoType.INT8
    allow_float_fallback: bool = False
    keep_float: Sequence[str] = field(default_factory=tuple)
    num_samples: int | None = None
    sparsity: bool = False
    backend: Backend | None = None
    granularity: Granularity = Granularity.CHANNEL
    algorithm: Algorithm = Algorithm.MINMAX
    recipe: Path | None = None

    @property
    def resolved_backend(self) -> Backend:
        """The backend that makes this file: the one asked for, else the mode's default."""
        return Backend(self.backend) if self.backend is not None else default_backend(Mode(self.mode))


@dataclass
class ConversionResult:
    """A converted file and how it was made (what ``report.json`` records besides the file itself).

    Attributes:
        content: the ``.tflite`` flatbuffer.
        backend: who made it.
        recipe: the LiteRT Quantizer recipe applied (JSON-ready), ``None`` for the converter.
        quantized_ops: quantizer: the weight ops whose weights are now integers.
        float_ops: quantizer: weight ops left in float, each with its reason.
        changes: what was done besides quantizing (old-schema codes normalized, signature added, ...).
    """

    content: bytes
    backend: Backend
    recipe: list[dict] | None = None
    quantized_ops: list[str] = field(default_factory=list)
    float_ops: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)


def calibration_samples(
    representative: "Dataset", num_samples: int | None, progress: "Progress | None" = None
) -> "Dataset":
    """The samples calibration uses: the first ``num_samples`` (default ``DEFAULT_CALIBRATION_SAMPLES``).

    With ``progress`` (the calibration itself, not a later look at the same samples), fewer than
    ``MIN_CALIBRATION_SAMPLES`` are warned about: the activation ranges of a few samples miss what the model sees.
    """
    limit = num_samples if num_samples is not None else DEFAULT_CALIBRATION_SAMPLES
    samples = representative.take(limit)
    if progress is not None and len(samples) < MIN_CALIBRATION_SAMPLES:
        progress.warn(
            f"calibrating on {len(samples)} sample{'s' if len(samples) != 1 else ''} of {samples.source}: "
            f"activation ranges from fewer than {MIN_CALIBRATION_SAMPLES} samples are unreliable (the converter's "
            "docs recommend 100-500 representative samples); give more samples"
        )
    return samples

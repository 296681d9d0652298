"""Post-training conversion modes, backends, granularities and algorithms; values are the CLI words."""

from __future__ import annotations

from enum import Enum


class Mode(str, Enum):
    FP32 = "fp32"
    DYNAMIC = "dynamic"
    FLOAT16 = "float16"
    INT8 = "int8"
    INT16X8 = "int16x8"
    INT4 = "int4"
    INT4_WEIGHTS = "int4-weights"
    INT8_WEIGHTS = "int8-weights"

    @property
    def needs_representative_data(self) -> bool:
        return self in (Mode.INT8, Mode.INT16X8)


class Backend(str, Enum):
    """Who makes the file: TFLiteConverter (from a SavedModel) or the LiteRT Quantizer (from a float .tflite)."""

    CONVERTER = "converter"
    QUANTIZER = "quantizer"


CONVERTER_MODES = (Mode.FP32, Mode.DYNAMIC, Mode.FLOAT16, Mode.INT8, Mode.INT16X8)
QUANTIZER_MODES = (Mode.DYNAMIC, Mode.INT8, Mode.INT16X8, Mode.INT4, Mode.INT4_WEIGHTS, Mode.INT8_WEIGHTS)

# The converter's five modes: the default of ``compare``/``demo`` and the ``--mode`` of the training commands.
MODE_NAMES = [m.value for m in CONVERTER_MODES]
# Every mode ``convert`` accepts.
ALL_MODE_NAMES = [m.value for m in Mode]


def parse_variant_mode(token: str) -> tuple[Mode, Backend, str]:
    """A ``compare --modes`` item: ``MODE`` (its default backend) or ``BACKEND:MODE``; returns the mode, the backend
    and the row's name (``MODE``, or ``MODE_BACKEND`` when the backend was named, so both can stand side by side).

    Raises:
        ValueError: an unknown mode or backend, or a backend that cannot make the mode.
    """
    backend_text, _, mode_text = token.strip().rpartition(":")
    mode = Mode(mode_text.strip())
    backend = Backend(backend_text.strip()) if backend_text else default_backend(mode)
    if backend not in backends_for(mode):
        raise ValueError(f"the {backend.value} backend does not make {mode.value}")
    return mode, backend, f"{mode.value}_{backend.value}" if backend_text else mode.value


def default_backend(mode: Mode) -> Backend:
    """The converter for the modes it has always made (no behaviour change), the quantizer for the new ones."""
    return Backend.CONVERTER if Mode(mode) in CONVERTER_MODES else Backend.QUANTIZER


def backends_for(mode: Mode) -> tuple[Backend, ...]:
    """The backends that can make ``mode``."""
    mode = Mode(mode)
    return tuple(
        b for b, modes in ((Backend.CONVERTER, CONVERTER_MODES), (Backend.QUANTIZER, QUANTIZER_MODES)) if mode in modes
    )


class Granularity(str, Enum):
    """How many scales a weight tensor gets: one per output channel, one per tensor, one per block of inputs."""

    CHANNEL = "channel"
    TENSOR = "tensor"
    BLOCK32 = "block32"
    BLOCK64 = "block64"
    BLOCK128 = "block128"
    BLOCK256 = "block256"

    @property
    def block_size(self) -> int:
        """Elements per block (0: not blockwise)."""
        return int(self.value[5:]) if self.value.startswith("block") else 0


class Algorithm(str, Enum):
    """How the quantizer picks weight scales: min-max, MSE search, GPTQ (calibrated), Hadamard rotation."""

    MINMAX = "minmax"
    MSE = "mse"
    GPTQ = "gptq"
    HADAMARD = "hadamard"


class IoType(str, Enum):
    FLOAT32 = "float32"
    INT8 = "int8"
    UINT8 = "uint8"

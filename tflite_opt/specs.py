"""Framework-neutral description of a model's input/output tensors (no TensorFlow import)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output of a model.

    Attributes:
        name: the signature name of the tensor (matched by name, never by position).
        shape: dimensions with ``None`` for unknown ones (usually the batch axis).
        dtype: NumPy dtype name, e.g. ``"float32"``, ``"int8"``.
        scale: quantization scale for quantized .tflite tensors, else ``None``.
        zero_point: quantization zero point for quantized .tflite tensors, else ``None``.
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"
    scale: float | None = None
    zero_point: int | None = None

    @property
    def sample_shape(self) -> tuple[int | None, ...]:
        """The shape without the leading batch axis."""
        return tuple(self.shape[1:])

    def describe(self) -> str:
        dims = ", ".join("None" if d is None else str(d) for d in self.shape)
        return f"'{self.name}' {self.dtype}[{dims}]"

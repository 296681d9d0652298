"""What ``landscape`` measured, as dataclasses with ``to_json_dict()`` and the summary table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tflite_opt.reporting.tables import Note, TextTable
from tflite_opt.workflows.landscape_quantized import KernelShift

SCHEMA_VERSION = 1


@dataclass
class LandscapeGrid:
    """Loss and accuracy over the plane of two filter-normalized random directions.

    ``loss[i][j]`` is at ``w + coordinates[j] * d1 + coordinates[i] * d2`` (rows along direction 2, columns along
    direction 1, as a contour plot reads it). The float weights are the centre.
    """

    coordinates: list[float]
    loss: list[list[float]]
    accuracy: list[list[float]]
    seconds: float

    @property
    def centre_loss(self) -> float:
        middle = len(self.coordinates) // 2
        return self.loss[middle][middle]

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "size": len(self.coordinates),
            "span": max(self.coordinates) if self.coordinates else 0.0,
            "coordinates": self.coordinates,
            "loss": self.loss,
            "accuracy": self.accuracy,
            "seconds": self.seconds,
        }


@dataclass
class QuantizationCurve:
    """Loss and accuracy along ``w + alpha * (dequantized - w)``, and the real file's numbers at alpha = 1.

    Attributes:
        alpha: 0 = the float weights, 1 = the file's weights (evaluated in float), 2 = twice as far.
        distance: the quantization direction's length in filter-normalized units (see
            :func:`~tflite_opt.workflows.landscape_directions.filter_normalized_distance`).
        tflite_accuracy / tflite_loss: the ``.tflite`` file itself run by LiteRT (for int8 and int16x8 the
            activations are quantized too), ``None`` when it could not be run.
        kernels: per kernel, the file tensor it was matched to and how much it moved.
    """

    alpha: list[float]
    loss: list[float]
    accuracy: list[float]
    distance: float
    tflite_accuracy: float | None
    tflite_loss: float | None
    kernels: list[KernelShift] = field(default_factory=list)

    def value_at(self, alpha: float) -> tuple[float, float]:
        """(loss, accuracy) of the curve point closest to ``alpha``."""
        index = min(range(len(self.alpha)), key=lambda i: abs(self.alpha[i] - alpha))
        return self.loss[index], self.accuracy[index]

    def to_json_dict(self) -> dict[str, Any]:
        loss, accuracy = self.value_at(1.0)
        return {
            "alpha": self.alpha,
            "loss": self.loss,
            "accuracy": self.accuracy,
            "distance": self.distance,
            "quantized": {"alpha": 1.0, "loss": loss, "accuracy": accuracy},
            "tflite": {"accuracy": self.tflite_accuracy, "loss": self.tflite_loss},
            "kernels": [k.to_json_dict() for k in self.kernels],
        }


@dataclass
class Sharpness:
    """The mean loss rise at a fixed filter-normalized radius: ``L(w ± radius * d_k) - L(w)`` over ``directions``
    random filter-normalized directions ``d_k`` (both signs), so ``2 * directions`` points."""

    radius: float
    directions: int
    loss_rise: float
    max_loss_rise: float
    rises: list[float]

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "radius": self.radius,
            "directions": self.directions,
            "loss_rise": self.loss_rise,
            "max_loss_rise": self.max_loss_rise,
            "rises": self.rises,
        }


@dataclass
class LandscapeResult:
    """Everything ``landscape`` measured on one model."""

    model: str
    data: str
    mode: str
    num_samples: int
    seed: int
    loss_name: str
    loss_source: str
    float_loss: float
    float_accuracy: float
    grid: LandscapeGrid
    curve: QuantizationCurve
    sharpness: Sharpness
    seconds: float
    plot: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json_dict(self) -> dict[str, Any]:
        """The ``--format json`` document."""
        from tflite_opt import __version__

        return {
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": "tflite-opt", "version": __version__},
            "model": self.model,
            "data": self.data,
            "mode": self.mode,
            "num_samples": self.num_samples,
            "seed": self.seed,
            "loss": {"name": self.loss_name, "source": self.loss_source},
            "float": {"loss": self.float_loss, "accuracy": self.float_accuracy},
            "grid": self.grid.to_json_dict(),
            "curve": self.curve.to_json_dict(),
            "sharpness": self.sharpness.to_json_dict(),
            "seconds": self.seconds,
            "plot": self.plot,
            "warnings": list(self.warnings),
        }

    def table(self) -> TextTable:
        """The summary: loss and accuracy at the float weights, at the quantized weights, and of the real file."""

        def row(what: str, loss: float | None, accuracy: float | None) -> tuple[str, str, str]:
            return (what, "—" if loss is None else f"{loss:.4f}", "—" if accuracy is None else f"{accuracy * 100:.2f}%")

        curve = self.curve
        q_loss, q_accuracy = curve.value_at(1.0)
        far_loss, far_accuracy = curve.value_at(2.0)
        rows = [
            row("float weights (α = 0)", self.float_loss, self.float_accuracy),
            row(f"{self.mode} weights, run in float (α = 1)", q_loss, q_accuracy),
            row(f"{self.mode} .tflite file, run in LiteRT", curve.tflite_loss, curve.tflite_accuracy),
            row("twice the quantization step (α = 2)", far_loss, far_accuracy),
        ]
        grid = self.grid
        flat = [value for line in grid.loss for value in line]
        notes = [
            Note(
                f"sharpness: mean loss rise {self.sharpness.loss_rise:.4f} (max {self.sharpness.max_loss_rise:.4f}) "
                f"at filter-normalized radius {self.sharpness.radius:g} over {2 * self.sharpness.directions} points",
                "bold",
            ),
            Note(
                f"{self.mode} moves the weights {curve.distance:.4f} in filter-normalized units "
                f"(a random filter-normalized direction has length 1)"
            ),
            Note(
                f"grid {len(grid.coordinates)}×{len(grid.coordinates)} over ±{max(grid.coordinates):g}: loss "
                f"{min(flat):.4f} … {max(flat):.4f}, {grid.seconds:.1f} s; {self.num_samples} samples, "
                f"loss {self.loss_name}",
                "dim",
            ),
        ]
        if self.plot:
            notes.append(Note(f"plot: {self.plot}", "dim"))
        return TextTable(
            headers=("weights", "loss", "accuracy"),
            rows=rows,
            right=frozenset({1, 2}),
            notes=notes,
            title=f"Loss landscape of {self.model} ({self.mode})",
        )

"""The loss-landscape figure (``landscape --plot FILE.png``): two panels side by side.

Left: filled contours of the loss over the plane of two filter-normalized random directions, the float weights
marked at the centre, a colour bar, and a dashed circle whose radius is the length of the quantization step in
the same units (how far the quantized weights are from the float ones — not their direction, which is not in
this plane). Contours are log-spaced when the loss spans more than a decade, which keeps the detail of
the basin around the minimum.

Right: the loss (left axis) and accuracy (right axis) along the quantization direction, α = 0 the float
weights, α = 1 the quantized weights evaluated in float, α = 2 twice as far; the real ``.tflite`` file's
accuracy (and loss) measured in LiteRT are marked beside the curve at α = 1.

matplotlib is imported here only, through its object API with the Agg canvas (no ``pyplot``, no display).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

LOG_RANGE = 10.0  # max/min loss ratio above which contours are log-spaced (the basin keeps its detail)
CURVE_LOG_RANGE = 100.0  # likewise for the curve's loss axis
LEVELS = 24


def _levels(loss: np.ndarray):
    """(levels, norm or None, is_log) for the contour plot of ``loss``."""
    from matplotlib.colors import LogNorm

    low, high = float(np.min(loss)), float(np.max(loss))
    if high <= low:
        high = low + max(abs(low) * 1e-6, 1e-12)
    if low > 0 and high / low > LOG_RANGE:
        return np.geomspace(low, high, LEVELS), LogNorm(vmin=low, vmax=high), True
    return np.linspace(low, high, LEVELS), None, False


def _contour_panel(figure, axes, coordinates, loss, distance, mode, sharpness_radius) -> None:
    from matplotlib.patches import Circle
    from matplotlib.ticker import FuncFormatter, NullFormatter

    grid = np.asarray(loss, dtype=np.float64)
    x = np.asarray(coordinates, dtype=np.float64)
    levels, norm, is_log = _levels(grid)
    filled = axes.contourf(x, x, grid, levels=levels, norm=norm, cmap="viridis")
    axes.contour(x, x, grid, levels=levels[::3], norm=norm, colors="white", linewidths=0.5, alpha=0.6)
    bar = figure.colorbar(filled, ax=axes, shrink=0.9, ticks=levels[::4])
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:.3g}"))
    bar.ax.yaxis.set_minor_formatter(NullFormatter())
    bar.set_label("loss (log scale)" if is_log else "loss")
    axes.plot(
        [0],
        [0],
        marker="*",
        markersize=14,
        color="red",
        markeredgecolor="white",
        linestyle="none",
        label="float weights",
        zorder=5,
    )
    span = float(np.max(np.abs(x)))
    if 0 < distance < span:
        axes.add_patch(
            Circle(
                (0, 0),
                distance,
                fill=False,
                linestyle="--",
                linewidth=1.5,
                color="orange",
                label=f"{mode} step length ({distance:.3g})",
                zorder=4,
            )
        )
    elif distance > 0:
        axes.plot([], [], linestyle="--", color="orange", label=f"{mode} step length {distance:.3g} (off the grid)")
    if 0 < sharpness_radius < span:
        axes.add_patch(
            Circle(
                (0, 0),
                sharpness_radius,
                fill=False,
                linestyle=":",
                linewidth=1.2,
                color="white",
                label=f"sharpness radius ({sharpness_radius:g})",
                zorder=4,
            )
        )
    axes.set_aspect("equal")
    axes.set_xlabel("filter-normalized random direction 1")
    axes.set_ylabel("filter-normalized random direction 2")
    axes.set_title("loss around the float weights", fontsize=10)
    axes.legend(loc="upper right", fontsize=7, framealpha=0.8)


def _curve_panel(axes, alpha, loss, accuracy, mode, tflite_accuracy, tflite_loss) -> None:
    from matplotlib.ticker import PercentFormatter

    alpha = np.asarray(alpha, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    index = int(np.argmin(np.abs(alpha - 1.0)))
    axes.plot(alpha, loss, color="C0", marker="o", markersize=3, label="loss (weights moved, run in float)")
    axes.plot(
        [alpha[index]],
        [loss[index]],
        marker="D",
        color="C0",
        markersize=8,
        linestyle="none",
        label=f"{mode} weights: loss {loss[index]:.4f}",
    )
    axes.plot([0], [loss[0]], marker="*", markersize=12, color="red", linestyle="none", label="float weights")
    if tflite_loss is not None:
        axes.plot(
            [1.0],
            [tflite_loss],
            marker="X",
            markersize=9,
            color="C3",
            linestyle="none",
            label=f"{mode} .tflite (LiteRT) loss {tflite_loss:.4f}",
        )
    if loss.min() > 0 and loss.max() / loss.min() > CURVE_LOG_RANGE:
        axes.set_yscale("log")
    axes.axvline(1.0, color="grey", linewidth=0.8, linestyle=":")
    axes.set_xlabel(f"α  (0 = float weights, 1 = {mode} weights, 2 = twice the step)")
    axes.set_ylabel("loss", color="C0")
    right = axes.twinx()
    right.plot(alpha, accuracy, color="C1", marker="s", markersize=3, label="accuracy (run in float)")
    if tflite_accuracy is not None:
        right.plot(
            [1.0],
            [tflite_accuracy],
            marker="P",
            markersize=10,
            color="C2",
            linestyle="none",
            label=f"{mode} .tflite (LiteRT) accuracy {tflite_accuracy * 100:.2f}%",
        )
    right.set_ylabel("top-1 accuracy", color="C1")
    right.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))
    values = list(accuracy) + ([tflite_accuracy] if tflite_accuracy is not None else [])
    low, high = min(values), max(values)
    pad = max((high - low) * 0.15, 0.005)
    right.set_ylim(max(0.0, low - pad), min(1.0, high + pad) if high + pad > low else 1.0)
    handles, labels = axes.get_legend_handles_labels()
    more, more_labels = right.get_legend_handles_labels()
    axes.legend(handles + more, labels + more_labels, loc="best", fontsize=7, framealpha=0.8)
    axes.set_title(f"along the {mode} quantization direction", fontsize=10)
    axes.grid(True, alpha=0.3)


def plot_landscape(
    path: str | os.PathLike,
    *,
    coordinates: Sequence[float],
    grid_loss: Sequence[Sequence[float]],
    alpha: Sequence[float],
    curve_loss: Sequence[float],
    curve_accuracy: Sequence[float],
    mode: str,
    distance: float,
    tflite_accuracy: float | None = None,
    tflite_loss: float | None = None,
    sharpness_radius: float = 0.0,
    title: str | None = None,
) -> Path:
    """Draw the contour plot and the quantization curve, and write them as one PNG (atomically).

    Args:
        path: the ``.png`` to write; its folder is created.
        coordinates: the grid's coordinates along both directions (``grid_loss[i][j]`` is at
            ``(coordinates[j], coordinates[i])``).
        grid_loss: the loss over the grid.
        alpha, curve_loss, curve_accuracy: the curve along the quantization direction.
        mode: the quantization mode (labels).
        distance: the quantization step's filter-normalized length (the dashed circle).
        tflite_accuracy, tflite_loss: the real file's numbers at α = 1 (``None``: not measured).
        sharpness_radius: the radius the sharpness number is taken at (dotted circle; 0 = none).
        title: the figure's title.

    Returns:
        The written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from tflite_opt.fileio import atomic_save

    figure = Figure(figsize=(13.0, 5.4), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2, width_ratios=[1.0, 1.15])
    _contour_panel(figure, left, coordinates, grid_loss, distance, mode, sharpness_radius)
    _curve_panel(right, alpha, curve_loss, curve_accuracy, mode, tflite_accuracy, tflite_loss)
    if title:
        figure.suptitle(title, fontsize=11)
    target = Path(path)
    atomic_save(target, lambda tmp: figure.savefig(tmp, format="png"))
    return target

"""The accuracy-vs-latency trade-off plot of a report (``compare --plot FILE.png``).

One marker per measured variant: x = median latency (ms), y = top-1 accuracy, marker *area* proportional to the
file size, the reference drawn hollow. Without labels the y axis falls back to agreement with the reference;
without latency runs the x axis falls back to the file size. Variants that failed are left out (they are in
the table and the report with their error).

matplotlib is imported here only, and through its object API with the Agg canvas — never ``pyplot`` — so
plotting touches no global backend state and needs no display.
"""

from __future__ import annotations

import os
from pathlib import Path

from tflite_opt.errors import EvaluationError
from tflite_opt.report import Report, VariantResult, format_size

MIN_AREA = 60.0  # points², so that the smallest file is still visible
MAX_AREA = 2000.0


def _axes_values(report: Report) -> tuple[str, str, list[tuple[VariantResult, float, float]]]:
    measured = [v for v in report.variants if v.ok and v.size_bytes]
    if any(v.accuracy is not None for v in measured):
        y_key, y_label = "accuracy", "top-1 accuracy"
    elif any(v.agreement is not None for v in measured):
        y_key, y_label = "agreement", "top-1 agreement with the reference"
    else:
        raise EvaluationError(
            "nothing to plot: no variant has an accuracy or an agreement; evaluate with --data"
        )
    if any(v.latency_ms is not None for v in measured):
        x_label = "median latency (ms), batch 1"

        def x_of(v: VariantResult):
            return None if v.latency_ms is None else v.latency_ms.median
    else:
        x_label = "file size (KB)"

        def x_of(v: VariantResult):
            return v.size_bytes / 1024

    points = []
    for variant in measured:
        x, y = x_of(variant), getattr(variant, y_key)
        if x is not None and y is not None:
            points.append((variant, float(x), float(y)))
    if not points:
        raise EvaluationError("nothing to plot: no variant has both a y value and a latency/size")
    return x_label, y_label, points


def _label_offsets(axes, points) -> list[float]:
    """Vertical label offsets (points) so that labels of markers at nearly the same place do not overlap.

    fp32, float16 and dynamic often land on the same accuracy and latency; their labels are stacked instead.
    """
    axes.autoscale_view()
    to_pixels = axes.transData.transform
    placed: list[tuple[float, float]] = []
    offsets = []
    for _, x, y in points:
        px, py = to_pixels((x, y))
        stack = sum(1 for qx, qy in placed if abs(qx - px) < 60 and abs(qy - py) < 14)
        placed.append((px, py))
        offsets.append(6.0 - 12.0 * stack)
    return offsets


def plot_tradeoff(report: Report, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Draw accuracy vs latency with marker area = file size, and write it as a PNG (atomically).

    Args:
        report: an evaluated report (``compare`` or ``evaluate``).
        path: the ``.png`` to write; its folder is created.
        title: figure title (default: derived from the settings).

    Returns:
        The written path.

    Raises:
        EvaluationError: no variant has anything to plot.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    from tflite_opt.fileio import atomic_save

    x_label, y_label, points = _axes_values(report)
    largest = max(v.size_bytes for v, _, _ in points)
    figure = Figure(figsize=(7.5, 5.0), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    xs = [x for _, x, _ in points]
    # Latencies of int16x8 (no XNNPACK kernels) and int8 can be 50x apart: a log axis keeps both readable.
    if min(xs) > 0 and max(xs) / min(xs) > 20:
        axes.set_xscale("log")
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    for index, (variant, x, y) in enumerate(points):
        area = MIN_AREA + (MAX_AREA - MIN_AREA) * variant.size_bytes / largest
        is_reference = variant.name == report.reference
        color = f"C{index % 10}"  # matplotlib's default color cycle, one color per variant
        axes.scatter(
            [x], [y], s=area, alpha=0.55 if not is_reference else 1.0, color=color if not is_reference else "none",
            edgecolors=color, linewidths=2.0 if is_reference else 1.0, label=variant.name, zorder=3,
        )
    axes.margins(0.15)
    # Accuracy and agreement cannot exceed 100%: do not let the margin suggest they can.
    low, high = axes.get_ylim()
    axes.set_ylim(low, min(high, 1.005))
    for (variant, x, y), offset in zip(points, _label_offsets(axes, points)):
        is_reference = variant.name == report.reference
        axes.annotate(
            f"{variant.name}{' (ref)' if is_reference else ''}, {format_size(variant.size_bytes)}",
            (x, y), textcoords="offset points", xytext=(10, offset), fontsize=8,
        )
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))
    axes.grid(True, alpha=0.3, zorder=0)
    settings = report.settings
    axes.set_title(
        title
        or f"accuracy vs latency — marker area = file size ({settings.threads} thread(s), "
        f"XNNPACK {'on' if settings.xnnpack else 'off'})",
        fontsize=10,
    )
    target = Path(path)
    atomic_save(target, lambda tmp: figure.savefig(tmp, format="png"))
    return target

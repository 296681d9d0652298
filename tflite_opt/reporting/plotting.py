"""The accuracy-vs-latency trade-off plot of a report (``compare --plot FILE.png``).

One marker per measured variant: x = median latency (ms), y = top-1 accuracy, marker *area* proportional to the
file size, the reference drawn hollow. Without labels the y axis falls back to agreement with the reference;
without latency runs the x axis falls back to the file size. Variants that failed are left out (they are in
the table and the report with their error).

Labels never overlap: they are placed one by one, each at the first of a fixed list of positions around its
marker (right, then left, above, below, then further out) whose rendered box meets no label placed before it,
preferring positions inside the axes. The figure's margins are fixed (no constrained layout), so the boxes
measured while placing are the boxes drawn. The same inputs give the same placement.

matplotlib is imported here only, and through its object API with the Agg canvas — never ``pyplot`` — so
plotting touches no global backend state and needs no display.
"""

from __future__ import annotations

import io
import math
import os
import re
from pathlib import Path

from tflite_opt.errors import EvaluationError
from tflite_opt.reporting.report import Report, VariantResult, format_size

MIN_AREA = 60.0  # points², so that the smallest file is still visible
MAX_AREA = 2000.0
FIGURE_SIZE = (7.5, 5.0)  # inches
DPI = 120
LABEL_GAP = 2.0  # pixels kept free around every label
_SVG_PROLOGUE = re.compile(r"^\s*<\?xml[^>]*>\s*(<!DOCTYPE[^>]*>\s*)?", re.DOTALL)


def _axes_values(report: Report) -> tuple[str, str, list[tuple[VariantResult, float, float]]]:
    measured = [v for v in report.variants if v.ok and v.size_bytes]
    if any(v.accuracy is not None for v in measured):
        y_key, y_label = "accuracy", "top-1 accuracy"
    elif any(v.agreement is not None for v in measured):
        y_key, y_label = "agreement", "top-1 agreement with the reference"
    else:
        raise EvaluationError("nothing to plot: no variant has an accuracy or an agreement; evaluate with --data")
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


def _candidates(radius: float) -> list[tuple[float, float, str]]:
    """Label positions (offset in points from the marker's centre, horizontal alignment), nearest first.

    ``radius`` is the marker's radius in points: labels start just outside the marker.
    """
    side = radius + 3
    near = [
        (side, -3, "left"),
        (side, 6, "left"),
        (side, -12, "left"),
        (-side, -3, "right"),
        (0, radius + 3, "center"),
        (0, -radius - 11, "center"),
    ]
    further = []
    for step in range(1, 14):
        for dy in (-3 + 10 * step, -3 - 10 * step):
            further += [(side, dy, "left"), (-side, dy, "right")]
    return near + further


def _overlaps(box, placed, gap: float = LABEL_GAP) -> bool:
    return any(
        box.x0 < other.x1 + gap and other.x0 < box.x1 + gap and box.y0 < other.y1 + gap and other.y0 < box.y1 + gap
        for other in placed
    )


def _inside(box, frame) -> bool:
    return frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1


def place_labels(figure, axes, labels, radii) -> None:
    """Move each annotation in ``labels`` to the first candidate position where it overlaps no earlier one.

    Positions inside the axes are preferred, then inside the figure, then any free one.
    """
    renderer = figure.canvas.get_renderer()
    axes_box, figure_box = axes.get_window_extent(renderer), figure.bbox
    placed = []
    for label, radius in zip(labels, radii):
        chosen = None
        for frame in (axes_box, figure_box, None):
            for dx, dy, align in _candidates(radius):
                label.set_position((dx, dy))
                label.set_horizontalalignment(align)
                box = label.get_window_extent(renderer)
                if not _overlaps(box, placed) and (frame is None or _inside(box, frame)):
                    chosen = box
                    break
            if chosen is not None:
                break
        if chosen is None:  # pragma: no cover - more labels than positions: keep the last one tried
            chosen = label.get_window_extent(renderer)
        placed.append(chosen)


def build_tradeoff_figure(report: Report, *, title: str | None = None):
    """The trade-off figure and its variant labels (annotations), labels already placed.

    Raises:
        EvaluationError: no variant has anything to plot.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    x_label, y_label, points = _axes_values(report)
    largest = max(v.size_bytes for v, _, _ in points)
    figure = Figure(figsize=FIGURE_SIZE, dpi=DPI)
    figure.subplots_adjust(left=0.14, right=0.96, bottom=0.11, top=0.91)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    xs = [x for _, x, _ in points]
    # Latencies of int16x8 (no XNNPACK kernels) and int8 can be 50x apart: a log axis keeps both readable.
    if min(xs) > 0 and max(xs) / min(xs) > 20:
        axes.set_xscale("log")
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    radii = []
    for index, (variant, x, y) in enumerate(points):
        area = MIN_AREA + (MAX_AREA - MIN_AREA) * variant.size_bytes / largest
        radii.append(math.sqrt(area / math.pi))
        is_reference = variant.name == report.reference
        color = f"C{index % 10}"  # matplotlib's default color cycle, one color per variant
        axes.scatter(
            [x],
            [y],
            s=area,
            alpha=0.55 if not is_reference else 1.0,
            color=color if not is_reference else "none",
            edgecolors=color,
            linewidths=2.0 if is_reference else 1.0,
            label=variant.name,
            zorder=3,
        )
    axes.margins(0.15)
    axes.autoscale_view()
    # Accuracy and agreement cannot exceed 100%: do not let the margin suggest they can.
    low, high = axes.get_ylim()
    axes.set_ylim(low, min(high, 1.005))
    axes.set_xlim(*axes.get_xlim())  # frozen: the labels are placed in these coordinates
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
    order = sorted(range(len(points)), key=lambda i: (-points[i][2], points[i][1], points[i][0].name))
    labels = [None] * len(points)
    for i in order:
        variant, x, y = points[i]
        is_reference = variant.name == report.reference
        labels[i] = axes.annotate(
            f"{variant.name}{' (ref)' if is_reference else ''}, {format_size(variant.size_bytes)}",
            (x, y),
            textcoords="offset points",
            xytext=(10, 4),
            fontsize=8,
            annotation_clip=False,
            zorder=4,
        )
    place_labels(figure, axes, [labels[i] for i in order], [radii[i] for i in order])
    return figure, labels


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
    from tflite_opt.fileio import atomic_save

    figure, _ = build_tradeoff_figure(report, title=title)
    target = Path(path)
    atomic_save(target, lambda tmp: figure.savefig(tmp, format="png"))
    return target


def tradeoff_svg(report: Report, *, title: str | None = None) -> str:
    """The same plot as inline SVG markup (no XML prologue), for the HTML report.

    Glyphs are drawn as paths (no font needed) and element ids are salted with a constant, so the same report
    gives the same markup.

    Raises:
        EvaluationError: no variant has anything to plot.
    """
    import matplotlib

    with matplotlib.rc_context({"svg.hashsalt": "tflite-opt", "svg.fonttype": "path"}):
        figure, _ = build_tradeoff_figure(report, title=title)
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return _SVG_PROLOGUE.sub("", buffer.getvalue()).strip() + "\n"

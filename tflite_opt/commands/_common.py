"""Pieces every command shares: error translation, the progress reporter, exit code 3 for failed gates."""

from __future__ import annotations

import functools
import sys

import click

from tflite_opt.errors import TfliteOptError, first_line

EXIT_GATE_FAILED = 3


class GateFailed(click.ClickException):
    """A quality gate failed; files and reports were written (exit code 3)."""

    exit_code = EXIT_GATE_FAILED

    def show(self, file=None) -> None:
        click.echo(f"Gate failed: {self.format_message()}", err=True)


def is_verbose() -> bool:
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx else None
    return bool(root and root.obj and root.obj.get("verbose"))


def is_quiet() -> bool:
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx else None
    return bool(root and root.obj and root.obj.get("quiet"))


def progress():
    """The progress reporter for this invocation (rich on stderr, silent with --quiet)."""
    from tflite_opt.reporting.console import RichProgress

    return RichProgress(quiet=is_quiet(), strict=_root_flag("strict"))


def _root_flag(name: str) -> bool:
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx else None
    return bool(root and root.obj and root.obj.get(name))


def handle_errors(func):
    """Turn library errors into one clear line (exit 1); unexpected errors too, with a traceback only under -v."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except TfliteOptError as exc:
            if is_verbose():
                import traceback

                traceback.print_exc(file=sys.stderr)
            raise click.ClickException(str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - last line of defence: one line, not a traceback
            if is_verbose():
                import traceback

                traceback.print_exc(file=sys.stderr)
            raise click.ClickException(
                f"internal error ({type(exc).__name__}: {first_line(exc)}); this is a bug in tflite-opt, please "
                "report it with the output of 'tflite-opt -v ...' and 'tflite-opt env'"
            ) from exc

    return wrapper


def model_options(func):
    """--signature, --input-shape and --trust-model: how to load the source model."""
    func = click.option(
        "--trust-model",
        is_flag=True,
        help="Allow layers that run arbitrary Python when loaded (Lambda). Only for files you trust.",
    )(func)
    func = click.option(
        "--input-shape",
        "input_shape",
        multiple=True,
        metavar="NAME=D0,D1,...",
        help="Fix an input's shape, batch axis included (e.g. image=1,224,224,3). Repeatable.",
    )(func)
    func = click.option(
        "--signature",
        default=None,
        metavar="KEY",
        help="SavedModel signature to convert (needed when there are several).",
    )(func)
    return func


def representative_options(func):
    """--representative-data, --num-samples and --preprocess: the calibration data."""
    from tflite_opt.representative_data.dataset import PREPROCESS_CHOICES

    func = click.option(
        "--preprocess",
        type=click.Choice(PREPROCESS_CHOICES),
        default="unit",
        show_default=True,
        help="Image folders: scale pixels to [0,1], [-1,1], ImageNet mean/std, or keep 0-255.",
    )(func)
    func = click.option(
        "--num-samples",
        type=click.IntRange(min=1),
        default=None,
        help="Calibration samples to use (default: all, at most 500).",
    )(func)
    func = click.option(
        "--representative-data",
        "representative_data",
        default=None,
        metavar="PATH",
        help="Calibration data: .npz, .npy, image folder, or 'random' (smoke tests only).",
    )(func)
    return func


def parse_input_shapes(values) -> dict[str, tuple[int | None, ...]]:
    """Parse repeated ``NAME=D0,D1,...`` (``-1`` or ``None`` for a dynamic axis)."""
    shapes: dict[str, tuple[int | None, ...]] = {}
    for value in values or ():
        name, sep, dims = value.partition("=")
        if not sep or not name or not dims:
            raise click.BadParameter(
                f"{value!r}: expected NAME=D0,D1,... such as image=1,96,96,3", param_hint="--input-shape"
            )
        try:
            shape = tuple(None if d.strip() in ("-1", "None", "?") else int(d) for d in dims.split(","))
        except ValueError:
            raise click.BadParameter(
                f"{value!r}: dimensions must be whole numbers", param_hint="--input-shape"
            ) from None
        if any(d is not None and d < 1 for d in shape):
            raise click.BadParameter(f"{value!r}: dimensions must be positive", param_hint="--input-shape")
        shapes[name] = shape
    return shapes


def terminal_width() -> int | None:
    """The columns tables must fit: the terminal's, or ``COLUMNS`` when set; ``None`` (no limit) for pipes/files.

    The global ``--wide`` also means no limit.
    """
    import os

    from tflite_opt.reporting.console import stdout_console

    ctx = click.get_current_context(silent=True)
    if ctx is not None and (ctx.find_root().obj or {}).get("wide"):
        return None
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    return stdout_console.width if stdout_console.is_terminal else None


def print_renderable(renderable) -> None:
    """Print a rich renderable to stdout, never cutting a cell: at least as wide as the content needs.

    Rich assumes 80 columns for pipes and files and would cut cells to fit; a report piped into a file or a CI
    log keeps every digit instead, and a terminal narrower than a table gets the table's own width.
    """
    from rich.console import Console

    from tflite_opt.reporting.console import stdout_console
    from tflite_opt.reporting.render import natural_width

    needed = natural_width(renderable)
    if stdout_console.is_terminal and needed <= stdout_console.width:
        stdout_console.print(renderable)
        return
    width = max(needed, terminal_width() or 0)
    Console(
        soft_wrap=True,
        width=width,
        color_system=None if not stdout_console.is_terminal else "auto",
        file=stdout_console.file,
    ).print(renderable)


def print_table(tables) -> None:
    """Draw one :class:`~tflite_opt.reporting.tables.TextTable` (or several) on stdout, fitted to the terminal."""
    from tflite_opt.reporting.render import to_rich

    print_renderable(to_rich(tables, width=terminal_width()))


def evaluation_options(func):
    """The measuring and gating flags shared by evaluate, compare and auto."""
    from tflite_opt.reporting.report import FORMATS

    options = [
        click.option(
            "--threads",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Interpreter threads for the latency runs.",
        ),
        click.option(
            "--runs",
            type=click.IntRange(min=0),
            default=50,
            show_default=True,
            help="Timed latency runs (0 skips latency).",
        ),
        click.option(
            "--warmup", type=click.IntRange(min=0), default=5, show_default=True, help="Untimed warm-up runs."
        ),
        click.option("--no-xnnpack", is_flag=True, help="Builtin CPU kernels only, without the XNNPACK delegate."),
        click.option(
            "--format",
            "format_",
            type=click.Choice(FORMATS),
            default="table",
            show_default=True,
            help="What goes to stdout.",
        ),
        click.option(
            "--max-accuracy-drop",
            type=click.FloatRange(min=0),
            metavar="X",
            help="Gate: every non-reference variant loses at most X accuracy (0.01 = 1 point).",
        ),
        click.option(
            "--gate",
            "gate_texts",
            multiple=True,
            metavar="[VARIANT:]METRIC OP NUMBER",
            help="Gate, repeatable, e.g. 'int8:accuracy_delta>=-0.01' or 'size_ratio<=0.3'.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def parse_gate_options(gate_texts, max_accuracy_drop):
    """Parse --gate/--max-accuracy-drop; bad syntax is a usage error (exit 2)."""
    from tflite_opt.reporting import gates

    try:
        parsed = [gates.parse_gate(text) for text in gate_texts]
    except gates.GateSyntaxError as exc:
        raise click.BadParameter(str(exc), param_hint="'--gate'") from exc
    if max_accuracy_drop is not None:
        try:
            parsed.insert(0, gates.max_accuracy_drop_gate(max_accuracy_drop))
        except gates.GateSyntaxError as exc:
            raise click.BadParameter(str(exc), param_hint="'--max-accuracy-drop'") from exc
    return parsed


def make_evaluation_options(threads, runs, warmup, no_xnnpack, preprocess="unit", **extra):
    from tflite_opt.measure.evaluation import EvaluationOptions

    return EvaluationOptions(
        threads=threads, xnnpack=not no_xnnpack, warmup=warmup, runs=runs, preprocess=preprocess, **extra
    )


def emit_report(report, format_: str) -> None:
    """The report on stdout: a rich table, or JSON/CSV/Markdown text."""
    from tflite_opt.reporting import report as report_mod

    if format_ == "table":
        print_table(report_mod.report_table(report))
    else:
        click.echo(report_mod.render_text(report, format_), nl=False)


def finish(report) -> None:
    """Exit 1 when a variant failed, 3 when a gate failed (after everything was written), else return."""
    failed = report.failed_variants
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise click.ClickException(
            f"{len(failed)} of {len(report.variants)} variants failed — {first.name}: {first.error}{more}"
        )
    if report.failed_gates:
        raise GateFailed("; ".join(g.describe() for g in report.failed_gates))

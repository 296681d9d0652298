"""Pieces every command shares: error translation, the progress reporter, exit code 3 for failed gates."""

from __future__ import annotations

import functools
import sys

import click

from tflite_opt.errors import TfliteOptError

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
    from tflite_opt.ui import RichProgress

    return RichProgress(quiet=is_quiet())


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
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise click.ClickException(
                f"unexpected {type(exc).__name__}: {first[:400]} (run with -v for the traceback)"
            ) from exc

    return wrapper

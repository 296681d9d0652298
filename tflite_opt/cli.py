"""Root command group. Each subcommand lives in ``tflite_opt/commands/<name>.py`` and is imported lazily."""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import os
import signal
import sys

import click

from tflite_opt import __version__

# name -> the module that defines ``command``. Its one-line help is the first line of that function's docstring,
# read from the source file without importing it (``--help`` must stay fast and TensorFlow-free).
COMMANDS: dict[str, str] = {
    "convert": "tflite_opt.commands.convert",
    "evaluate": "tflite_opt.commands.evaluate",
    "compare": "tflite_opt.commands.compare",
    "inspect": "tflite_opt.commands.inspect",
    "prune": "tflite_opt.commands.prune",
    "qat": "tflite_opt.commands.qat",
    "cluster": "tflite_opt.commands.cluster",
    "debug": "tflite_opt.commands.debug",
    "auto": "tflite_opt.commands.auto",
    "distill": "tflite_opt.commands.distill",
    "demo": "tflite_opt.commands.demo",
    "micro": "tflite_opt.commands.micro",
    "export-c": "tflite_opt.commands.export_c",
    "run": "tflite_opt.commands.run",
    "table": "tflite_opt.commands.table",
    "landscape": "tflite_opt.commands.landscape",
    "env": "tflite_opt.commands.env",
}

# Commands that only read .tflite files and run them in LiteRT: NumPy's OpenBLAS does no work for them, yet it
# starts a thread per core when NumPy is imported, which spins beside the start-up and the inference workers
# (measured on 2 cores: ~20 ms wall on a one-sample evaluate, ~30 ms on 20,000 samples, ~100 ms of CPU). Their
# processes get one BLAS thread, unless the user set OPENBLAS_NUM_THREADS. (GPTQ, training and the rescue
# transforms do use BLAS: they keep its threads.)
NO_BLAS_THREADS = ("evaluate", "inspect")


def command_summary(module: str) -> str:
    """The first line of ``command``'s docstring in ``module``, without importing the module."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec(module)
    tree = ast.parse(open(spec.origin, encoding="utf-8").read())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "command":
            return (ast.get_docstring(node) or "").strip().splitlines()[0]
    return ""


class LazyGroup(click.Group):
    """A group that imports a command's module only when that command runs (click docs, "LazyGroup")."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        if cmd_name in NO_BLAS_THREADS and "numpy" not in sys.modules:
            os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        return _with_global_flags(importlib.import_module(COMMANDS[cmd_name]).command)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in COMMANDS:
            import difflib

            close = difflib.get_close_matches(name, list(COMMANDS), n=1, cutoff=0.6)
            hint = f" Did you mean '{close[0]}'?" if close else f" The commands are: {', '.join(COMMANDS)}."
            ctx.fail(f"No such command '{name}'.{hint}")
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            # Ctrl-C or SIGTERM: temporaries were removed on the way up (fileio) and the output lock released;
            # one line and the shell's exit code for the signal (128 + its number), no traceback.
            signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
            click.echo(
                f"Interrupted ({signal.Signals(signum).name}): files finished before it are complete and kept",
                err=True,
            )
            raise click.exceptions.Exit(128 + int(signum)) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, command_summary(module)) for name, module in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


# Root flags that are also accepted after the subcommand (``tflite-opt convert -q ...``).
GLOBAL_FLAGS = {
    "verbose": (("-v", "--verbose"), "Show tracebacks and TensorFlow's own logs."),
    "quiet": (("-q", "--quiet"), "No progress bars or status messages (warnings and errors stay)."),
    "strict": (("--strict",), "Data warnings become errors (exit 1), for CI."),
    "wide": (("--wide",), "Show every table column, however narrow the terminal."),
}


def _set_root_flag(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value:
        return
    root = ctx.find_root()
    root.ensure_object(dict)
    root.obj[param.name] = True
    if param.name == "verbose":
        from tflite_opt.verbosity import set_verbose

        set_verbose(True)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so the same clean-up runs."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame) -> None:
    raise Terminated(signum)


# Outputs a run owns while it writes them (tflite_opt/outputlock.py): parameter -> (a folder?, how users name it).
LOCKED_OUTPUTS = {"output_dir": (True, "--output-dir"), "output": (False, "-o file"), "outputs": (False, "-o file")}


def _with_output_lock(command: click.Command) -> None:
    """Wrap ``command``'s callback so that it holds the lock of each output folder/file it was given."""
    callback = command.callback
    if callback is None or getattr(callback, "locks_outputs", False):
        return

    @functools.wraps(callback)
    def locked(*args, **kwargs):
        from tflite_opt.outputlock import OutputBusyError, output_lock

        with contextlib.ExitStack() as stack:
            for name, (folder, option) in LOCKED_OUTPUTS.items():
                values = kwargs.get(name)
                for value in (values,) if isinstance(values, str) else values or ():
                    try:
                        stack.enter_context(
                            output_lock(value, folder=folder, option=option, command=f"tflite-opt {command.name}")
                        )
                    except OutputBusyError as exc:
                        raise click.ClickException(str(exc)) from exc
            return callback(*args, **kwargs)

    locked.locks_outputs = True
    command.callback = locked


def _with_global_flags(command: click.Command) -> click.Command:
    _with_output_lock(command)
    names = {param.name for param in command.params}
    for name, (decls, help_) in GLOBAL_FLAGS.items():
        if name not in names:
            command.params.append(
                click.Option(
                    decls, is_flag=True, expose_value=False, callback=_set_root_flag, is_eager=True, help=help_
                )
            )
    return command


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", prog_name="tflite-opt")
@click.option(*GLOBAL_FLAGS["verbose"][0], "verbose", is_flag=True, help=GLOBAL_FLAGS["verbose"][1])
@click.option(*GLOBAL_FLAGS["quiet"][0], "quiet", is_flag=True, help=GLOBAL_FLAGS["quiet"][1])
@click.option(*GLOBAL_FLAGS["strict"][0], "strict", is_flag=True, help=GLOBAL_FLAGS["strict"][1])
@click.option(*GLOBAL_FLAGS["wide"][0], "wide", is_flag=True, help=GLOBAL_FLAGS["wide"][1])
@click.pass_context
def cli(ctx: click.Context, verbose: bool, quiet: bool, strict: bool, wide: bool) -> None:
    """Make neural networks small and fast for edge devices, and measure what each optimization costs.

    \b
    Example:
      tflite-opt demo
      tflite-opt convert model.keras -o model_int8.tflite --mode int8 --representative-data calib.npz
      tflite-opt evaluate model_fp32.tflite model_int8.tflite --data test.npz
    """
    from tflite_opt.verbosity import hide_library_warnings, set_verbose

    set_verbose(verbose)
    if not verbose:
        hide_library_warnings()
    ctx.ensure_object(dict)
    ctx.obj.update(verbose=verbose, quiet=quiet, strict=strict, wide=wide)


def main() -> None:
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        cli(prog_name="tflite-opt")
    finally:
        # Everything is written by now (files through atomic writes, closed). What is left is the interpreter's
        # shutdown, whose collection of every object still alive took ~60 of the ~75 ms a 20,000-sample
        # evaluate spent exiting: objects frozen now are freed by the operating system instead.
        gc.freeze()

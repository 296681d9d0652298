"""Root command group. Each subcommand lives in ``tflite_opt/commands/<name>.py`` and is imported lazily."""

from __future__ import annotations

import importlib

import click

from tflite_opt import __version__

# name -> (module, one-line help shown in the root --help without importing the module)
COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("tflite_opt.commands.convert", "Convert a model to .tflite in one post-training mode."),
    "evaluate": ("tflite_opt.commands.evaluate", "Measure accuracy, size and latency of .tflite files."),
    "compare": ("tflite_opt.commands.compare", "Convert to every mode, evaluate all, print the table."),
    "inspect": ("tflite_opt.commands.inspect", "Show a .tflite file's tensors, ops, weights and dtypes."),
    "prune": ("tflite_opt.commands.prune", "Magnitude pruning with fine-tuning (tfmot)."),
    "qat": ("tflite_opt.commands.qat", "Quantization-aware training, then int8 conversion."),
    "cluster": ("tflite_opt.commands.cluster", "Weight clustering with fine-tuning (tfmot)."),
    "debug": ("tflite_opt.commands.debug", "Per-layer int8 quantization error, worst layers first."),
    "auto": ("tflite_opt.commands.auto", "Find the smallest variant within an accuracy budget."),
    "distill": ("tflite_opt.commands.distill", "Distill a teacher model into a small student."),
    "demo": ("tflite_opt.commands.demo", "Train a small CNN offline and compare every mode."),
    "env": ("tflite_opt.commands.env", "Print versions and CPU flags for bug reports."),
}


class LazyGroup(click.Group):
    """A group that imports a command's module only when that command runs (click docs, "LazyGroup")."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module = importlib.import_module(COMMANDS[cmd_name][0])
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", prog_name="tflite-opt")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks and TensorFlow's own logs.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or status messages (warnings and errors stay).")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, quiet: bool) -> None:
    """Make neural networks small and fast for edge devices, and measure what each optimization costs.

    \b
    Example:
      tflite-opt demo
      tflite-opt convert model.keras -o model_int8.tflite --mode int8 --representative-data calib.npz
      tflite-opt evaluate model_fp32.tflite model_int8.tflite --data test.npz
    """
    from tflite_opt import tf_runtime

    tf_runtime.set_verbose(verbose)
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    ctx.obj["quiet"] = quiet


def main() -> None:
    cli(prog_name="tflite-opt")

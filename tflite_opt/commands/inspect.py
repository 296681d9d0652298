"""``tflite-opt inspect``: a .tflite file's tensors, ops, weights and dtypes (LiteRT only, no TensorFlow)."""

from __future__ import annotations

import json

import click

from tflite_opt.commands._common import handle_errors, print_renderable


def _fmt_shape(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def render_inspection(result):
    """Rich renderables for a :class:`~tflite_opt.measure.inspection.ModelInspection`."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from tflite_opt.reporting.report import format_size

    tensors = Table(title="Inputs and outputs", title_justify="left", header_style="bold")
    for column in ("", "name", "shape", "dtype", "scale", "zero point"):
        tensors.add_column(column)
    for kind, specs in (("input", result.inputs), ("output", result.outputs)):
        for spec in specs:
            tensors.add_row(
                kind,
                spec.name,
                _fmt_shape(spec.shape),
                spec.dtype,
                "—" if spec.scale is None else f"{spec.scale:.6g}",
                "—" if spec.zero_point is None else str(spec.zero_point),
            )

    ops = Table(title="Ops", title_justify="left", header_style="bold")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    ops.add_column("runs in")
    for op in result.ops:
        ops.add_row(op.op, str(op.count), ", ".join(f"{d} ×{n}" for d, n in op.dtypes.items()))

    weights = Table(title="Weights (constant tensors)", title_justify="left", header_style="bold")
    weights.add_column("dtype")
    weights.add_column("tensors", justify="right")
    weights.add_column("bytes", justify="right")
    for dtype, size in result.weight_bytes.items():
        weights.add_row(dtype, str(result.weight_tensors.get(dtype, 0)), f"{size:,} ({format_size(size)})")

    sparsity = "n/a" if result.sparsity is None else f"{result.sparsity * 100:.1f}%"
    summary = Text.assemble(
        (f"{result.path}", "bold"),
        f"  {format_size(result.size_bytes)}, signature {result.signature or '(none: tensor names)'}, "
        f"mode looks like {result.mode or 'unknown'}\n",
        "integer-only: ",
        ("yes" if result.integer_only else "no", "green" if result.integer_only else "yellow"),
        f"   zero weights: {sparsity}   subgraphs: {result.subgraphs}",
    )
    return Group(summary, tensors, ops, weights)


@click.command("inspect")
@click.argument("file", type=click.Path(exists=True))
@click.option("--format", "format_", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--signature", metavar="KEY", help="Signature whose inputs/outputs to list (default: serving_default).")
@handle_errors
def command(file: str, format_: str, signature: str | None) -> None:
    """Show a .tflite file's inputs/outputs, ops and the dtypes they run in, weights, and integer-only.

    Inputs/outputs are listed by signature name with dtype, scale and zero point. Weight bytes are grouped by
    the dtype they are stored in (float16 models show float16, dynamic-range models int8). Integer-only means
    every op reads and writes integer tensors — QUANTIZE/DEQUANTIZE at float inputs/outputs make it "no".

    \b
    Example:
      tflite-opt inspect model_int8.tflite
      tflite-opt inspect model_int8.tflite --format json | jq .integer_only
    """
    from tflite_opt.commands._checks import refuse_models
    from tflite_opt.measure.inspection import inspect_model
    from tflite_opt.measure.runtime import read_model_bytes

    refuse_models([file])
    result = inspect_model(read_model_bytes(file), path=file, signature=signature)
    if format_ == "json":
        click.echo(json.dumps(result.to_json_dict(), indent=2))
    else:
        print_renderable(render_inspection(result))

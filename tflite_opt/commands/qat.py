"""``tflite-opt qat``: quantization-aware training, then int8 conversion."""

from __future__ import annotations

from pathlib import Path

import click

from tflite_opt.commands import _common
from tflite_opt.commands._training import (
    TFLITE_SUFFIX,
    files_dict,
    fit_config,
    history_dict,
    layer_rows,
    load_training_inputs,
    output_paths,
    print_files,
    print_json,
    print_layer_table,
    representative_for,
    training_options,
    val_accuracy_text,
    write_outputs,
)
from tflite_opt.modes import IoType, Mode
from tflite_opt.training import qat  # no TensorFlow at import time


@click.command("qat")
@click.argument("model", type=click.Path(path_type=str))
@click.option(
    "-o", "--output", "output", required=True, type=click.Path(dir_okay=False), help="The int8 .tflite file to write."
)
@click.option(
    "--io-type",
    type=click.Choice([t.value for t in IoType]),
    default=IoType.INT8.value,
    show_default=True,
    help="Type of the model's inputs and outputs (int8 = integer-only).",
)
@click.option(
    "--preserve-sparsity",
    is_flag=True,
    help="Pruning-preserving QAT: keep the zeros of a pruned model (e.g. the .keras output of prune).",
)
@click.option(
    "--allow-float-fallback",
    is_flag=True,
    help="Keep ops without an int8 kernel (e.g. in --skip-layer layers) in float instead of failing.",
)
@_common.representative_options
@training_options(learning_rate=qat.DEFAULT_LEARNING_RATE, epochs=1)
@_common.handle_errors
def command(model, output, io_type, preserve_sparsity, allow_float_fallback, representative_data,
            num_samples, preprocess, train_data, epochs, batch_size, learning_rate, val_split, val_data,
            loss, seed, distribute, distribute_timeout, trust_model, skip_layers, format_):  # fmt: skip
    """Quantization-aware training, then int8 conversion.

    \b
    Layers tfmot cannot quantize are named; --skip-layer NAME leaves them
    unannotated (the converter calibrates them with the representative data,
    which defaults to the training data).
    \b
    Examples:
      tflite-opt qat model.keras --train-data train.npz -o model_qat.tflite
      tflite-opt qat pruned.keras --train-data train.npz --preserve-sparsity -o pqat.tflite
      tflite-opt qat model.h5 --train-data train.npz --io-type float32 -o qat_float_io.tflite
    """
    from tflite_opt.measure import inspection

    paths = output_paths([output], [model, train_data, val_data, representative_data], allowed=(TFLITE_SUFFIX,))
    progress = _common.progress()
    config = fit_config(epochs, batch_size, learning_rate, val_split, loss, seed, distribute, distribute_timeout)
    inputs = load_training_inputs(
        model, train_data, val_data, preprocess=preprocess, trust_model=trust_model, progress=progress, config=config
    )
    # QAT learned the ranges; calibration data only matters for --skip-layer layers. Default: the training data.
    representative = representative_for(Mode.INT8, representative_data, inputs, preprocess, progress)
    result = qat.qat_model(
        inputs.loaded.keras_model,
        inputs.train,
        preserve_sparsity=preserve_sparsity,
        skip_layers=skip_layers,
        config=config,
        val=inputs.val,
        progress=progress,
    )
    written = write_outputs(
        result.model,
        paths,
        mode=Mode.INT8,
        io_type=io_type,
        allow_float_fallback=allow_float_fallback,
        sparsity=preserve_sparsity,
        representative=representative,
        num_samples=num_samples,
        progress=progress,
        inputs=inputs,
    )
    facts = inspection.inspect_model(Path(written[0].path).read_bytes(), path=str(paths[0]))
    if format_ == "json":
        print_json(
            {
                "command": "qat",
                "preserve_sparsity": preserve_sparsity,
                "quantized_layers": result.quantized_layers,
                "skipped_layers": result.skipped_layers,
                "input_sparsity": result.input_sparsity,
                "sparsity": result.sparsity,
                "layers": layer_rows(result.per_layer),
                "history": history_dict(result.history),
                "tflite": facts.to_json_dict(),
                "files": files_dict(written, None),
            }
        )
        return
    if preserve_sparsity:
        print_layer_table(
            result.per_layer, title="Kernel sparsity after pruning-preserving QAT", optimized_label="quantized"
        )
        click.echo(f"Kernel zeros: {result.input_sparsity:.1%} before QAT, {result.sparsity:.1%} after")
    skipped = f"; left float: {', '.join(result.skipped_layers)}" if result.skipped_layers else ""
    click.echo(
        f"Quantized {len(result.quantized_layers)} layer(s){skipped}; "
        f"validation accuracy {val_accuracy_text(result.history)}"
    )
    in_types = ", ".join(spec.dtype for spec in facts.inputs)
    out_types = ", ".join(spec.dtype for spec in facts.outputs)
    click.echo(
        f"Inputs {in_types}, outputs {out_types}; integer-only: {'yes' if facts.integer_only else 'no'}"
        + ("" if facts.sparsity is None else f"; zero weights in the file: {facts.sparsity:.1%}")
    )
    print_files(written, None)

"""``tflite-opt prune``: magnitude pruning with fine-tuning (tfmot)."""

from __future__ import annotations

import click

from tflite_opt.commands import _common
from tflite_opt.commands._training import (
    KERAS_SUFFIXES,
    TFLITE_SUFFIX,
    baseline_gzip,
    check_mode_flags,
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
from tflite_opt.modes import MODE_NAMES, IoType, Mode
from tflite_opt.training import pruning  # no TensorFlow at import time


@click.command("prune")
@click.argument("model", type=click.Path(path_type=str))
@click.option(
    "-o",
    "--output",
    "outputs",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False),
    help="Output file; the suffix picks the format: .tflite (converted with --mode), .keras or .h5 "
    "(the pruned model). Repeatable.",
)
@click.option(
    "--sparsity",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.5,
    show_default=True,
    help="Target share of zeros in each pruned kernel.",
)
@click.option(
    "--schedule",
    type=click.Choice(pruning.SCHEDULE_NAMES),
    default="constant",
    show_default=True,
    help="constant: prune to the target at once, then recover; polynomial: ramp up from 0.",
)
@click.option(
    "--structure",
    type=click.Choice(["2:4"]),
    default=None,
    help="Structured sparsity: 2 zeros in every 4 consecutive weights along the input axis (fixes 50%).",
)
@click.option(
    "--mode",
    type=click.Choice(MODE_NAMES),
    default=Mode.FP32.value,
    show_default=True,
    help="Conversion mode for .tflite outputs.",
)
@click.option(
    "--io-type",
    type=click.Choice([t.value for t in IoType]),
    default=IoType.INT8.value,
    show_default=True,
    help="int8 mode: type of the model's inputs and outputs (int8 = integer-only).",
)
@click.option("--allow-float-fallback", is_flag=True, help="int8/int16x8: keep ops without an integer kernel in float.")
@click.option(
    "--baseline/--no-baseline",
    default=True,
    show_default=True,
    help="Also convert the unpruned model to fp32 to report the gzip size ratio.",
)
@_common.representative_options
@training_options(learning_rate=pruning.DEFAULT_LEARNING_RATE)
@_common.handle_errors
def command(model, outputs, sparsity, schedule, structure, mode, io_type, allow_float_fallback, baseline,
            representative_data, num_samples, preprocess, train_data, epochs, batch_size, learning_rate,
            val_split, val_data, loss, seed, distribute, distribute_timeout, trust_model, skip_layers, format_):  # fmt: skip
    """Magnitude pruning with fine-tuning (tfmot), then .tflite and/or .keras output.

    \b
    The representative data for --mode int8 defaults to the training data.
    .keras output keeps the source's Keras (3 or tf_keras); .h5 is tf_keras.
    \b
    Examples:
      tflite-opt prune model.keras --train-data train.npz --sparsity 0.8 -o pruned.tflite -o pruned.keras
      tflite-opt prune model.h5 --train-data train.npz --structure 2:4 --epochs 3 -o pruned_24.tflite
      tflite-opt prune model.keras --train-data images/ --mode int8 -o pruned_int8.tflite
    """
    mode = Mode(mode)
    check_mode_flags(mode, io_type)
    paths = output_paths(
        outputs, [model, train_data, val_data, representative_data], allowed=(TFLITE_SUFFIX, *KERAS_SUFFIXES)
    )
    progress = _common.progress()
    if structure and sparsity != 0.5:
        progress.warn("--structure 2:4 fixes the sparsity at 50%; --sparsity is ignored")
    config = fit_config(epochs, batch_size, learning_rate, val_split, loss, seed, distribute, distribute_timeout)
    inputs = load_training_inputs(
        model, train_data, val_data, preprocess=preprocess, trust_model=trust_model, progress=progress, config=config
    )
    representative = representative_for(mode, representative_data, inputs, preprocess, progress)
    result = pruning.prune_model(
        inputs.loaded.keras_model,
        inputs.train,
        sparsity=sparsity,
        schedule=schedule,
        structure=pruning.parse_structure(structure),
        skip_layers=skip_layers,
        config=config,
        val=inputs.val,
        progress=progress,
    )
    wants_tflite = any(p.suffix.lower() == TFLITE_SUFFIX for p in paths)
    reference = baseline_gzip(inputs.loaded, progress) if (baseline and wants_tflite) else None
    written = write_outputs(
        result.model,
        paths,
        mode=mode,
        io_type=io_type,
        allow_float_fallback=allow_float_fallback,
        sparsity=True,
        representative=representative,
        num_samples=num_samples,
        progress=progress,
        inputs=inputs,
    )
    if format_ == "json":
        print_json(
            {
                "command": "prune",
                "target_sparsity": result.target_sparsity,
                "sparsity": result.sparsity,
                "structure": structure,
                "schedule": schedule,
                "layers": layer_rows(result.per_layer),
                "history": history_dict(result.history),
                "baseline_gzip_bytes": reference,
                "files": files_dict(written, reference),
            }
        )
        return
    print_layer_table(result.per_layer, title="Kernel sparsity after pruning", optimized_label="pruned")
    click.echo(
        f"Pruned layers: {result.sparsity:.1%} zeros (target {result.target_sparsity:.0%}"
        + (", 2:4 structured" if structure else "")
        + f"); validation accuracy {val_accuracy_text(result.history)}"
    )
    print_files(written, reference)

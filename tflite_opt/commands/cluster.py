"""``tflite-opt cluster``: weight clustering with fine-tuning (tfmot)."""

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
from tflite_opt.training import clustering  # no TensorFlow at import time

INIT_CHOICES = clustering.INIT_NAMES


@click.command("cluster")
@click.argument("model", type=click.Path(path_type=str))
@click.option(
    "-o",
    "--output",
    "outputs",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False),
    help="Output file; the suffix picks the format: .tflite (converted with --mode), .keras or .h5 "
    "(the clustered model). Repeatable.",
)
@click.option("--clusters", type=click.IntRange(min=2), required=True, help="Distinct values per kernel.")
@click.option(
    "--init",
    "init",
    type=click.Choice(INIT_CHOICES),
    default="kmeans++",
    show_default=True,
    help="How the cluster centroids start.",
)
@click.option("--preserve-sparsity", is_flag=True, help="Keep the zeros of a pruned model while clustering.")
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
    help="Also convert the unclustered model to fp32 to report the gzip size ratio.",
)
@_common.representative_options
@training_options(learning_rate=clustering.DEFAULT_LEARNING_RATE)
@_common.handle_errors
def command(model, outputs, clusters, init, preserve_sparsity, mode, io_type, allow_float_fallback, baseline,
            representative_data, num_samples, preprocess, train_data, epochs, batch_size, learning_rate,
            val_split, val_data, loss, seed, distribute, distribute_timeout, trust_model, skip_layers, format_):  # fmt: skip
    """Weight clustering with fine-tuning (tfmot), then .tflite and/or .keras output.

    \b
    Each clustered kernel keeps at most --clusters distinct values, which
    compresses well (compare the gzip sizes). .keras output keeps the
    source's Keras (3 or tf_keras); .h5 is tf_keras.
    \b
    Examples:
      tflite-opt cluster model.keras --train-data train.npz --clusters 16 -o clustered.tflite
      tflite-opt cluster model.h5 --train-data train.npz --clusters 8 --init linear -o c8.keras
      tflite-opt cluster pruned.keras --train-data train.npz --clusters 16 --preserve-sparsity -o c.tflite
    """
    mode = Mode(mode)
    check_mode_flags(mode, io_type)
    paths = output_paths(
        outputs, [model, train_data, val_data, representative_data], allowed=(TFLITE_SUFFIX, *KERAS_SUFFIXES)
    )
    progress = _common.progress()
    config = fit_config(epochs, batch_size, learning_rate, val_split, loss, seed, distribute, distribute_timeout)
    inputs = load_training_inputs(
        model, train_data, val_data, preprocess=preprocess, trust_model=trust_model, progress=progress, config=config
    )
    representative = representative_for(mode, representative_data, inputs, preprocess, progress)
    result = clustering.cluster_model(
        inputs.loaded.keras_model,
        inputs.train,
        clusters=clusters,
        init=init,
        preserve_sparsity=preserve_sparsity,
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
        sparsity=preserve_sparsity,
        representative=representative,
        num_samples=num_samples,
        progress=progress,
        inputs=inputs,
    )
    if format_ == "json":
        print_json(
            {
                "command": "cluster",
                "clusters": clusters,
                "init": init,
                "max_unique_values": result.max_unique_values,
                "layers": layer_rows(result.per_layer),
                "history": history_dict(result.history),
                "baseline_gzip_bytes": reference,
                "files": files_dict(written, reference),
            }
        )
        return
    print_layer_table(
        result.per_layer,
        title="Unique kernel values after clustering",
        optimized_label="clustered",
        columns=("unique_values",),
    )
    click.echo(
        f"Clustered layers: at most {result.max_unique_values} distinct values per kernel "
        f"({clusters} clusters, {init}); validation accuracy {val_accuracy_text(result.history)}"
    )
    print_files(written, reference)

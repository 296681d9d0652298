"""``tflite-opt demo``: the whole story offline — train a small CNN, convert it every way, measure everything."""

from __future__ import annotations

from pathlib import Path

import click

from tflite_opt.commands import _common
from tflite_opt.modes import MODE_NAMES


@click.command("demo")
@click.option(
    "--output-dir",
    default="tflite-opt-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the model, data, .tflite files and reports go.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True, help="Training epochs.")
@click.option(
    "--with-training",
    is_flag=True,
    help="Also add QAT, 50%-pruned and 16-cluster rows (fine-tuned, adds a minute or two).",
)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--runs", type=click.IntRange(min=0), default=100, show_default=True, help="Timed latency runs.")
@click.option("--plot/--no-plot", default=True, show_default=True, help="Draw DIR/tradeoff.png.")
@_common.handle_errors
def command(output_dir, epochs, with_training, threads, runs, plot):
    """Train a small CNN offline and compare every mode.

    Trains a small CNN on scikit-learn's handwritten digits (they ship with the package: no download),
    saves it as DIR/model.keras, then runs `compare` with fp32, dynamic, float16, int8 and int16x8 and
    prints the table. The files, report.json, report.md and tradeoff.png are left in DIR.

    \b
    Example:
      tflite-opt demo
      tflite-opt demo --output-dir /tmp/demo --with-training
    """
    from tflite_opt import models
    from tflite_opt.representative_data import load_data
    from tflite_opt.workflows import comparison
    from tflite_opt.workflows.demo import prepare_demo

    out_dir = Path(output_dir)
    progress = _common.progress()
    assets = prepare_demo(out_dir, epochs=epochs, progress=progress)
    progress.info(
        f"Trained the demo CNN: {assets.num_train} training / {assets.num_test} test images, "
        f"float accuracy {assets.float_accuracy:.3f} -> {assets.model_path}"
    )
    loaded = models.load_model(assets.model_path)
    test = load_data(assets.test_path, loaded.inputs)
    calibration = load_data(assets.calib_path, loaded.inputs)
    training = None
    if with_training:
        train = load_data(assets.train_path, loaded.inputs, require_labels=True)
        training = comparison.TrainingRows(train=train, qat=True, prune_sparsity=0.5, cluster_count=16)
    result = comparison.run_compare(
        loaded,
        test,
        out_dir,
        modes=MODE_NAMES,
        representative=calibration,
        evaluation_options=_common.make_evaluation_options(threads, runs, 10, False),
        training=training,
        progress=progress,
    )
    report = result.report
    comparison.write_reports(report, out_dir, out_dir / "tradeoff.png" if plot else None)
    _common.emit_report(report, "table")
    progress.info(f"Files and reports in {out_dir}/ (report.json, report.md" + (", tradeoff.png)" if plot else ")"))
    _common.finish(report)

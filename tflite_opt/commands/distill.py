"""``tflite-opt distill``: knowledge distillation of a teacher model into a small student."""

from __future__ import annotations

from pathlib import Path

import click

from tflite_opt.commands import _checks, _common, _distribute
from tflite_opt.modes import MODE_NAMES, IoType, Mode
from tflite_opt.reporting.units import format_size
from tflite_opt.training.distillation import (
    DEFAULT_ALPHA,
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_LEARNING_RATE,
    DEFAULT_TEMPERATURE,
    OUTPUT_KIND_NAMES,
    OutputKind,
)
from tflite_opt.training.fit import DISTRIBUTE_NAMES, Distribute

KERAS_SUFFIXES = (".keras", ".h5")
TFLITE_SUFFIX = ".tflite"


def split_outputs(outputs: tuple[str, ...]) -> tuple[str | None, str | None]:
    """``-o`` values -> (the Keras file, the .tflite file); each kind at most once, chosen by suffix."""
    keras_out = tflite_out = None
    for output in outputs:
        suffix = Path(output).suffix.lower()
        if suffix in KERAS_SUFFIXES:
            if keras_out is not None:
                raise click.UsageError(f"-o {keras_out} and -o {output} are both Keras files; give one .keras/.h5")
            keras_out = output
        elif suffix == TFLITE_SUFFIX:
            if tflite_out is not None:
                raise click.UsageError(f"-o {tflite_out} and -o {output} are both .tflite files; give one")
            tflite_out = output
        else:
            raise click.UsageError(
                f"-o {output}: the suffix says what to write: .keras or .h5 (the trained student in its Keras) "
                "or .tflite (converted with --mode); give one of each at most"
            )
    return keras_out, tflite_out


@click.command("distill")
@click.option(
    "--teacher",
    required=True,
    metavar="MODEL",
    help="The large trained model: SavedModel folder, Keras 3 or tf_keras .keras/.h5 (inference only).",
)
@click.option(
    "--student",
    required=True,
    metavar="MODEL",
    help="The small model to train: a Keras 3 or tf_keras .keras/.h5 file, untrained or pre-trained.",
)
@click.option(
    "--train-data",
    required=True,
    metavar="PATH",
    help="Training samples: .npz (labels in 'y'), .npy or image folder. Labels are needed unless --alpha 0.",
)
@click.option(
    "-o",
    "--output",
    "outputs",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False),
    metavar="OUT",
    help="Where to save the student: .keras/.h5 and/or .tflite (--mode). Give -o twice for both.",
)
@click.option(
    "--transfer-data",
    metavar="PATH",
    help="Extra unlabelled samples that add the teacher's soft targets only (labels in it are ignored).",
)
@click.option("--val-data", metavar="PATH", help="Validation samples (default: --val-split of --train-data).")
@click.option(
    "--val-split",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.1,
    show_default=True,
    help="Share of --train-data held out for validation when --val-data is not given.",
)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TEMPERATURE,
    show_default=True,
    help="Softmax temperature T of the soft targets.",
)
@click.option(
    "--alpha",
    type=click.FloatRange(0, 1),
    default=DEFAULT_ALPHA,
    show_default=True,
    help="Weight of the hard-label cross-entropy; 1 - alpha weighs T²·KL(teacher‖student).",
)
@click.option(
    "--teacher-outputs",
    type=click.Choice(OUTPUT_KIND_NAMES),
    default=OutputKind.AUTO.value,
    show_default=True,
    help="What the teacher outputs; auto detects probabilities (rows summing to 1).",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=DEFAULT_EPOCHS,
    show_default=True,
    help="Passes over the training (and transfer) data; --baseline makes as many optimizer steps.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Global batch size: every step sees this many samples, split across the replicas of --distribute.",
)
@click.option(
    "--learning-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_LEARNING_RATE,
    show_default=True,
    help="Adam's learning rate.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seeds the shuffling, the validation split and TensorFlow."
)
@click.option(
    "--distribute",
    type=click.Choice(DISTRIBUTE_NAMES),
    default=Distribute.DEFAULT.value,
    show_default=True,
    help="tf.distribute strategy: mirrored = MirroredStrategy over local devices, multi-worker = "
    "MultiWorkerMirroredStrategy over the cluster in TF_CONFIG.",
)
@_distribute.timeout_option
@click.option(
    "--baseline",
    is_flag=True,
    help="Also train the student from the same weights on labels alone, same steps and seed, and compare.",
)
@click.option(
    "--mode",
    type=click.Choice(MODE_NAMES),
    default=Mode.FP32.value,
    show_default=True,
    help="Conversion mode of the .tflite output and of the comparison table's files.",
)
@click.option(
    "--io-type",
    type=click.Choice([t.value for t in IoType]),
    default=IoType.INT8.value,
    show_default=True,
    help="int8 mode: type of the model's inputs and outputs (int8 = integer-only).",
)
@click.option(
    "--allow-float-fallback",
    is_flag=True,
    help="int8/int16x8: keep ops that have no integer kernel in float instead of failing.",
)
@_common.representative_options
@click.option(
    "--runs",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Timed latency runs per model in the comparison table (0 skips latency).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Interpreter threads for the latency runs.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Also write the comparison as a report: .json (SPEC schema), .csv or .md by suffix.",
)
@click.option(
    "--teacher-signature",
    default=None,
    metavar="KEY",
    help="SavedModel signature of the teacher (needed when it has several).",
)
@click.option(
    "--trust-model",
    is_flag=True,
    help="Allow layers that run arbitrary Python when loaded (Lambda). Only for files you trust.",
)
@_common.handle_errors
def command(teacher, student, train_data, outputs, transfer_data, val_data, val_split, temperature, alpha,
            teacher_outputs, epochs, batch_size, learning_rate, seed, distribute, distribute_timeout, baseline, mode, io_type,
            allow_float_fallback, representative_data, num_samples, preprocess, runs, threads, report_path,
            teacher_signature, trust_model):  # fmt: skip
    """Distill a teacher model into a small student (Hinton et al. 2015).

    The student learns alpha·CE(labels) + (1 − alpha)·T²·KL(softmax(teacher/T) ‖ softmax(student/T)).
    A teacher that outputs probabilities (softmax last layer) is detected and the logs of its outputs are used
    as logits. The table (stdout) compares teacher, distilled student and, with --baseline, the student trained
    on labels alone: parameters, .tflite size, accuracy on the validation data, agreement with the teacher,
    latency. int8 is calibrated on the training data unless --representative-data is given.

    \b
    Examples:
      tflite-opt distill --teacher big.keras --student small.keras --train-data train.npz \\
          --val-data test.npz -o small.keras -o small_int8.tflite --mode int8 --baseline
      tflite-opt distill --teacher saved_model/ --student small.keras --train-data few_labels.npz \\
          --transfer-data unlabelled.npy -o small.tflite
      tflite-opt distill --teacher big.keras --student small.keras --train-data unlabelled.npy \\
          --alpha 0 -o small.keras
    """
    from tflite_opt import models
    from tflite_opt.quantize import conversion
    from tflite_opt.training import distillation
    from tflite_opt.training.fit import FitConfig

    mode = Mode(mode)
    keras_out, tflite_out = split_outputs(outputs)
    _check_flags(mode, teacher, teacher_signature, io_type, val_data)
    sources = (teacher, student, train_data, transfer_data, val_data, representative_data)
    _check_outputs((keras_out, tflite_out, report_path), sources)
    _checks.check_report_suffix(report_path)

    progress = _common.progress()
    role = _distribute.start(distribute, distribute_timeout, progress)  # before TensorFlow runs anything
    teacher_model = models.load_model(teacher, signature=teacher_signature, trust_model=trust_model, progress=progress)
    student_model = models.load_model(student, trust_model=trust_model, progress=progress)
    distillation.check_pair(teacher_model, student_model)  # before reading any data
    train, transfer, val, representative = _read_data(
        student_model, mode, train_data, transfer_data, val_data, representative_data, preprocess, progress
    )

    fit = FitConfig(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        distribute=distribute,
        distribute_timeout=distribute_timeout,
        val_split=0.0 if val is not None else val_split,
    )
    config = distillation.DistillConfig(temperature=temperature, alpha=alpha, teacher_outputs=teacher_outputs, fit=fit)
    result = distillation.distill(
        teacher_model,
        student_model,
        train,
        config=config,
        transfer=transfer,
        val=val,
        baseline=baseline,
        progress=progress,
    )

    options = conversion.ConversionOptions(
        mode=mode, io_type=IoType(io_type), allow_float_fallback=allow_float_fallback, num_samples=num_samples
    )
    student_tflite, conversion_error = _convert_student(result, options, representative, progress)
    _save_student(result, mode, keras_out, tflite_out, student_tflite, conversion_error, role, progress)
    _compare_and_report(
        result,
        teacher_model,
        options,
        representative,
        student_tflite,
        conversion_error,
        runs=runs,
        threads=threads,
        report_path=report_path and _distribute.write_path(report_path, role),
        progress=progress,
    )


def _check_flags(mode: Mode, teacher: str, teacher_signature: str | None, io_type: str, val_data: str | None) -> None:
    """Flag combinations that make no sense, refused before any work (exit 2)."""
    if teacher_signature is not None and not Path(teacher).is_dir():
        raise click.UsageError("--teacher-signature applies to a SavedModel teacher (a folder) only")
    if io_type != IoType.INT8.value and mode != Mode.INT8:
        raise click.UsageError("--io-type applies to --mode int8 only")
    source = click.get_current_context().get_parameter_source("val_split")
    if val_data is not None and source == click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("give --val-data or --val-split, not both")


def _check_outputs(outputs: tuple[str | None, ...], inputs: tuple[str | None, ...]) -> None:
    """No output overwrites an input, and no two outputs are the same file."""
    from tflite_opt import fileio

    written = [fileio.ensure_distinct(path, *inputs) for path in outputs if path]
    if len(set(written)) != len(written):
        raise click.UsageError("the outputs and --report must be different files")


def _read_data(
    student_model, mode: Mode, train_data, transfer_data, val_data, representative_data, preprocess, progress
):
    """(train, transfer, val, representative) keyed by the student's inputs; int8/int16x8 calibrate on the
    training data unless --representative-data is given."""
    from tflite_opt.representative_data import load_data

    def read(path, *, allow_random=False):
        dataset = load_data(path, student_model.inputs, preprocess=preprocess, allow_random=allow_random)
        for warning in dataset.warnings:
            progress.warn(warning)
        return dataset

    train = read(train_data)
    transfer = read(transfer_data) if transfer_data else None
    val = read(val_data) if val_data else None
    representative = None
    if mode.needs_representative_data:
        representative = read(representative_data, allow_random=True) if representative_data else train
        if representative_data is None:
            progress.info(f"Calibrating {mode.value} on the training data ({train_data})")
    return train, transfer, val, representative


def _convert_student(result, options, representative, progress):
    """(the distilled student's .tflite bytes, None), or (None, the ConversionError) when it cannot convert."""
    from tflite_opt.errors import ConversionError
    from tflite_opt.quantize import conversion

    try:
        with progress.task(f"Converting the distilled student ({options.mode.value})"):
            return conversion.convert_keras_model(result.student.model, options, representative, progress), None
    except ConversionError as exc:
        return None, exc


def _save_student(result, mode: Mode, keras_out, tflite_out, student_tflite, conversion_error, role, progress) -> None:
    """Write the -o files; a .tflite that could not be converted fails after the Keras file is saved. A worker
    that is not the chief writes them to a temporary folder, and says nothing of them on stdout."""
    from tflite_opt import fileio
    from tflite_opt.errors import ConversionError

    pair = result.pair
    shown = not _distribute.discards(role)
    if not shown:
        progress.info(_distribute.discarded_note(role))
    if keras_out:
        fileio.atomic_save(_distribute.write_path(keras_out, role), result.student.model.save)
        if shown:
            click.echo(
                f"distilled student: {pair.student_parameters:,} parameters ({pair.parameter_ratio:.1f}x fewer than "
                f"the teacher) -> {keras_out}"
            )
    if tflite_out:
        if conversion_error is not None:
            saved = f"; the trained student was saved to {keras_out}" if keras_out else ""
            raise ConversionError(f"{conversion_error}{saved}") from conversion_error
        fileio.atomic_write_bytes(_distribute.write_path(tflite_out, role), student_tflite)
        if shown:
            click.echo(f"distilled student ({mode.value}): {format_size(len(student_tflite))} -> {tflite_out}")


def _compare_and_report(
    result,
    teacher_model,
    options,
    representative,
    student_tflite,
    conversion_error,
    *,
    runs: int,
    threads: int,
    report_path,
    progress,
) -> None:
    """Measure teacher, scratch and distilled student in LiteRT: the table on stdout, --report if asked."""
    from tflite_opt import fileio
    from tflite_opt.measure import evaluation
    from tflite_opt.reporting import report as report_mod
    from tflite_opt.training import distillation

    evaluation_options = evaluation.EvaluationOptions(threads=threads, runs=runs, warmup=min(5, runs))
    comparison = distillation.compare(
        result,
        teacher_model,
        options,
        representative,
        student_tflite=student_tflite,
        student_error=None if conversion_error is None else str(conversion_error),
        evaluation_options=evaluation_options,
        progress=progress,
    )
    _common.print_table(distillation.comparison_table(comparison))
    for row in comparison.rows:
        if row.variant.error:
            progress.warn(f"{row.name} could not be measured: {row.variant.error}")
    if report_path:
        fileio.atomic_write_text(
            report_path, report_mod.render_text(comparison.report, report_mod.format_for_path(report_path))
        )

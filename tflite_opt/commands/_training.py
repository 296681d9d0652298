"""What the fine-tuning commands (prune, qat, cluster) share.

Loading a Keras model and labelled data, the fine-tuning flags, writing ``.tflite``/``.keras`` outputs, and
rendering per-layer tables.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tflite_opt.commands import _common, _distribute
from tflite_opt.modes import IoType, Mode
from tflite_opt.reporting.units import format_size
from tflite_opt.training import fit  # no TensorFlow at import time

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.models import LoadedModel
    from tflite_opt.representative_data import Dataset
    from tflite_opt.training.cluster import ClusterRole
    from tflite_opt.training.fit import FitHistory
    from tflite_opt.training.layers import LayerWeights

TFLITE_SUFFIX = ".tflite"
KERAS_SUFFIXES = (".keras", ".h5")
LOSS_CHOICES = fit.LOSS_NAMES
DISTRIBUTE_CHOICES = fit.DISTRIBUTE_NAMES
FORMATS = ["table", "json"]


# ----------------------------------------------------------------------------------------------- shared options


def training_options(learning_rate: float, epochs: int = 2):
    """The fine-tuning flags every training command takes (data, epochs, optimizer, loss, strategy, seed)."""

    def decorate(func):
        options = [
            click.option(
                "--format",
                "format_",
                type=click.Choice(FORMATS),
                default="table",
                show_default=True,
                help="How to print the result on stdout.",
            ),
            click.option(
                "--skip-layer",
                "skip_layers",
                multiple=True,
                metavar="NAME",
                help="Leave this layer as it is. Repeatable.",
            ),
            click.option(
                "--trust-model",
                is_flag=True,
                help="Allow layers that run arbitrary Python when loaded (Lambda). Only for files you trust.",
            ),
            _distribute.timeout_option,
            click.option(
                "--distribute",
                type=click.Choice(DISTRIBUTE_CHOICES),
                default="default",
                show_default=True,
                help="tf.distribute strategy: one device, every local GPU (mirrored), or the TF_CONFIG cluster.",
            ),
            click.option("--seed", type=int, default=0, show_default=True, help="Random seed (reproducible runs)."),
            click.option(
                "--loss",
                type=click.Choice(LOSS_CHOICES),
                default="auto",
                show_default=True,
                help="auto: the model's compiled loss, else cross-entropy matched to the output activation.",
            ),
            click.option(
                "--val-data",
                "val_data",
                default=None,
                metavar="PATH",
                help="Labelled validation data (default: hold out --val-split of the training data).",
            ),
            click.option(
                "--val-split",
                type=click.FloatRange(0, 1, max_open=True),
                default=0.1,
                show_default=True,
                help="Share of the training data held out for validation.",
            ),
            click.option(
                "--learning-rate",
                type=click.FloatRange(0, min_open=True),
                default=learning_rate,
                show_default=True,
                help="Adam learning rate.",
            ),
            click.option(
                "--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Global batch size."
            ),
            click.option(
                "--epochs", type=click.IntRange(min=1), default=epochs, show_default=True, help="Fine-tuning epochs."
            ),
            click.option(
                "--train-data",
                "train_data",
                required=True,
                metavar="PATH",
                help="Labelled training data: .npz with 'y', or DIR/<class>/* image folder.",
            ),
        ]
        return functools.reduce(lambda decorated, option: option(decorated), options, func)

    return decorate


def fit_config(
    epochs, batch_size, learning_rate, val_split, loss, seed, distribute, distribute_timeout
) -> "fit.FitConfig":
    return fit.FitConfig(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        val_split=val_split,
        loss=loss,
        seed=seed,
        distribute=distribute,
        distribute_timeout=distribute_timeout,
    )


@dataclass
class TrainingInputs:
    """The loaded model and data, and (``--distribute multi-worker``) this process's role in the cluster."""

    loaded: "LoadedModel"
    train: "Dataset"
    val: "Dataset | None"
    role: "ClusterRole | None" = None


def load_training_inputs(
    model: str,
    train_data: str,
    val_data: str | None,
    *,
    preprocess: str,
    trust_model: bool,
    progress,
    config: "fit.FitConfig | None" = None,
) -> TrainingInputs:
    """Join the cluster (``config.distribute`` multi-worker), then load a Keras model and its labelled data."""
    from tflite_opt import models
    from tflite_opt.errors import TrainingError
    from tflite_opt.models import tf_runtime
    from tflite_opt.representative_data import load_data

    # Before TensorFlow runs anything: MultiWorkerMirroredStrategy can only start then.
    config = config or fit.FitConfig()
    role = _distribute.start(config.distribute, config.distribute_timeout, progress)
    # tfmot needs tf_keras, which TF_USE_LEGACY_KERAS selects only before TensorFlow's first import.
    tf_runtime.import_tfmot()
    loaded = models.load_model(model, trust_model=trust_model, progress=progress)
    if not loaded.is_keras or loaded.keras_model is None:
        raise TrainingError(
            f"{model} is a {loaded.kind.value}; fine-tuning needs a Keras model file (.keras or .h5) with its "
            "layers, not an exported graph"
        )
    train = load_data(train_data, loaded.inputs, preprocess=preprocess, require_labels=True)
    val = None
    if val_data:
        val = load_data(val_data, loaded.inputs, preprocess=preprocess, require_labels=True)
    for warning in train.warnings + (val.warnings if val else []):
        progress.warn(warning)
    return TrainingInputs(loaded=loaded, train=train, val=val, role=role)


def output_paths(outputs: Sequence[str], inputs: Sequence[str | None], *, allowed: Sequence[str]) -> list[Path]:
    """Validate ``-o`` paths: known suffixes, no duplicates, never an input."""
    from tflite_opt import fileio

    if not outputs:
        raise click.UsageError("give at least one output with -o")
    seen: set[Path] = set()
    paths = []
    for output in outputs:
        suffix = Path(output).suffix.lower()
        if suffix not in allowed:
            raise click.UsageError(f"-o {output}: the suffix picks the format; use one of {', '.join(allowed)}")
        path = fileio.ensure_distinct(output, *inputs)
        if path in seen:
            raise click.UsageError(f"-o {output} is given twice")
        seen.add(path)
        paths.append(Path(output))
    return paths


def gzip_size(data: bytes) -> int:
    """Compressed size, measured the way ``evaluate``/``compare`` report ``gzip_bytes``."""
    from tflite_opt.measure.evaluation import gzip_size as measure

    return measure(data)


def save_keras_file(
    model: Any, path: Path, *, keras3: bool, sample: "Dataset | None", progress, template: Any = None
) -> str:
    """Write the fine-tuned tf_keras model, atomically; returns which Keras wrote it.

    ``.keras`` from a Keras 3 source is written by Keras 3 (bridged back and output-checked), so the user gets
    the format they came with; otherwise, and for ``.h5``, tf_keras writes it (tflite-opt reads both).
    """
    from tflite_opt import fileio
    from tflite_opt.errors import TrainingError
    from tflite_opt.training.bridge import to_keras3

    if keras3 and path.suffix.lower() == ".keras":
        feed = None if sample is None else {k: v[:32] for k, v in sample.inputs.items()}
        try:
            rebuilt, _ = to_keras3(model, feed, template=template)
        except TrainingError as exc:
            progress.warn(f"{exc}; writing {path} with tf_keras instead")
        else:
            fileio.atomic_save(path, lambda tmp: rebuilt.save(tmp))
            return "keras3"
    fileio.atomic_save(path, lambda tmp: model.save(tmp))
    return "tf_keras"


@dataclass
class WrittenFile:
    path: str
    format: str
    size_bytes: int
    gzip_bytes: int | None = None
    mode: str | None = None
    written_by: str | None = None
    discarded: bool = False  # a worker that is not the chief wrote it to a temporary folder


def write_outputs(
    model: Any,
    paths: Sequence[Path],
    *,
    mode: Mode,
    io_type: str,
    allow_float_fallback: bool,
    sparsity: bool,
    representative: "Dataset | None",
    num_samples: int | None,
    progress,
    inputs: TrainingInputs | None = None,
) -> list[WrittenFile]:
    """Convert once (if a .tflite is asked for) and write every output (a worker that is not the chief writes
    them to a temporary folder: ``WrittenFile.discarded``)."""
    from tflite_opt import fileio
    from tflite_opt.quantize import conversion

    role = inputs.role if inputs else None
    discarded = _distribute.discards(role)
    if discarded:
        progress.info(_distribute.discarded_note(role))
    written = []
    tflite_bytes = None
    for path in (_distribute.write_path(p, role) for p in paths):
        if path.suffix.lower() == TFLITE_SUFFIX:
            if tflite_bytes is None:
                options = conversion.ConversionOptions(
                    mode=mode,
                    io_type=IoType(io_type),
                    allow_float_fallback=allow_float_fallback,
                    num_samples=num_samples,
                    sparsity=sparsity and mode in conversion.SPARSE_ENCODING_MODES,
                )
                with progress.task(f"Converting ({mode.value})"):
                    tflite_bytes = conversion.convert_keras_model(model, options, representative, progress)
            fileio.atomic_write_bytes(path, tflite_bytes)
            written.append(
                WrittenFile(
                    str(path), "tflite", len(tflite_bytes), gzip_size(tflite_bytes), mode.value, discarded=discarded
                )
            )
        else:
            from tflite_opt.models import ModelKind

            keras3 = inputs is not None and inputs.loaded.kind == ModelKind.KERAS3
            written_by = save_keras_file(
                model,
                path,
                keras3=keras3,
                sample=inputs.train if inputs else None,
                progress=progress,
                template=inputs.loaded.keras_model if keras3 else None,
            )
            written.append(
                WrittenFile(
                    str(path),
                    path.suffix.lower().lstrip("."),
                    path.stat().st_size,
                    written_by=written_by,
                    discarded=discarded,
                )
            )
    return written


def baseline_gzip(loaded: "LoadedModel", progress) -> int | None:
    """gzip size of the unoptimized model as fp32 .tflite (what the optimization is measured against)."""
    from tflite_opt.errors import TfliteOptError
    from tflite_opt.quantize import conversion

    try:
        with progress.task("Converting the original model (fp32 baseline)"):
            data = conversion.convert(loaded, conversion.ConversionOptions(mode=Mode.FP32), None, progress)
    except TfliteOptError as exc:
        progress.warn(f"no fp32 baseline for the size ratio: {exc}")
        return None
    return gzip_size(data)


def check_mode_flags(mode: Mode, io_type: str) -> None:
    if io_type != IoType.INT8.value and mode != Mode.INT8:
        raise click.UsageError("--io-type applies to --mode int8 only")


def representative_for(
    mode: Mode, representative_data: str | None, inputs: TrainingInputs, preprocess: str, progress
) -> "Dataset | None":
    """Calibration data for int8/int16x8: --representative-data, else the training data."""
    from tflite_opt.representative_data import load_data

    if not mode.needs_representative_data:
        return None
    if representative_data:
        data = load_data(representative_data, inputs.loaded.inputs, preprocess=preprocess, allow_random=True)
        for warning in data.warnings:
            progress.warn(warning)
        return data
    return inputs.train


# -------------------------------------------------------------------------------------------------- rendering


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def history_dict(history: "FitHistory") -> dict:
    from dataclasses import asdict

    data = asdict(history)
    data["final_val_accuracy"] = history.final_val_accuracy
    return data


def layer_rows(rows: Sequence["LayerWeights"]) -> list[dict]:
    return [
        {
            "layer": r.layer,
            "type": r.layer_type,
            "weight": r.weight,
            "shape": list(r.shape),
            "size": r.size,
            "zeros": r.zeros,
            "sparsity": r.sparsity,
            "unique_values": r.unique_values,
            "optimized": r.optimized,
        }
        for r in rows
    ]


def print_layer_table(
    rows: Sequence["LayerWeights"], *, title: str, optimized_label: str, columns: Sequence[str] = ("zeros", "sparsity")
) -> None:
    from tflite_opt.reporting.tables import TextTable

    lines = []
    for row in rows:
        cells = {
            "zeros": f"{row.zeros:,}",
            "sparsity": f"{row.sparsity:.1%}",
            "unique_values": f"{row.unique_values:,}",
        }
        lines.append(
            (
                row.layer,
                row.layer_type,
                _shape(row.shape),
                *(cells[c] for c in columns),
                "yes" if row.optimized else "no",
            )
        )
    headers = ("layer", "type", "shape", *(c.replace("_", " ") for c in columns), optimized_label)
    _common.print_table(
        TextTable(headers=headers, rows=lines, title=title, right=frozenset(range(3, 3 + len(columns))))
    )


def print_files(written: Sequence[WrittenFile], baseline: int | None) -> None:
    for item in (w for w in written if not w.discarded):
        line = f"{item.path}: {format_size(item.size_bytes)}"
        if item.written_by:
            line = (
                f"{item.path} ({'Keras 3' if item.written_by == 'keras3' else 'tf_keras'}): "
                f"{format_size(item.size_bytes)}"
            )
        if item.mode:
            line = f"{item.path} ({item.mode}): {format_size(item.size_bytes)}"
        if item.gzip_bytes is not None:
            line += f", gzip {format_size(item.gzip_bytes)}"
            if baseline:
                line += f" ({item.gzip_bytes / baseline:.2f}x the original fp32 model's gzip)"
        click.echo(line)


def print_json(payload: dict) -> None:
    click.echo(json.dumps(payload, indent=2, default=str))


def files_dict(written: Sequence[WrittenFile], baseline: int | None) -> list[dict]:
    return [
        {
            "path": w.path,
            "format": w.format,
            "mode": w.mode,
            "written_by": w.written_by,
            "size_bytes": w.size_bytes,
            "gzip_bytes": w.gzip_bytes,
            "gzip_ratio": (w.gzip_bytes / baseline) if (w.gzip_bytes and baseline) else None,
        }
        for w in written
        if not w.discarded
    ]


def val_accuracy_text(history: "FitHistory") -> str:
    value = history.final_val_accuracy
    return "n/a (no validation data)" if value is None else f"{value:.4f}"


# ---------------------------------------------------------------------------------------------------- command

"""The pipeline file (SPEC §10): read, check and resolve a ``PIPELINE.toml`` into a :class:`PipelineSpec`.

Tables: ``[model]`` (or several ``[[model]]``, each may override ``[model.data]``), ``[data]``, ``[[variant]]``,
``[evaluation]``, ``[gates]``, ``[output]``. Paths are relative to the pipeline file's folder. Every key is
checked before any work: an unknown key, a wrong type, an out-of-range number or a missing file is a
:class:`~tflite_opt.workflows.toml_lines.PipelineError` naming the key and its line.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tflite_opt.modes import Mode
from tflite_opt.workflows.pipeline_options import (
    TRAINING_KINDS,
    conversion_option_kinds,
    default_variant_name,
    training_option_kinds,
)
from tflite_opt.workflows.toml_lines import PipelineError, TableReader

TOP_KEYS = ("model", "data", "variant", "evaluation", "gates", "output")
MODEL_KEYS = ("path", "name", "signature", "input_shape", "trust_model", "data")
DATA_KEYS = ("eval", "calibration", "train", "preprocess", "num_samples")
EVALUATION_KEYS = ("threads", "runs", "warmup", "xnnpack", "reference", "num_samples", "batch_size", "output")
GATE_KEYS = ("max_accuracy_drop", "gate")
OUTPUT_KEYS = ("dir", "formats", "junit", "html", "plot")
VARIANT_KEYS = ("name", "kind", "mode", "target")
REPORT_FORMATS = ("json", "markdown", "csv")
TARGETS = ("micro",)
DEFAULT_OUTPUT_DIR = "tflite-opt-out"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")

__all__ = ["PipelineError", "PipelineSpec", "load_pipeline"]


@dataclass
class DataSpec:
    """Data files (resolved paths, or ``"random"``) and how to read them."""

    eval: str | None = None
    calibration: str | None = None
    train: str | None = None
    preprocess: str = "unit"
    num_samples: int | None = None  # calibration samples


@dataclass
class ModelSpec:
    name: str
    path: Path
    signature: str | None = None
    input_shapes: dict[str, tuple[int | None, ...]] = field(default_factory=dict)
    trust_model: bool = False
    data: DataSpec = field(default_factory=DataSpec)


@dataclass
class VariantSpec:
    """One ``[[variant]]``: a conversion, or a training kind then a conversion.

    Attributes:
        conversion: every ``ConversionOptions`` field but ``mode``, resolved to JSON-able values.
        training: the training kind's options with defaults (empty for ``kind = "convert"``).
        files: input files besides the model and data whose bytes go into the cache key (student, recipe).
    """

    name: str
    kind: str
    mode: str
    conversion: dict[str, Any]
    training: dict[str, Any] = field(default_factory=dict)
    target: str | None = None
    files: dict[str, str] = field(default_factory=dict)

    @property
    def is_training(self) -> bool:
        return self.kind in TRAINING_KINDS

    def resolved(self) -> dict[str, Any]:
        """Everything that decides this variant's file (the name is not: renaming reuses the cache)."""
        return {"kind": self.kind, "mode": self.mode, "conversion": self.conversion, "training": self.training}


@dataclass
class EvaluationSpec:
    threads: int = 1
    runs: int = 50
    warmup: int = 5
    xnnpack: bool = True
    reference: str | None = None
    num_samples: int | None = None
    batch_size: int | None = None
    output: str | None = None


@dataclass
class OutputSpec:
    dir: Path
    formats: list[str] = field(default_factory=lambda: ["json", "markdown"])
    junit: Path | None = None
    html: Path | None = None
    plot: Path | None = None


@dataclass
class PipelineSpec:
    path: Path
    sha256: str
    models: list[ModelSpec]
    variants: list[VariantSpec]
    evaluation: EvaluationSpec
    output: OutputSpec
    gate_texts: list[str] = field(default_factory=list)
    max_accuracy_drop: float | None = None
    gates: list = field(default_factory=list)  # parsed reporting.gates.Gate


def load_pipeline(path: str | os.PathLike) -> PipelineSpec:
    """Read and check a pipeline file.

    Raises:
        PipelineError: naming the file, the line and the key.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"cannot read the pipeline file {path}: {exc}") from exc
    reader = TableReader(path, text)
    document = reader.document
    reader.check_keys(document, (), TOP_KEYS, "the pipeline")
    base = path.parent
    data = _data(reader, reader.table(document, "data", (), "[data]"), ("data",), "[data]", base, DataSpec())
    models = _models(reader, document, base, data)
    variants = _variants(reader, document, base)
    _check_variant_data(reader, models, variants)
    evaluation = _evaluation(reader, reader.table(document, "evaluation", (), "[evaluation]"), variants)
    spec = PipelineSpec(
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        models=models,
        variants=variants,
        evaluation=evaluation,
        output=_output(reader, reader.table(document, "output", (), "[output]"), base),
    )
    _gates(reader, reader.table(document, "gates", (), "[gates]"), spec)
    _check_outputs(reader, spec)
    return spec


def _check_outputs(reader: TableReader, spec: PipelineSpec) -> None:
    """No file the run writes may be one of its inputs (or inside an input SavedModel folder)."""
    from tflite_opt.errors import OutputPathError
    from tflite_opt.fileio import ensure_distinct

    inputs = [spec.path] + [v for v in spec.variants for v in v.files.values()]
    for model in spec.models:
        inputs += [model.path, model.data.eval, model.data.calibration, model.data.train]
    inputs = [i for i in inputs if i is not None and str(i) != "random"]
    names = [f"{v.name}.tflite" for v in spec.variants] + ["report.json", "report.md", "report.csv", "report.html"]
    for model in spec.models:
        folder = spec.output.dir / model.name if len(spec.models) > 1 else spec.output.dir
        for name in names:
            try:
                ensure_distinct(folder / name, *inputs)
            except OutputPathError as exc:
                raise reader.error(("output", "dir"), f"[output] dir: {exc}") from exc


def _resolve(base: Path, value: str) -> Path:
    return Path(os.path.normpath(base / os.path.expanduser(value)))


def _existing(reader: TableReader, table, key, path, label, base, *, allow_random=False) -> str | None:
    value = reader.value(table, key, path, "str", label=label)
    if value is None or (allow_random and value == "random"):
        return value
    resolved = _resolve(base, value)
    if not resolved.exists():
        raise reader.error(tuple(path) + (key,), f"{label} {key}: {resolved} does not exist")
    return str(resolved)


def _data(reader: TableReader, table, path, label, base: Path, defaults: DataSpec) -> DataSpec:
    from tflite_opt.representative_data.dataset import PREPROCESS_CHOICES

    reader.check_keys(table, path, DATA_KEYS, label)
    return DataSpec(
        eval=_existing(reader, table, "eval", path, label, base, allow_random=True) or defaults.eval,
        calibration=_existing(reader, table, "calibration", path, label, base, allow_random=True)
        or defaults.calibration,
        train=_existing(reader, table, "train", path, label, base) or defaults.train,
        preprocess=reader.value(
            table, "preprocess", path, "choice", label=label, choices=PREPROCESS_CHOICES, default=defaults.preprocess
        ),
        num_samples=reader.value(
            table, "num_samples", path, "int", label=label, minimum=1, default=defaults.num_samples
        ),
    )


def _models(reader: TableReader, document, base: Path, data: DataSpec) -> list[ModelSpec]:
    tables = reader.tables(document, "model", (), "a [model] table or [[model]] tables")
    if not tables:
        raise PipelineError(f'{reader.path.name}: no [model]; add [model] with path = "model.keras"')
    models = []
    for index, table in enumerate(tables):
        path = ("model", index) if isinstance(document["model"], list) else ("model",)
        label = "[model]" if len(tables) == 1 else f"[[model]] #{index + 1}"
        reader.check_keys(table, path, MODEL_KEYS, label)
        model_path = _existing(
            reader,
            {"path": reader.value(table, "path", path, "str", label=label, required=True)},
            "path",
            path,
            label,
            base,
        )
        name = reader.value(table, "name", path, "str", label=label) or Path(model_path).stem
        if not _NAME_RE.match(name):
            raise reader.error(path + ("name",), f"model name {name!r} may use letters, digits and _.+- only")
        if name in [m.name for m in models]:
            raise reader.error(path + ("name",), f"two models are named {name!r}; give each a different name")
        models.append(
            ModelSpec(
                name=name,
                path=Path(model_path),
                signature=reader.value(table, "signature", path, "str", label=label),
                input_shapes=_input_shapes(reader, table, path, label),
                trust_model=reader.value(table, "trust_model", path, "bool", label=label, default=False),
                data=_data(
                    reader, reader.table(table, "data", path, label), path + ("data",), f"{label} data", base, data
                ),
            )
        )
    return models


def _input_shapes(reader: TableReader, table, path, label) -> dict[str, tuple[int | None, ...]]:
    shapes = reader.table(table, "input_shape", path, "NAME = [D0, D1, ...]")
    out = {}
    for name, dims in shapes.items():
        if (
            not isinstance(dims, list)
            or not dims
            or not all(isinstance(d, int) and not isinstance(d, bool) for d in dims)
        ):
            raise reader.error(
                path + ("input_shape", name),
                f"input_shape {name} in {label} must be a list of whole numbers, e.g. [1, 96, 96, 3]",
            )
        if any(d == 0 or d < -1 for d in dims):
            raise reader.error(path + ("input_shape", name), f"input_shape {name}: dimensions are positive or -1")
        out[name] = tuple(None if d == -1 else d for d in dims)
    return out


def _variants(reader: TableReader, document, base: Path) -> list[VariantSpec]:
    tables = reader.tables(document, "variant", (), "[[variant]] tables")
    if not tables:
        raise PipelineError(f'{reader.path.name}: no [[variant]]; add one, e.g. [[variant]] with mode = "int8"')
    variants: list[VariantSpec] = []
    for index, table in enumerate(tables):
        variant = _variant(reader, table, ("variant", index), base, index)
        if variant.name in [v.name for v in variants]:
            raise reader.error(
                ("variant", index, "name"), f"two variants are named {variant.name!r}; give each a different name"
            )
        variants.append(variant)
    return variants


def _variant(reader: TableReader, table, path, base: Path, index: int) -> VariantSpec:
    from tflite_opt.modes import backends_for

    given_name = reader.value(table, "name", path, "str", label=f"[[variant]] #{index + 1}")
    label = f"[[variant]] {given_name!r}" if given_name else f"[[variant]] #{index + 1}"
    kind = reader.value(
        table, "kind", path, "choice", label=label, choices=("convert", *TRAINING_KINDS), default="convert"
    )
    training_kinds = training_option_kinds(kind) if kind != "convert" else {}
    conversion_kinds = {k: v for k, v in conversion_option_kinds().items() if k not in training_kinds}
    reader.check_keys(table, path, VARIANT_KEYS + tuple(conversion_kinds) + tuple(training_kinds), label)
    modes = tuple(m.value for m in Mode)
    default_mode = {"convert": given_name if given_name in modes else None, "qat": "int8"}.get(kind, "fp32")
    mode = reader.value(
        table, "mode", path, "choice", label=label, choices=modes, default=default_mode, required=default_mode is None
    )
    if kind == "qat" and mode != "int8":
        raise reader.error(path + ("mode",), f'{label}: QAT produces an int8 file; remove mode or set "int8"')
    files: dict[str, str] = {}
    conversion = _options(reader, table, path, label, conversion_kinds, base, files)
    able = [b.value for b in backends_for(Mode(mode))]
    if conversion.get("backend") is not None and conversion["backend"] not in able:
        raise reader.error(
            path + ("backend",),
            f"{label}: the {conversion['backend']} backend cannot make mode {mode}; choose {' or '.join(able)}",
        )
    training = _options(reader, table, path, label, training_kinds, base, files)
    if kind == "distill" and training.get("student") is None:
        raise reader.error(path, f'{label}: distill needs student = "student.keras" (the small model to train)')
    name = given_name or default_variant_name(kind, mode, training)
    if not _NAME_RE.match(name):
        raise reader.error(
            path + ("name",), f"variant name {name!r} may use letters, digits and _.+- only (it names the .tflite file)"
        )
    target = reader.value(table, "target", path, "choice", label=label, choices=TARGETS)
    return VariantSpec(
        name=name, kind=kind, mode=mode, conversion=conversion, training=training, target=target, files=files
    )


def _options(reader: TableReader, table, path, label, kinds, base: Path, files: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, option in kinds.items():
        if option.kind == "path":
            value = _existing(reader, table, key, path, label, base)
            if value is not None:
                files[key] = value
        else:
            value = reader.value(
                table,
                key,
                path,
                option.kind,
                label=label,
                default=option.default,
                choices=option.choices,
                minimum=option.minimum,
                maximum=option.maximum,
                open_minimum=option.open_minimum,
            )
        values[key] = value
    return values


def _check_variant_data(reader: TableReader, models: list[ModelSpec], variants: list[VariantSpec]) -> None:
    for index, variant in enumerate(variants):
        for model in models:
            if variant.is_training and model.data.train is None:
                raise reader.error(
                    ("variant", index, "kind"),
                    f"variant {variant.name!r} ({variant.kind}) needs training data: set [data] train",
                )
            calibrates = Mode(variant.mode).needs_representative_data or variant.kind == "qat"
            if calibrates and not (model.data.calibration or model.data.train or model.data.eval):
                raise reader.error(
                    ("variant", index, "mode"),
                    f"variant {variant.name!r} ({variant.mode}) needs calibration data: set [data] calibration",
                )


def _evaluation(reader: TableReader, table, variants: list[VariantSpec]) -> EvaluationSpec:
    path, label = ("evaluation",), "[evaluation]"
    reader.check_keys(table, path, EVALUATION_KEYS, label)
    names = [v.name for v in variants]
    reference = reader.value(table, "reference", path, "choice", label=label, choices=names)
    if reference is None:
        reference = next((v.name for v in variants if v.kind == "convert" and v.mode == "fp32"), names[0])
    return EvaluationSpec(
        threads=reader.value(table, "threads", path, "int", label=label, default=1, minimum=1),
        runs=reader.value(table, "runs", path, "int", label=label, default=50, minimum=0),
        warmup=reader.value(table, "warmup", path, "int", label=label, default=5, minimum=0),
        xnnpack=reader.value(table, "xnnpack", path, "bool", label=label, default=True),
        reference=reference,
        num_samples=reader.value(table, "num_samples", path, "int", label=label, minimum=1),
        batch_size=reader.value(table, "batch_size", path, "int", label=label, minimum=1),
        output=reader.value(table, "output", path, "str", label=label),
    )


def _output(reader: TableReader, table, base: Path) -> OutputSpec:
    path, label = ("output",), "[output]"
    reader.check_keys(table, path, OUTPUT_KEYS, label)
    folder = _resolve(base, reader.value(table, "dir", path, "str", label=label, default=DEFAULT_OUTPUT_DIR))
    formats = reader.value(table, "formats", path, "str_list", label=label, default=["json", "markdown"])
    for item in formats:
        if item not in REPORT_FORMATS:
            raise reader.error(
                path + ("formats",),
                f"[output] formats: unknown format {item!r}; choose from {', '.join(REPORT_FORMATS)}",
            )

    def optional_path(key: str) -> Path | None:
        value = reader.value(table, key, path, "str", label=label)
        return None if value is None else _resolve(base, value)

    return OutputSpec(
        dir=folder,
        formats=list(dict.fromkeys(formats)),
        junit=optional_path("junit"),
        html=optional_path("html"),
        plot=optional_path("plot"),
    )


def _gates(reader: TableReader, table, spec: PipelineSpec) -> None:
    from tflite_opt.reporting import gates

    path, label = ("gates",), "[gates]"
    reader.check_keys(table, path, GATE_KEYS, label)
    spec.max_accuracy_drop = reader.value(table, "max_accuracy_drop", path, "float", label=label, minimum=0, maximum=1)
    spec.gate_texts = reader.value(table, "gate", path, "str_list", label=label, default=[])
    try:
        spec.gates = gates.parse_gates(spec.gate_texts, spec.max_accuracy_drop)
        gates.check_variant_names(spec.gates, [v.name for v in spec.variants])
    except gates.GateSyntaxError as exc:
        raise reader.error(path + ("gate",), f"[gates] {exc}") from exc

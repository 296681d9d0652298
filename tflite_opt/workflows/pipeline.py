"""``tflite-opt run``: a declarative pipeline (SPEC §10) with a content-addressed cache.

For every model and variant, the cache key is the sha256 of: the source model's bytes (a SavedModel folder file
by file), the bytes of the data files the variant uses (calibration, training, student, recipe), the variant's
resolved options (every ``ConversionOptions`` field and training setting, defaults filled in) and the versions of
tflite-opt, TensorFlow, tf_keras, Keras, tfmot, LiteRT and the LiteRT Quantizer. A hit copies the cached file; a
miss makes it (:mod:`~tflite_opt.workflows.pipeline_variants`, one model load and export for all misses).

Measurements are cached too, per file: the key is the file's sha256, the evaluation data's bytes, the
evaluation settings and the LiteRT version. A cached measurement is passed back to the evaluation engine as
already measured, so only new files run and the values measured against the reference (deltas, agreement,
SQNR, ratios, speedups) are recomputed. When everything is cached, nothing imports TensorFlow or loads the
model: the rerun copies files and renders the reports.
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tflite_opt.fileio import atomic_write_bytes
from tflite_opt.progress import Progress, ensure
from tflite_opt.workflows.cache import Cache, json_sha256, path_sha256
from tflite_opt.workflows.pipeline_variants import calibration_source, needs_calibration

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.measure.evaluation import EvaluationOptions, MeasuredVariant
    from tflite_opt.reporting.report import Report, VariantResult
    from tflite_opt.workflows.pipeline_file import ModelSpec, PipelineSpec, VariantSpec

ARTIFACTS = "artifacts"
EVALUATIONS = "evaluations"
ARTIFACT_FILE = "model.tflite"
KEY_SCHEMA = 1
# Measured against the reference: recomputed on every run, never cached.
RELATIVE_FIELDS = ("size_ratio", "accuracy_delta", "agreement", "sqnr_db", "speedup")
NOT_CACHED_FIELDS = ("name", "path", "error", "cached") + RELATIVE_FIELDS


def versions() -> dict[str, str | None]:
    """The package versions that go into every cache key (from metadata: nothing is imported)."""
    from tflite_opt import __version__
    from tflite_opt.environment import package_version

    return {
        "tflite-opt": __version__,
        "tensorflow": package_version("tensorflow", "tensorflow-cpu", "tf-nightly"),
        "tf-keras": package_version("tf-keras"),
        "keras": package_version("keras"),
        "tfmot": package_version("tensorflow-model-optimization"),
        "ai-edge-litert": package_version("ai-edge-litert", "ai-edge-litert-nightly"),
        "litert-quantizer": package_version("litert-quantizer"),
    }


class _Digests:
    """sha256 of each input path, computed once per run."""

    def __init__(self) -> None:
        self._known: dict[str, str] = {}

    def __call__(self, path: str | Path | None) -> str | None:
        if path is None or str(path) == "random":
            return None if path is None else "random"
        key = str(path)
        if key not in self._known:
            self._known[key] = path_sha256(path)
        return self._known[key]


def variant_key(model: "ModelSpec", variant: "VariantSpec", digests: _Digests, package_versions: dict) -> str:
    """The cache key of one variant's ``.tflite`` (see the module docstring)."""
    inputs: dict[str, Any] = {key: digests(path) for key, path in sorted(variant.files.items())}
    if variant.is_training:
        inputs["train"] = digests(model.data.train)
    if needs_calibration(variant):
        inputs["calibration"] = digests(calibration_source(model))
        inputs["calibration_samples"] = model.data.num_samples
    return json_sha256(
        {
            "schema": KEY_SCHEMA,
            "model": digests(model.path),
            "load": {"signature": model.signature, "input_shapes": {k: list(v) for k, v in model.input_shapes.items()}},
            "preprocess": model.data.preprocess,
            "inputs": inputs,
            "variant": variant.resolved(),
            "versions": package_versions,
        }
    )


def evaluation_key(
    artifact_sha256: str,
    model: "ModelSpec",
    spec: "PipelineSpec",
    digests: _Digests,
    package_versions: dict,
    target: str | None = None,
) -> str:
    """The cache key of one file's measurements: the file, the evaluation data and settings, the runtime (and
    TFLite Micro's version for ``target = "micro"``)."""
    from tflite_opt.environment import package_version

    settings = dataclasses.asdict(spec.evaluation)
    settings.pop("reference")
    runtime = {k: package_versions[k] for k in ("tflite-opt", "ai-edge-litert")}
    if target == "micro":
        runtime["tflite-micro"] = package_version("tflite-micro")
    return json_sha256(
        {
            "schema": KEY_SCHEMA,
            "artifact": artifact_sha256,
            "data": digests(model.data.eval),
            "preprocess": model.data.preprocess,
            "settings": settings,
            "target": target,
            "versions": runtime,
        }
    )


@dataclass
class PlannedVariant:
    """What ``--dry-run`` shows for one model × variant."""

    model: str
    variant: str
    kind: str
    mode: str
    key: str
    cached: bool
    evaluation_cached: bool
    target: str | None = None


@dataclass
class ModelRun:
    """One model's results: its report, the files written and which variants came from the cache."""

    model: "ModelSpec"
    report: "Report"
    output_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)  # variant -> "cached" | "built" | "failed"
    measured_from_cache: list[str] = field(default_factory=list)


@dataclass
class PipelineResult:
    spec: "PipelineSpec"
    runs: list[ModelRun]
    versions: dict[str, str | None] = field(default_factory=dict)

    @property
    def reports(self) -> list[tuple[str, "Report"]]:
        return [(run.model.name, run.report) for run in self.runs]


def model_output_dir(spec: "PipelineSpec", model: "ModelSpec") -> Path:
    """``[output] dir`` for one model; ``dir/<model name>`` when the pipeline has several."""
    return spec.output.dir / model.name if len(spec.models) > 1 else spec.output.dir


def plan_pipeline(spec: "PipelineSpec", cache: Cache | None) -> list[PlannedVariant]:
    """What a run would do: which files and measurements are cached. Reads the cache, changes nothing."""
    digests, package_versions = _Digests(), versions()
    plan = []
    for model in spec.models:
        for variant in spec.variants:
            key = variant_key(model, variant, digests, package_versions)
            entry = cache.peek(ARTIFACTS, key) if cache is not None else None
            measured = False
            if entry is not None:
                sha256 = entry.meta.get("sha256", "")
                measurement = evaluation_key(sha256, model, spec, digests, package_versions, variant.target)
                measured = cache.contains(EVALUATIONS, measurement)
            cached = entry is not None
            planned = PlannedVariant(model.name, variant.name, variant.kind, variant.mode, key, cached, measured)
            planned.target = variant.target
            plan.append(planned)
    return plan


def run_pipeline(spec: "PipelineSpec", cache: Cache | None, progress: Progress | None = None) -> PipelineResult:
    """Make (or copy from the cache) every variant of every model, measure them, check the gates.

    Files go to ``[output] dir`` as ``<variant>.tflite``. Nothing is written for a variant that failed.
    """
    progress = ensure(progress)
    digests, package_versions = _Digests(), versions()
    runs = [_run_model(spec, model, cache, digests, package_versions, progress) for model in spec.models]
    return PipelineResult(spec=spec, runs=runs, versions=package_versions)


def _run_model(spec, model, cache, digests, package_versions, progress) -> ModelRun:
    from tflite_opt.workflows.pipeline_variants import build_variants

    out_dir = model_output_dir(spec, model)
    keys = {v.name: variant_key(model, v, digests, package_versions) for v in spec.variants}
    contents: dict[str, bytes] = {}
    errors: dict[str, str] = {}
    status: dict[str, str] = {}
    for variant in spec.variants:
        entry = cache.get(ARTIFACTS, keys[variant.name]) if cache is not None else None
        if entry is not None:
            contents[variant.name] = entry.files[ARTIFACT_FILE]
            status[variant.name] = "cached"
    missing = [v for v in spec.variants if v.name not in contents]
    if missing:
        for name, made in build_variants(model, missing, progress).items():
            if isinstance(made, bytes):
                contents[name], status[name] = made, "built"
                if cache is not None:
                    cache.put(ARTIFACTS, keys[name], {ARTIFACT_FILE: made}, _artifact_meta(made, model, name))
            else:
                errors[name], status[name] = str(made), "failed"
    files = {}
    for variant in spec.variants:
        if variant.name in contents:
            files[variant.name] = atomic_write_bytes(out_dir / f"{variant.name}.tflite", contents[variant.name])
    run = ModelRun(model=model, report=None, output_dir=out_dir, files=files, status=status)  # type: ignore[arg-type]
    run.report = _evaluate(spec, model, run, contents, errors, cache, digests, package_versions, progress)
    return run


def _artifact_meta(content: bytes, model: "ModelSpec", name: str) -> dict[str, Any]:
    import hashlib

    return {"sha256": hashlib.sha256(content).hexdigest(), "model": str(model.path), "variant": name}


def _evaluation_options(spec: "PipelineSpec", model: "ModelSpec") -> "EvaluationOptions":
    from tflite_opt.measure.evaluation import EvaluationOptions

    settings = spec.evaluation
    return EvaluationOptions(
        threads=settings.threads,
        xnnpack=settings.xnnpack,
        warmup=settings.warmup,
        runs=settings.runs,
        preprocess=model.data.preprocess,
        num_samples=settings.num_samples,
        batch_size=settings.batch_size,
        output=settings.output,
        allow_random=True,
    )


def _evaluate(spec, model, run: ModelRun, contents, errors, cache, digests, package_versions, progress) -> "Report":
    """Measure every file (reusing cached measurements), then check the gates."""
    import hashlib

    from tflite_opt.measure import evaluation

    options = _evaluation_options(spec, model)
    sources, measured, eval_keys = [], {}, {}
    for variant in spec.variants:
        path = str(run.output_dir / f"{variant.name}.tflite")
        label = variant.kind if variant.is_training else variant.mode
        if variant.name in errors:
            sources.append(evaluation.VariantSource(variant.name, path, mode=label, error=errors[variant.name]))
            continue
        content = contents[variant.name]
        sources.append(evaluation.VariantSource(name=variant.name, path=path, content=content, mode=label))
        sha256 = hashlib.sha256(content).hexdigest()
        eval_keys[variant.name] = evaluation_key(sha256, model, spec, digests, package_versions, variant.target)
        earlier = _cached_measurement(cache, eval_keys[variant.name])
        if earlier is not None:
            measured[variant.name] = earlier
            run.measured_from_cache.append(variant.name)
    result = evaluation.evaluate_variants(
        sources, model.data.eval, reference=spec.evaluation.reference, options=options, progress=progress,
        measured=measured,
    )  # fmt: skip
    variants = {v.name: v for v in spec.variants}
    for item in result.variants:
        if item.ok and item.name not in measured:
            if variants[item.name].target == "micro":
                _measure_micro(item, contents[item.name], model, options, progress)
            if cache is not None and item.ok:
                _store_measurement(cache, eval_keys[item.name], item, result.outputs.get(item.name))
    report = evaluation.build_report(result, options, spec.gates)
    report.pipeline = spec.sha256  # SPEC §4 v2 "pipeline"
    for item in report.variants:
        item.cached = run.status.get(item.name) == "cached"
        if item.name not in errors:  # a variant that was never built has no file (path null)
            item.path = str(run.output_dir / f"{item.name}.tflite")
        if item.backend is None and item.ok:
            item.backend = _backend(variants[item.name])
    return report


def _measure_micro(item: "VariantResult", content: bytes, model: "ModelSpec", options, progress) -> None:
    """``target = "micro"``: the smallest TFLite Micro arena (SPEC §9) into ``arena_bytes``; a model TFLM cannot
    run fails its variant, naming the ops."""
    from tflite_opt.errors import TfliteOptError
    from tflite_opt.measure.micro import measure_micro

    try:
        micro = measure_micro(
            content, path=item.path or item.name, data=model.data.eval, output=options.output,
            preprocess=options.preprocess, num_samples=options.num_samples, allow_random=True, progress=progress,
        )  # fmt: skip
    except TfliteOptError as exc:
        item.error = f"TFLite Micro: {exc}"
        return
    item.arena_bytes = micro.arena_bytes
    if micro.error or micro.arena_bytes is None:
        item.error = f"TFLite Micro: {micro.error or 'no arena size found'}"


def _backend(variant: "VariantSpec") -> str | None:
    """Who made the file: the backend the variant's options resolve to (no TensorFlow needed to tell)."""
    from tflite_opt.workflows.pipeline_options import build_conversion_options

    backend = getattr(build_conversion_options(variant.mode, variant.conversion), "resolved_backend", None)
    return None if backend is None else str(getattr(backend, "value", backend))


def _cached_measurement(cache: Cache | None, key: str) -> "MeasuredVariant | None":
    import numpy as np

    from tflite_opt.measure.evaluation import MeasuredVariant, RunOutputs
    from tflite_opt.reporting.report import LatencyStats, VariantResult

    entry = cache.get(EVALUATIONS, key) if cache is not None else None
    if entry is None:
        return None
    record = json.loads(entry.files["result.json"])
    known = {f.name for f in dataclasses.fields(VariantResult)}
    values = {k: v for k, v in record["result"].items() if k in known and k not in NOT_CACHED_FIELDS}
    if values.get("latency_ms") is not None:
        values["latency_ms"] = LatencyStats(**values["latency_ms"])
    outputs = None
    if record.get("outputs"):
        with np.load(io.BytesIO(entry.files["outputs.npz"]), allow_pickle=False) as arrays:
            outputs = RunOutputs(
                outputs={name: arrays[f"output/{name}"] for name in record["outputs"]["names"]},
                accuracy_output=record["outputs"]["accuracy_output"],
                predictions=arrays["predictions"],
            )
    return MeasuredVariant(VariantResult(name=record["result"].get("name", ""), **values), outputs)


def _store_measurement(cache: Cache, key: str, result: "VariantResult", outputs) -> None:
    import numpy as np

    values = dataclasses.asdict(result)
    record: dict[str, Any] = {
        "result": {k: v for k, v in values.items() if k not in NOT_CACHED_FIELDS[1:]},
        "outputs": None,
    }
    files: dict[str, bytes] = {}
    if outputs is not None:
        buffer = io.BytesIO()
        arrays = {f"output/{name}": value for name, value in outputs.outputs.items()}
        np.savez(buffer, predictions=outputs.predictions, **arrays)
        files["outputs.npz"] = buffer.getvalue()
        record["outputs"] = {"names": sorted(outputs.outputs), "accuracy_output": outputs.accuracy_output}
    files["result.json"] = json.dumps(record, sort_keys=True).encode("utf-8")
    cache.put(EVALUATIONS, key, files, {"sha256": result.sha256})

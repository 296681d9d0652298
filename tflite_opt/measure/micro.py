"""Microcontroller fit (SPEC §9): the smallest tensor arena, flash, the op resolver, ops TFLM lacks, fidelity.

* **arena**: the smallest whole number of KiB at which the TensorFlow Lite Micro interpreter allocates the model
  *and* runs it (on the first sample of the data, zeros without data): that size passes and one KiB less fails,
  both probed. The search starts from the recording allocator's own total at a generous arena (usually two
  probes: the estimate rounded up to a KiB passes, one KiB less fails), gallops from there when the estimate is
  off, then bisects; it never goes above :data:`MAX_ARENA`, nor below :data:`MIN_ARENA` (this TFLM build
  dereferences a null allocator when the arena cannot even hold the allocator, about 0.5 KiB).
  The host build is 64-bit and runs TFLM's reference kernels: pointers and the structures that hold them are
  half that size on a 32-bit Cortex-M, so the arena there is somewhat smaller, while optimized kernels
  (CMSIS-NN) may add scratch buffers.
* **flash**: the file's bytes (the flatbuffer is linked in as it is; see ``export-c``).
* **ops / resolver**: every distinct op of every subgraph, and the ``MicroMutableOpResolver`` lines that register
  them (:mod:`tflite_opt.measure.micro_ops`).
* **unsupported ops**: ops TFLM has no kernel for, and ops whose kernel refuses the model (e.g. hybrid
  dynamic-range ops, float16 weights), each with the reason TFLM logged.
* **fidelity** (with data): TFLM's outputs against LiteRT's (XNNPACK) on the same samples, in real units:
  ``sqnr_db``, ``agreement`` (top-1 on the accuracy output), ``max_abs_diff``; ``accuracy`` and
  ``reference_accuracy`` with labels. TFLM runs reference kernels, which round differently from XNNPACK's.

No TensorFlow here.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tflite_opt.compat import micro as tflm
from tflite_opt.errors import DataError
from tflite_opt.measure import inspection, micro_ops
from tflite_opt.measure.micro_run import (
    MicroModel,
    Probe,
    SideBySide,
    first_inputs,
    load_micro_model,
    probe,
    run_side_by_side,
)
from tflite_opt.progress import Progress, ensure
from tflite_opt.reporting.micro_columns import HOST_NOTE
from tflite_opt.representative_data import Dataset, load_data

ARENA_STEP = 1024
MIN_ARENA = 2 * ARENA_STEP
MIN_ARENA_PER_VARIABLE = 128
FIRST_ARENA = 256 * ARENA_STEP
MAX_ARENA = 256 << 20
ARENA_GROWTH = 8
WEIGHT_ONLY_MODES = {"int8-weights", "int4-weights"}
FLOAT_MODES = {"fp32", "float16", "dynamic", "int4"} | WEIGHT_ONLY_MODES
FLOAT_WARNING = (
    "float on a microcontroller: consider int8 (tflite-opt convert MODEL --mode int8 --representative-data PATH)"
)
WEIGHT_ONLY_WARNING = (
    "weight-only quantization on a microcontroller: the weights are dequantized into the arena (RAM) and "
    "computed in float; consider int8"
)
MODE_HINTS = {
    "int4": "int4 weights with float activations are hybrid ops, which TFLM does not run: convert with --mode int8",
    "int4-weights": "TFLM cannot dequantize int4 weights: convert with --mode int8",
    "dynamic": "dynamic-range (hybrid) ops do not run on TFLM: convert with --mode int8",
    "float16": "float16 weights do not run on TFLM: convert with --mode int8 (or fp32)",
    "int16x8": "TFLM lacks some int16x8 kernels: try --mode int8",
}


@dataclass
class MicroResult:
    """What a microcontroller needs to run one ``.tflite`` file (``tflite-opt micro``).

    Attributes:
        path: the file (for display).
        flash_bytes: the file's size: what the model takes in flash.
        arena_bytes: the smallest arena, in whole KiB, at which TFLM allocates and runs the model;
            ``None`` when it cannot run it (see ``unsupported_ops`` and ``error``).
        arena_used_bytes: what TFLM's recording allocator reports using at ``arena_bytes``.
        arena_floor_bytes: the smallest arena the search may try (an ``arena_bytes`` equal to it was not
            checked against one KiB less).
        ops: op name -> instances, every subgraph counted.
        unsupported_ops: ops TFLM has no kernel for, or whose kernel refuses this model, sorted.
        unsupported_reasons: op -> why (``"no TFLM kernel"``, or the line TFLM logged).
        resolver: the C++ lines that register the ops TFLM has (``static tflite::MicroMutableOpResolver<N> ...``).
        mode: the post-training mode the file looks like (``int8``, ``fp32``, ...).
        integer_only: every tensor ops touch is an integer tensor.
        float_model: the model computes in float (flagged: int8 is what MCUs run well).
        resource_variables: distinct resource variables (streaming state).
        samples: samples run through both interpreters (``None`` without data).
        sqnr_db / agreement / max_abs_diff / accuracy / reference_accuracy: TFLM vs LiteRT on the data.
        probes: interpreters built by the arena search; search_seconds: its wall time.
        tflm_version: the tflite-micro package that ran the model.
        error: why TFLM cannot run the model when that is not an op (e.g. it needs more than the largest arena).
        warnings: things to tell the user (the float flag).
    """

    path: str
    flash_bytes: int
    arena_bytes: int | None = None
    arena_used_bytes: int | None = None
    arena_floor_bytes: int = 0
    ops: dict[str, int] = field(default_factory=dict)
    unsupported_ops: list[str] = field(default_factory=list)
    unsupported_reasons: dict[str, str] = field(default_factory=dict)
    resolver: list[str] = field(default_factory=list)
    mode: str | None = None
    integer_only: bool = False
    float_model: bool = False
    resource_variables: int = 0
    samples: int | None = None
    sqnr_db: float | None = None
    agreement: float | None = None
    max_abs_diff: float | None = None
    accuracy: float | None = None
    reference_accuracy: float | None = None
    probes: int = 0
    search_seconds: float = 0.0
    tflm_version: str | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def runs(self) -> bool:
        """TFLM allocated and ran the model."""
        return self.arena_bytes is not None

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``micro --format json``)."""
        data = asdict(self)
        data["ops"] = dict(sorted(self.ops.items()))
        data["search_seconds"] = round(self.search_seconds, 4)
        data["host_note"] = HOST_NOTE
        return data


def measure_micro(
    content: bytes,
    *,
    path: str = "model",
    data: str | os.PathLike | Dataset | None = None,
    signature: str | None = None,
    output: str | None = None,
    preprocess: str = "unit",
    num_samples: int | None = None,
    allow_random: bool = False,
    fidelity: bool = True,
    progress: Progress | None = None,
) -> MicroResult:
    """Run a ``.tflite`` in TensorFlow Lite Micro and measure what a microcontroller needs for it.

    Args:
        content: the file's bytes.
        path: the file's name in messages and in the result.
        data: samples to run (a path for :func:`~tflite_opt.representative_data.load_data`, or a Dataset):
            the arena search invokes on the first one, fidelity uses all; ``None`` runs on zeros, no fidelity.
        signature: the signature whose names label the inputs/outputs (it must be subgraph 0's).
        output: the output agreement/accuracy are computed on (default: the name that sorts first).
        preprocess, num_samples, allow_random: how ``data`` is loaded.
        fidelity: compare TFLM's outputs with LiteRT's on ``data`` (``False``: the arena search only).
        progress: where progress goes.

    Not thread-safe: TFLM's log lines are collected from the process's file descriptors while it runs.

    Returns:
        The result; a model TFLM cannot run has ``arena_bytes=None`` and its ``unsupported_ops``/``error`` set.

    Raises:
        EvaluationError: the file is not a loadable ``.tflite`` model, or TFLM fails on the data.
        DataError: the data does not fit the model.
        CompatibilityError: tflite-micro is missing or not the version this was written for.
    """
    progress = ensure(progress)
    model = load_micro_model(content, signature=signature, source=path)
    details = inspection.analyze(content, source=path)
    ops = {summary.op: summary.count for summary in details["ops"]}
    result = MicroResult(
        path=path,
        flash_bytes=len(content),
        ops=ops,
        mode=details["mode"],
        integer_only=details["integer_only"],
        resource_variables=model.resource_variables,
        tflm_version=tflm.version(),
        float_model=details["mode"] in FLOAT_MODES,
    )
    if result.float_model:
        result.warnings.append(WEIGHT_ONLY_WARNING if result.mode in WEIGHT_ONLY_MODES else FLOAT_WARNING)
    dataset = _load_dataset(data, model, preprocess, num_samples, allow_random)
    if dataset is not None:
        result.warnings.extend(w for w in dataset.warnings if w not in result.warnings)
    _search_arena(result, model, first_inputs(model, dataset), progress)
    if fidelity and result.runs and dataset is not None:
        _measure_fidelity(result, model, dataset, output, progress)
    return result


def unsupported_reason(result: MicroResult) -> str:
    """Why TFLM cannot run the file: ``ops TensorFlow Lite Micro cannot run: OP (reason); hint``, or the error."""
    if not result.unsupported_ops:
        return result.error or f"TFLM cannot run {result.path}"
    listed = "; ".join(f"{op} ({result.unsupported_reasons[op]})" for op in result.unsupported_ops)
    hint = MODE_HINTS.get(result.mode or "", "replace them with ops TFLM implements, or register a custom kernel")
    return f"ops TensorFlow Lite Micro cannot run: {listed}; {hint}"


def unsupported_message(result: MicroResult) -> str:
    """:func:`unsupported_reason` as a sentence about the file."""
    reason = unsupported_reason(result)
    return f"{result.path} has {reason}" if result.unsupported_ops else reason


def _search_arena(result: MicroResult, model: MicroModel, inputs: dict, progress: Progress) -> None:
    """The generous probe (ops TFLM lacks or refuses), then the smallest arena, into ``result``."""
    started = time.perf_counter()
    probes: dict[int, Probe] = {}
    with progress.task(f"TFLM: arena of {result.path}") as task:

        def run(size: int) -> Probe:
            task.update(description=f"TFLM: arena of {result.path}, trying {size:,} bytes")
            task.advance()
            result.probes += 1
            probes[size] = probe(model, size, inputs)
            return probes[size]

        generous = _generous_probe(run, FIRST_ARENA)
        _record_ops(result, generous)
        floor = MIN_ARENA + MIN_ARENA_PER_VARIABLE * model.resource_variables
        result.arena_floor_bytes = math.ceil(floor / ARENA_STEP) * ARENA_STEP
        if generous.ok:
            estimate = tflm.parse_arena_total(generous.log) or generous.arena_size // 2
            result.arena_bytes = find_arena(
                lambda size: run(size).ok, estimate=estimate, floor=floor, passing=generous.arena_size
            )
    result.search_seconds = time.perf_counter() - started
    if result.runs:
        final = probes.get(result.arena_bytes) or probe(model, result.arena_bytes, inputs)
        result.arena_used_bytes = tflm.parse_arena_total(final.log)


def _load_dataset(
    data, model: MicroModel, preprocess: str, num_samples: int | None, allow_random: bool
) -> Dataset | None:
    from tflite_opt.representative_data.dataset import validate

    if data is None:
        return None
    specs = model.signature.data_specs
    if isinstance(data, Dataset):
        dataset = Dataset(
            inputs=dict(data.inputs),
            labels=data.labels,
            source=data.source,
            class_names=data.class_names,
            warnings=list(data.warnings),
        ).take(num_samples)
        dataset.inputs = dict(dataset.inputs)
        if len(specs) == 1 and len(dataset.inputs) == 1 and specs[0].name not in dataset.inputs:
            dataset.inputs = {specs[0].name: next(iter(dataset.inputs.values()))}
        validate(dataset, specs)
    else:
        dataset = load_data(data, specs, preprocess=preprocess, num_samples=num_samples, allow_random=allow_random)
    if len(dataset) == 0:
        raise DataError(f"{dataset.source or data} holds no samples")
    return dataset


def _generous_probe(run: Callable[[int], Probe], first: int) -> Probe:
    """Probe at ``first`` bytes, then ever larger arenas while TFLM fails for any reason but a missing op."""
    size = first
    while True:
        attempt = run(size)
        if attempt.ok or tflm.parse_missing_ops(attempt.log) or size >= MAX_ARENA:
            return attempt
        size = min(MAX_ARENA, size * ARENA_GROWTH)


def _record_ops(result: MicroResult, generous: Probe) -> None:
    """Unsupported ops and the resolver, from the op table and from what TFLM said at the generous arena."""
    reasons: dict[str, str] = {}
    if not generous.ok:
        for op in sorted(set(micro_ops.missing_ops(result.ops)) | set(tflm.parse_missing_ops(generous.log))):
            reasons[op] = "no TFLM kernel"
        failed = tflm.parse_failed_node(generous.log)
        if failed and failed[0] not in reasons:
            reasons[failed[0]] = f"TFLM refuses it: {failed[1]}"
        if not reasons:
            reason = tflm.first_reason(generous.log) or generous.error or "unknown error"
            if tflm.is_out_of_arena(generous.log):
                reason = f"does not fit in a {MAX_ARENA >> 20} MiB arena ({reason})"
            result.error = f"TFLM cannot run {result.path}: {reason}"
    result.unsupported_reasons = reasons
    result.unsupported_ops = sorted(reasons)
    supported = [op for op in result.ops if "no TFLM kernel" not in reasons.get(op, "")]
    result.resolver = micro_ops.resolver_lines(supported)


def find_arena(fits: Callable[[int], bool], *, estimate: int, floor: int, passing: int, step: int = ARENA_STEP) -> int:
    """The smallest multiple of ``step`` at or above ``floor`` for which ``fits`` holds, ``fits`` being monotone.

    Starts at ``estimate`` rounded up to a ``step``, gallops (1, 2, 4 ... steps) down while it fits or up while
    it does not, then bisects the bracket; ``passing`` (bytes) is known to fit. The answer ``a`` has
    ``fits(a)`` and, unless ``a`` is the floor, ``not fits(a - step)``, both evaluated.
    """
    low = math.ceil(floor / step) - 1  # the largest multiple known (or assumed, below the floor) not to fit
    high = max(low + 1, math.ceil(passing / step))  # the smallest known to fit
    guess = min(max(math.ceil(estimate / step), low + 1), high)
    going_down = guess == high or fits(guess * step)
    if going_down:
        high = guess
    else:
        low = guess
    delta = 1
    while high - low > 1:
        candidate = high - delta if going_down else low + delta
        if not low < candidate < high:
            break
        if fits(candidate * step):
            high = candidate
            if not going_down:
                break
        else:
            low = candidate
            if going_down:
                break
        delta *= 2
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle * step):
            high = middle
        else:
            low = middle
    return high * step


def _measure_fidelity(
    result: MicroResult, model: MicroModel, dataset: Dataset, output: str | None, progress: Progress
) -> None:
    """TFLM vs LiteRT on every sample, TFLM at the arena found (which proves it runs the data there too)."""
    with progress.task(f"TFLM vs LiteRT on {len(dataset)} samples", total=len(dataset)) as task:
        outputs = run_side_by_side(model, result.arena_bytes, dataset, on_batch=task.advance)
    _fidelity(result, outputs, dataset.labels, output)
    result.samples = len(dataset)


def _fidelity(result: MicroResult, outputs: SideBySide, labels: np.ndarray | None, output: str | None) -> None:
    from tflite_opt.measure import evaluation

    result.sqnr_db = evaluation.sqnr_db(outputs.litert, outputs.micro)
    result.max_abs_diff = max(
        (
            float(np.max(np.abs(outputs.micro[name].astype(np.float64) - outputs.litert[name])))
            for name in outputs.micro
            if name in outputs.litert and outputs.micro[name].size
        ),
        default=None,
    )
    if not outputs.micro:
        return
    name = evaluation.pick_accuracy_output(sorted(outputs.micro), output)
    micro_top1 = evaluation.top1(outputs.micro[name])
    result.agreement = float(np.mean(micro_top1 == evaluation.top1(outputs.litert[name])))
    if labels is not None:
        result.accuracy = float(np.mean(micro_top1 == labels))
        result.reference_accuracy = float(np.mean(evaluation.top1(outputs.litert[name]) == labels))

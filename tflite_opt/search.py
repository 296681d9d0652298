"""The accuracy-budget search behind ``tflite-opt auto``: the smallest, then fastest, variant within budget.

The ladder, tried in this order (each rung is a *trial*: converted, then measured against the fp32 reference
with :mod:`tflite_opt.evaluation`):

1. ``int8``: full integer quantization.
2. ``int8+float:A``, ``int8+float:A,B``, ...: int8 with the worst layers of the quantization debugger's ranking
   (:mod:`tflite_opt.debugging`, RMSE/scale) kept in float, one more per trial, up to ``max_float_layers``.
   Layers whose int8 error is nil (RMSE/scale below :data:`LOSSLESS_RMSE_SCALE`: reshapes, pooling) are not
   candidates — keeping them in float changes nothing.
3. ``int16x8``, 4. ``dynamic``, 5. ``float16``.

The fp32 reference is not a candidate (its drop is zero by definition; there would be nothing to search).

A trial is *within budget* when its accuracy drop is at most ``max_accuracy_drop`` (``accuracy_delta >= -X``)
and, if given, its top-1 agreement with the reference is at least ``min_agreement`` (the budget for unlabelled
data). Among trials within budget the smallest file wins; files within :data:`SIZE_TIE` of the smallest count
as a tie, broken by lower median latency.

When the search stops early (and why that cannot miss a smaller file):

* full int8 within budget: stop after that single trial. No later rung stores its weights in fewer bits:
  int8+float layers store some weights in float32, int16x8 widens activations to 16 bits and biases to int64,
  float16 stores 16-bit weights, dynamic keeps activations and small weight tensors in float. The one exception
  is bookkeeping, not weights: int8 stores a float scale and an int64 zero point per output channel for weights
  *and* biases (~24 bytes per channel) where dynamic uses per-tensor scales for fully connected layers, so on
  layers with a tiny fan-in (e.g. an MLP on 8×8 images) a dynamic file can be some percent smaller. That is a
  deliberate choice: int8 is the only integer-only rung (MCUs, NPUs) and the fastest on CPUs, so an int8 file
  within budget ends the search.
* ``int8+float`` with k layers within budget: no trial with more float layers (a superset in float is larger).
* ``float16`` is skipped when a passing file is already no larger than half the fp32 reference, since float16
  halves every float32 weight and nothing else: it cannot be smaller than that.
* ``int16x8`` and ``dynamic`` have no such bound against an int8 file with float layers, so they are tried.

Library code: no click, no printing; results are dataclasses, failures raise ``tflite_opt.errors``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from tflite_opt.errors import DataError, EvaluationError, TfliteOptError
from tflite_opt.modes import IoType, Mode
from tflite_opt.report import Report, Settings, VariantResult

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.debugging import DebugReport
    from tflite_opt.evaluation import EvaluationOptions, MeasuredVariant
    from tflite_opt.gates import Gate
    from tflite_opt.models import LoadedModel
    from tflite_opt.progress import Progress
    from tflite_opt.representative_data import Dataset
    from tflite_opt.selective import CalibratedModel

REFERENCE_NAME = "fp32"
DEFAULT_MAX_FLOAT_LAYERS = 3
SIZE_TIE = 0.01
LOSSLESS_RMSE_SCALE = 0.01
KEEP_FLOAT_PREFIX = "int8+float:"


@dataclass(frozen=True)
class Budget:
    """What "within budget" means.

    Attributes:
        max_accuracy_drop: largest allowed accuracy loss against the reference, a fraction (0.01 = 1 point).
        min_agreement: smallest allowed share of samples whose top-1 equals the reference's.
    """

    max_accuracy_drop: float | None = None
    min_agreement: float | None = None

    def __post_init__(self) -> None:
        if self.max_accuracy_drop is None and self.min_agreement is None:
            raise DataError("an accuracy budget needs --max-accuracy-drop or --min-agreement")
        for label, value in (("--max-accuracy-drop", self.max_accuracy_drop), ("--min-agreement", self.min_agreement)):
            if value is not None and (math.isnan(value) or not 0 <= value <= 1):
                raise DataError(f"{label} takes a fraction in [0, 1] (0.01 = one percentage point), got {value}")

    def gates(self, variant: str) -> list["Gate"]:
        """The budget as report gates on ``variant``."""
        from tflite_opt.gates import Gate

        found = []
        if self.max_accuracy_drop is not None:
            limit = -self.max_accuracy_drop if self.max_accuracy_drop else 0.0  # no "-0" in the report
            found.append(Gate("accuracy_delta", ">=", limit, variant, False,
                              f"--max-accuracy-drop {self.max_accuracy_drop:g}"))
        if self.min_agreement is not None:
            found.append(Gate("agreement", ">=", self.min_agreement, variant, False,
                              f"--min-agreement {self.min_agreement:g}"))
        return found

    def check(self, result: VariantResult) -> tuple[bool, str]:
        """Whether a measured variant is within budget, and a short verdict."""
        from tflite_opt.gates import metric_value

        if result.error is not None:
            return False, f"failed: {result.error}"
        reasons = []
        for gate in self.gates(result.name):
            value = metric_value(result, gate.metric)
            if gate.passes(value):
                continue
            if value is None:
                reasons.append(f"{gate.metric} unknown")
            elif gate.metric == "accuracy_delta":
                reasons.append(f"accuracy drop {-value * 100:.2f} pp > {self.max_accuracy_drop * 100:.2f} pp")
            else:
                reasons.append(f"agreement {value * 100:.2f}% < {self.min_agreement * 100:.2f}%")
        if reasons:
            return False, "; ".join(reasons)
        parts = []
        if result.accuracy_delta is not None:
            parts.append(f"accuracy {result.accuracy_delta * 100:+.2f} pp")
        if result.agreement is not None:
            parts.append(f"agreement {result.agreement * 100:.2f}%")
        return True, "within budget" + (f" ({', '.join(parts)})" if parts else "")


@dataclass
class Trial:
    """One rung of the ladder, converted and measured.

    Attributes:
        name: variant name in the report (``int8``, ``int8+float:dense2``, ``int16x8``, ...).
        mode: the post-training mode.
        keep_float: ``--keep-float`` names kept in float (int8 rungs only).
        result: the measurements (``result.error`` when it could not be converted or run).
        within_budget: whether it meets the budget.
        verdict: why (e.g. ``accuracy drop 3.10 pp > 1.00 pp``).
        content: the ``.tflite`` bytes (``None`` when conversion failed).
    """

    name: str
    mode: Mode
    keep_float: tuple[str, ...]
    result: VariantResult
    within_budget: bool
    verdict: str
    content: bytes | None = field(default=None, repr=False)

    @property
    def size_bytes(self) -> int:
        return self.result.size_bytes

    @property
    def latency_median(self) -> float:
        return self.result.latency_ms.median if self.result.latency_ms is not None else math.inf


@dataclass
class SearchOptions:
    """How to search.

    Attributes:
        budget: the accuracy budget.
        max_float_layers: most layers kept in float in the int8+float rungs (0 skips those rungs).
        io_type: inputs/outputs of the int8 rungs (``int8``: integer I/O, as ``convert`` does by default).
        num_samples: calibration samples (default: all, at most 500).
        evaluation: how trials are measured (threads, latency runs, XNNPACK).
    """

    budget: Budget
    max_float_layers: int = DEFAULT_MAX_FLOAT_LAYERS
    io_type: IoType = IoType.INT8
    num_samples: int | None = None
    evaluation: "EvaluationOptions | None" = None


@dataclass
class SearchResult:
    """Everything the search measured.

    Attributes:
        reference: the fp32 reference, measured.
        trials: every trial, in the order tried.
        chosen: the winner (``None``: nothing met the budget).
        ranking: the debugger's layer ranking (when int8 missed the budget).
        notes: why rungs were skipped and why the search stopped, in order.
        num_samples: evaluation samples.
    """

    reference: VariantResult
    trials: list[Trial]
    chosen: Trial | None
    ranking: "DebugReport | None" = None
    notes: list[str] = field(default_factory=list)
    num_samples: int | None = None

    @property
    def closest(self) -> Trial | None:
        """The measured trial with the smallest accuracy drop (or highest agreement): for messages."""
        measured = [t for t in self.trials if t.result.error is None]
        if not measured:
            return None

        def key(trial: Trial) -> float:
            r = trial.result
            if r.accuracy_delta is not None:
                return -r.accuracy_delta
            return -(r.agreement if r.agreement is not None else -1.0)

        return min(measured, key=key)


@dataclass
class SearchReport(Report):
    """A §4 report of a search: the reference plus one variant per trial.

    ``passed`` means a variant was chosen and every gate on it passed; trials that failed to convert are part of
    the story and do not fail the run. The chosen variant is the one the budget gates are checked on.
    """

    chosen: str | None = None

    @property
    def passed(self) -> bool:  # type: ignore[override]
        return self.chosen is not None and all(g.passed for g in self.gates)


def choose(trials: Sequence[Trial]) -> Trial | None:
    """The smallest trial within budget; within :data:`SIZE_TIE` of it, the one with the lowest latency."""
    passing = [t for t in trials if t.within_budget and t.result.error is None]
    if not passing:
        return None
    smallest = min(t.size_bytes for t in passing)
    close = [t for t in passing if t.size_bytes <= smallest * (1 + SIZE_TIE)]
    return min(close, key=lambda t: (t.latency_median, t.size_bytes))


def keep_float_candidates(ranking: "DebugReport", limit: int) -> list[tuple[str, str]]:
    """``(--keep-float name, short label)`` of the worst layers, unique, lossless ops excluded, at most ``limit``."""
    found: list[tuple[str, str]] = []
    for layer in ranking.layers:
        if not math.isfinite(layer.rmse_scale) or layer.rmse_scale < LOSSLESS_RMSE_SCALE:
            continue
        if any(name == layer.keep_float for name, _ in found):
            continue
        label = layer.layer or f"{layer.op_type.lower()}#{layer.rank}"
        found.append((layer.keep_float, label))
        if len(found) >= limit:
            break
    return found


class _Searcher:
    def __init__(self, model, data, representative, options: SearchOptions, progress) -> None:
        from tflite_opt.evaluation import EvaluationOptions
        from tflite_opt.progress import ensure

        self.model = model
        self.data = data
        self.representative = representative
        self.options = options
        self.evaluation = options.evaluation or EvaluationOptions()
        self.progress = ensure(progress)
        self.trials: list[Trial] = []
        self.notes: list[str] = []
        self.reference: VariantResult | None = None
        self.reference_content: bytes | None = None
        self.reference_measured: "MeasuredVariant | None" = None
        self.num_samples: int | None = None

    # -- measuring -------------------------------------------------------------------------------------------

    def measure(self, name: str, mode: Mode, content: bytes | None, error: str | None = None,
                keep_float: tuple[str, ...] = ()) -> Trial:
        from tflite_opt.evaluation import VariantSource, evaluate_variants

        reference = VariantSource(name=REFERENCE_NAME, content=self.reference_content, mode=Mode.FP32.value)
        trial_source = VariantSource(name=name, content=content, mode=mode.value, error=error)
        # The reference is run once, with the first trial; later trials reuse its results and outputs.
        measured = {REFERENCE_NAME: self.reference_measured} if self.reference_measured is not None else None
        run = evaluate_variants([reference, trial_source], self.data, reference=REFERENCE_NAME,
                                options=self.evaluation, progress=self.progress, measured=measured)
        ref_result, result = run.variants
        if ref_result.error is not None:
            raise EvaluationError(f"the fp32 reference cannot be evaluated: {ref_result.error}")
        if self.reference is None:
            self.reference = ref_result
            self.reference_measured = run.measured(REFERENCE_NAME)
            self.num_samples = run.num_samples
            self._check_measurable(ref_result)
        within, verdict = self.options.budget.check(result)
        trial = Trial(name, mode, keep_float, result, within, verdict, content)
        self.trials.append(trial)
        self.progress.info(f"{name}: {verdict}")
        return trial

    def _check_measurable(self, reference: VariantResult) -> None:
        budget = self.options.budget
        if budget.max_accuracy_drop is not None and reference.accuracy is None:
            raise DataError(
                "the evaluation data has no labels, so the accuracy drop cannot be measured; "
                "add labels ('y' in the .npz) or use --min-agreement"
            )

    def convert_mode(self, mode: Mode) -> tuple[bytes | None, str | None]:
        from tflite_opt import conversion

        options = conversion.ConversionOptions(
            mode=mode, allow_float_fallback=True, num_samples=self.options.num_samples
        )
        representative = self.representative if mode.needs_representative_data else None
        try:
            with self.progress.task(f"Converting ({mode.value})"):
                return conversion.convert(self.model, options, representative, self.progress), None
        except TfliteOptError as exc:
            return None, str(exc)

    # -- the ladder ------------------------------------------------------------------------------------------

    def run(self) -> SearchResult:
        from tflite_opt import conversion, selective

        with self.progress.task("Converting (fp32 reference)"):
            self.reference_content = conversion.convert(
                self.model, conversion.ConversionOptions(mode=Mode.FP32), None, self.progress
            )

        calibrated: CalibratedModel | None = None
        try:
            with self.progress.task("Calibrating (int8)"):
                calibrated = selective.calibrate(
                    self.model.saved_model_dir, self.model.signature_key, self.representative,
                    num_samples=self.options.num_samples, progress=self.progress,
                )
            content, error = self._int8(calibrated, None), None
        except TfliteOptError as exc:
            content, error = None, str(exc)
        int8 = self.measure(Mode.INT8.value, Mode.INT8, content, error)
        if int8.within_budget:
            self.notes.append("full int8 is within the budget: search stopped (no later rung stores weights in "
                              "fewer bits, and int8 is the only integer-only one)")
            return self._result(None)

        ranking = None
        if calibrated is not None and self.options.max_float_layers > 0:
            ranking = self._keep_float_rungs(calibrated)
        elif self.options.max_float_layers > 0:
            self.notes.append("int8 with float layers skipped: int8 calibration failed")

        for mode in (Mode.INT16X8, Mode.DYNAMIC, Mode.FLOAT16):
            best = choose(self.trials)
            if mode == Mode.FLOAT16 and best is not None:
                bound = self.reference.size_bytes / 2
                if best.size_bytes <= bound * (1 + SIZE_TIE):
                    self.notes.append(
                        f"float16 skipped: it stores every weight in 16 bits, so it cannot be smaller than half "
                        f"the fp32 file ({bound / 1024:.1f} KB), and {best.name} is {best.size_bytes / 1024:.1f} KB"
                    )
                    continue
            content, error = self.convert_mode(mode)
            self.measure(mode.value, mode, content, error)
        return self._result(ranking)

    def _int8(self, calibrated: "CalibratedModel", selection) -> bytes:
        from tflite_opt import selective

        with self.progress.task("Quantizing (int8)"):
            content = selective.quantize_calibrated(calibrated, io_type=self.options.io_type, keep_float=selection)
            selective.check_loads(content)
        return content

    def _keep_float_rungs(self, calibrated: "CalibratedModel") -> "DebugReport | None":
        from tflite_opt import debugging, selective

        try:
            with self.progress.task("Ranking layers (quantization debugger)"):
                ranking = debugging.analyze(
                    self.model, self.representative, num_samples=self.options.num_samples, calibrated=calibrated,
                    progress=self.progress,
                )
        except TfliteOptError as exc:
            self.notes.append(f"int8 with float layers skipped: the quantization debugger failed ({exc})")
            return None
        candidates = keep_float_candidates(ranking, self.options.max_float_layers)
        if not candidates:
            self.notes.append("int8 with float layers skipped: no layer has a measurable int8 error")
            return ranking
        for count in range(1, len(candidates) + 1):
            names = tuple(name for name, _ in candidates[:count])
            label = KEEP_FLOAT_PREFIX + ",".join(lbl for _, lbl in candidates[:count])
            try:
                selection = selective.resolve_keep_float(names, calibrated)
                content, error = self._int8(calibrated, selection), None
            except TfliteOptError as exc:
                content, error = None, str(exc)
            trial = self.measure(label, Mode.INT8, content, error, keep_float=names)
            if trial.within_budget:
                if count < self.options.max_float_layers:
                    self.notes.append(
                        f"{label} is within the budget: keeping more layers in float only adds bytes"
                    )
                break
        return ranking

    def _result(self, ranking) -> SearchResult:
        chosen = choose(self.trials)
        return SearchResult(
            reference=self.reference, trials=list(self.trials), chosen=chosen, ranking=ranking,
            notes=list(self.notes), num_samples=self.num_samples,
        )


def search(
    model: "LoadedModel",
    data: "Dataset",
    representative: "Dataset",
    options: SearchOptions,
    progress: "Progress | None" = None,
) -> SearchResult:
    """Walk the ladder (module docstring) and return every trial and the winner.

    Args:
        model: the source model.
        data: evaluation samples (labelled for ``max_accuracy_drop``), validated against the model's inputs.
        representative: calibration samples.
        options: budget and settings.
        progress: progress reporter; each trial's verdict is reported with ``info``.

    Raises:
        ConversionError: the fp32 reference cannot be converted.
        EvaluationError: the fp32 reference cannot be run on the data.
        DataError: the budget cannot be measured on this data (no labels for an accuracy budget).
    """
    return _Searcher(model, data, representative, options, progress).run()


def build_report(result: SearchResult, options: SearchOptions, gates: Sequence["Gate"] = ()) -> SearchReport:
    """The §4 report: the reference and every trial; budget gates (and ``gates``) checked on the chosen trial.

    Gates without a variant apply to the chosen trial; with no chosen trial, the budget gates are checked on
    the closest trial, so the report shows by how much the budget was missed.
    """
    from tflite_opt.evaluation import EvaluationOptions
    from tflite_opt.gates import check_gates

    evaluation = options.evaluation or EvaluationOptions()
    variants = [result.reference] + [t.result for t in result.trials]
    target = result.chosen or result.closest
    checked: list[Any] = []
    if target is not None:
        checked += options.budget.gates(target.result.name)
    for gate in gates:
        if gate.variant is None:
            if result.chosen is None:
                continue
            gate = dataclasses.replace(gate, variant=result.chosen.name, skip_reference=False)
        checked.append(gate)
    report = SearchReport(
        settings=Settings(threads=evaluation.threads, xnnpack=evaluation.xnnpack, warmup=evaluation.warmup,
                          runs=evaluation.runs, num_samples=result.num_samples),
        reference=REFERENCE_NAME,
        variants=variants,
        chosen=result.chosen.name if result.chosen else None,
    )
    report.gates = check_gates(checked, report.variants, report.reference)
    return report

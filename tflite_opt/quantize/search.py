"""The accuracy-budget search behind ``tflite-opt auto``: the smallest, then fastest, variant within budget.

The ladder, tried in this order (each rung is a *trial*: converted, then measured against the fp32 reference
with :mod:`tflite_opt.measure.evaluation`):

1. ``int8``; 2. ``int8+equalize`` and ``int8+equalize+bias_correction`` (Keras models: cross-layer
   equalization, then bias correction, :mod:`tflite_opt.quantize.transforms`) — integer-only, the rescue of a
   collapsed int8; 3. ``int8+float:A``, ``int8+float:A,B``, ...: the worst layers of the debugger's ranking
   kept in float, one more per trial, up to ``max_float_layers`` (layers whose int8 error is nil are not
   candidates); 4. ``int4`` (LiteRT Quantizer: int4 weights, float activations — the smallest file, not
   integer-only), 5. ``int16x8``, 6. ``dynamic``, 7. ``float16``.

A trial is *within budget* when its accuracy drop is at most ``max_accuracy_drop`` (``accuracy_delta >= -X``)
and, if given, its top-1 agreement with the reference is at least ``min_agreement`` (the budget for unlabelled
data). Among trials within budget the smallest file wins; files within :data:`SIZE_TIE` of the smallest count
as a tie, broken by lower median latency.

When the search stops early (and why that cannot miss a smaller file):

* full int8 (or int8+equalize[+bias_correction]) within budget: stop there. No later rung stores its weights in fewer bits:
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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tflite_opt.errors import DataError, EvaluationError, TfliteOptError
from tflite_opt.modes import Mode
from tflite_opt.reporting.report import Settings, VariantResult

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.measure.evaluation import MeasuredVariant
    from tflite_opt.models import LoadedModel
    from tflite_opt.progress import Progress
    from tflite_opt.quantize.debugging import DebugReport
    from tflite_opt.quantize.selective import CalibratedModel
    from tflite_opt.reporting.gates import Gate
    from tflite_opt.representative_data import Dataset

from tflite_opt.quantize.search_types import (  # noqa: F401 - re-exported: the search's public values
    DEFAULT_MAX_FLOAT_LAYERS,
    KEEP_FLOAT_PREFIX,
    LOSSLESS_RMSE_SCALE,
    REFERENCE_NAME,
    SIZE_TIE,
    SKIPPABLE,
    SKIPPABLE_MODES,
    Budget,
    SearchOptions,
    SearchReport,
    SearchResult,
    Trial,
    choose,
    keep_float_candidates,
)


class _Searcher:
    def __init__(self, model, data, representative, options: SearchOptions, progress) -> None:
        from tflite_opt.measure.evaluation import EvaluationOptions
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

    def measure(
        self, name: str, mode: Mode, content: bytes | None, error: str | None = None, keep_float: tuple[str, ...] = ()
    ) -> Trial:
        from tflite_opt.measure.evaluation import VariantSource, evaluate_variants

        reference = VariantSource(name=REFERENCE_NAME, content=self.reference_content, mode=Mode.FP32.value)
        trial_source = VariantSource(name=name, content=content, mode=mode.value, error=error)
        # The reference is run once, with the first trial; later trials reuse its results and outputs.
        measured = {REFERENCE_NAME: self.reference_measured} if self.reference_measured is not None else None
        run = evaluate_variants(
            [reference, trial_source],
            self.data,
            reference=REFERENCE_NAME,
            options=self.evaluation,
            progress=self.progress,
            measured=measured,
        )
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
        from tflite_opt.quantize import conversion

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
        from tflite_opt.quantize import conversion, selective

        with self.progress.task("Converting (fp32 reference)"):
            self.reference_content = conversion.convert(
                self.model, conversion.ConversionOptions(mode=Mode.FP32), None, self.progress
            )

        calibrated: CalibratedModel | None = None
        try:
            with self.progress.task("Calibrating (int8)"):
                calibrated = selective.calibrate(
                    self.model.saved_model_dir,
                    self.model.signature_key,
                    self.representative,
                    num_samples=self.options.num_samples,
                    progress=self.progress,
                )
            content, error = self._int8(calibrated, None), None
        except TfliteOptError as exc:
            content, error = None, str(exc)
        int8 = self.measure(Mode.INT8.value, Mode.INT8, content, error)
        if int8.within_budget:
            self.notes.append(
                "full int8 is within the budget: search stopped (no later rung stores weights in "
                "fewer bits, and int8 is the only integer-only one)"
            )
            return self._result(None)

        if "equalize" not in self.options.skip and self._rescue_rungs():
            return self._result(None)

        ranking = None
        if calibrated is not None and self.options.max_float_layers > 0:
            ranking = self._keep_float_rungs(calibrated)
        elif self.options.max_float_layers > 0:
            self.notes.append("int8 with float layers skipped: int8 calibration failed")

        for mode in (m for m in SKIPPABLE_MODES if m.value not in self.options.skip):
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

    def _rescue_rungs(self) -> bool:
        """int8 after cross-layer equalization, then also with bias correction: still integer-only and int8-sized,
        so one within budget ends the search. Returns whether one was."""
        from tflite_opt.quantize.transforms import convert_transformed

        if getattr(self.model, "keras_model", None) is None:
            self.notes.append("int8+equalize skipped: equalization needs a Keras model (.keras/.h5), not a SavedModel")
            return False
        from tflite_opt.quantize.options import ConversionOptions

        options = ConversionOptions(mode=Mode.INT8, io_type=self.options.io_type, num_samples=self.options.num_samples)
        for name, bias_correction in (("int8+equalize", False), ("int8+equalize+bias_correction", True)):
            try:
                with self.progress.task(f"Converting ({name})"):
                    content, done = convert_transformed(
                        self.model,
                        options,
                        self.representative,
                        equalize=True,
                        bias_correction=bias_correction,
                        progress=self.progress,
                    )
                error, transforms = None, list(done.transforms)
            except TfliteOptError as exc:
                content, error, transforms = None, str(exc), []
            if error is None and "equalize" not in transforms:
                self.notes.append(f"{name} skipped: no layer chain could be equalized")
                return False
            trial = self.measure(name, Mode.INT8, content, error)
            trial.result.transforms = transforms
            if trial.within_budget:
                self.notes.append(f"{name} is within the budget: search stopped (integer-only at int8 size)")
                return True
        return False

    def _int8(self, calibrated: "CalibratedModel", selection) -> bytes:
        from tflite_opt.quantize import selective

        with self.progress.task("Quantizing (int8)"):
            content = selective.quantize_calibrated(calibrated, io_type=self.options.io_type, keep_float=selection)
            selective.check_loads(content)
        return content

    def _keep_float_rungs(self, calibrated: "CalibratedModel") -> "DebugReport | None":
        from tflite_opt.quantize import debugging, selective

        try:
            with self.progress.task("Ranking layers (quantization debugger)"):
                ranking = debugging.analyze(
                    self.model,
                    self.representative,
                    num_samples=self.options.num_samples,
                    calibrated=calibrated,
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
                    self.notes.append(f"{label} is within the budget: keeping more layers in float only adds bytes")
                break
        return ranking

    def _result(self, ranking) -> SearchResult:
        chosen = choose(self.trials)
        return SearchResult(
            reference=self.reference,
            trials=list(self.trials),
            chosen=chosen,
            ranking=ranking,
            notes=list(self.notes),
            num_samples=self.num_samples,
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
    from tflite_opt.measure.evaluation import EvaluationOptions
    from tflite_opt.reporting.gates import check_gates

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
        settings=Settings(
            threads=evaluation.threads,
            xnnpack=evaluation.xnnpack,
            warmup=evaluation.warmup,
            runs=evaluation.runs,
            num_samples=result.num_samples,
        ),
        reference=REFERENCE_NAME,
        variants=variants,
        chosen=result.chosen.name if result.chosen else None,
    )
    report.gates = check_gates(checked, report.variants, report.reference)
    return report

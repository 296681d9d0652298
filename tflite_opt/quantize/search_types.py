"""The values of the accuracy-budget search (:mod:`tflite_opt.quantize.search`): the budget, a trial, the options,
the result, and how the winner is chosen among the trials within budget."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tflite_opt.errors import DataError
from tflite_opt.modes import IoType, Mode
from tflite_opt.reporting.report import Report, VariantResult

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.measure.evaluation import EvaluationOptions
    from tflite_opt.quantize.debugging import DebugReport
    from tflite_opt.reporting.gates import Gate

REFERENCE_NAME = "fp32"
DEFAULT_MAX_FLOAT_LAYERS = 3
SIZE_TIE = 0.01
LOSSLESS_RMSE_SCALE = 0.01
KEEP_FLOAT_PREFIX = "int8+float:"
SKIPPABLE_MODES = (Mode.INT4, Mode.INT16X8, Mode.DYNAMIC, Mode.FLOAT16)
SKIPPABLE = ("equalize", *(m.value for m in SKIPPABLE_MODES))


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
        from tflite_opt.reporting.gates import Gate

        found = []
        if self.max_accuracy_drop is not None:
            limit = -self.max_accuracy_drop if self.max_accuracy_drop else 0.0  # no "-0" in the report
            found.append(
                Gate("accuracy_delta", ">=", limit, variant, False, f"--max-accuracy-drop {self.max_accuracy_drop:g}")
            )
        if self.min_agreement is not None:
            found.append(
                Gate("agreement", ">=", self.min_agreement, variant, False, f"--min-agreement {self.min_agreement:g}")
            )
        return found

    def check(self, result: VariantResult) -> tuple[bool, str]:
        """Whether a measured variant is within budget, and a short verdict."""
        from tflite_opt.reporting.gates import metric_value

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
        skip: rungs left out: ``equalize`` (both rescue rungs) and modes (``int4``, ``int16x8``, ...).
    """

    budget: Budget
    max_float_layers: int = DEFAULT_MAX_FLOAT_LAYERS
    io_type: IoType = IoType.INT8
    num_samples: int | None = None
    evaluation: "EvaluationOptions | None" = None
    skip: frozenset[str] = frozenset()


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

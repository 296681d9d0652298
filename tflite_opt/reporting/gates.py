"""Quality gates (SPEC §4): ``--gate "[VARIANT:]METRIC OP NUMBER"`` and ``--max-accuracy-drop X``.

* METRIC is a numeric variant key of the report: ``accuracy``, ``top5``, ``accuracy_delta``, ``agreement``,
  ``sqnr_db``, ``size_bytes``, ``gzip_bytes``, ``size_ratio``, ``speedup``, ``sparsity``, ``latency_ms`` (the
  median) or ``latency_p90_ms``. OP is one of ``>=``, ``<=``, ``>``, ``<``, ``==``. NUMBER may end in ``%``
  (``accuracy>=95%`` is ``accuracy>=0.95``).
* With ``VARIANT:`` the gate checks that variant only (the reference too, if named). Without it, every variant
  is checked — except the reference for the metrics measured *against* it (``accuracy_delta``, ``agreement``,
  ``sqnr_db``, ``size_ratio``, ``speedup``), which would only compare it with itself.
* ``--max-accuracy-drop X`` is ``accuracy_delta >= -X`` on every non-reference variant.
* A value that is unknown (``null``: no labels, the variant failed, ...) fails its gate: an unverifiable gate is
  not a passed gate.
* ``>=``, ``<=`` and ``==`` allow a relative rounding slack of 1e-9, so that ``0.95 - 0.96 >= -0.01`` holds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tflite_opt.errors import TfliteOptError
from tflite_opt.reporting.report import GateResult, VariantResult

OPS = (">=", "<=", "==", ">", "<")
METRICS = (
    "accuracy",
    "top5",
    "accuracy_delta",
    "agreement",
    "sqnr_db",
    "size_bytes",
    "gzip_bytes",
    "size_ratio",
    "speedup",
    "sparsity",
    "latency_ms",
    "latency_p90_ms",
    "arena_bytes",
)
LABEL_METRICS = frozenset({"accuracy", "top5", "accuracy_delta"})
RELATIVE_METRICS = frozenset({"accuracy_delta", "agreement", "sqnr_db", "size_ratio", "speedup"})
SLACK = 1e-9
EXAMPLE = "'int8:accuracy_delta>=-0.01' or 'size_ratio<=0.3'"

_GATE_RE = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_.]*)\s*(?P<op>>=|<=|==|>|<)\s*"
    r"(?P<number>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<percent>%?)\s*$"
)


class GateSyntaxError(TfliteOptError):
    """A gate expression cannot be parsed or names an unknown metric/variant (a usage error, exit 2)."""


@dataclass(frozen=True)
class Gate:
    """A parsed gate.

    Attributes:
        metric: one of :data:`METRICS`.
        op: one of :data:`OPS`.
        limit: the number to compare with.
        variant: the variant it checks, ``None`` for all (see module docstring).
        skip_reference: do not check the reference (``--max-accuracy-drop``, relative metrics).
        text: the expression as the user wrote it.
    """

    metric: str
    op: str
    limit: float
    variant: str | None = None
    skip_reference: bool = False
    text: str = ""

    def passes(self, value: float | None) -> bool:
        """Whether ``value`` satisfies the gate (``None``/NaN never does)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        slack = SLACK * max(1.0, abs(self.limit))
        if self.op == ">=":
            return value >= self.limit - slack
        if self.op == "<=":
            return value <= self.limit + slack
        if self.op == ">":
            return value > self.limit
        if self.op == "<":
            return value < self.limit
        return abs(value - self.limit) <= slack


def parse_gate(text: str) -> Gate:
    """Parse ``"[VARIANT:]METRIC OP NUMBER"``.

    Raises:
        GateSyntaxError: with what is wrong and an example.
    """
    variant, _, expression = str(text).rpartition(":")
    variant = variant.strip() or None
    match = _GATE_RE.match(expression)
    if not match:
        raise GateSyntaxError(
            f"cannot read gate {text!r}: expected [VARIANT:]METRIC OP NUMBER with OP one of "
            f"{', '.join(OPS)}, e.g. {EXAMPLE}"
        )
    metric = match["metric"]
    if metric == "latency_ms.median" or metric == "latency":
        metric = "latency_ms"
    if metric == "latency_ms.p90":
        metric = "latency_p90_ms"
    if metric not in METRICS:
        import difflib

        close = difflib.get_close_matches(metric, METRICS, n=2, cutoff=0.5) or [
            m for m in METRICS if m.startswith(metric)
        ]
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise GateSyntaxError(f"unknown metric {metric!r} in gate {text!r}; {hint}the metrics are {', '.join(METRICS)}")
    limit = float(match["number"]) / (100.0 if match["percent"] else 1.0)
    return Gate(
        metric=metric,
        op=match["op"],
        limit=limit,
        variant=variant,
        skip_reference=variant is None and metric in RELATIVE_METRICS,
        text=str(text),
    )


def max_accuracy_drop_gate(max_drop: float) -> Gate:
    """``--max-accuracy-drop X``: every non-reference variant keeps ``accuracy_delta >= -X``.

    Raises:
        GateSyntaxError: X is not a fraction in [0, 1].
    """
    if not 0 <= max_drop <= 1 or math.isnan(max_drop):
        raise GateSyntaxError(
            f"--max-accuracy-drop takes a fraction in [0, 1] (0.01 = one percentage point), got {max_drop}"
        )
    return Gate("accuracy_delta", ">=", -float(max_drop), None, True, f"--max-accuracy-drop {max_drop}")


def parse_gates(texts: Iterable[str], max_accuracy_drop: float | None = None) -> list[Gate]:
    """Parse every ``--gate`` plus the ``--max-accuracy-drop`` gate (if given)."""
    gates = [parse_gate(t) for t in texts]
    if max_accuracy_drop is not None:
        gates.insert(0, max_accuracy_drop_gate(max_accuracy_drop))
    return gates


def check_variant_names(gates: Iterable[Gate], names: Sequence[str]) -> None:
    """Reject gates naming a variant that the run will not have (before anything is measured).

    Raises:
        GateSyntaxError: naming the gate and the available variants.
    """
    for gate in gates:
        if gate.variant is not None and gate.variant not in names:
            raise GateSyntaxError(
                f"gate {gate.text!r} names variant {gate.variant!r}, but the variants are "
                f"{', '.join(repr(n) for n in names)}"
            )


def metric_value(variant: VariantResult, metric: str) -> float | None:
    """The number a gate compares, or ``None`` when unknown."""
    if metric == "latency_ms":
        return None if variant.latency_ms is None else float(variant.latency_ms.median)
    if metric == "latency_p90_ms":
        return None if variant.latency_ms is None else float(variant.latency_ms.p90)
    value = getattr(variant, metric)
    return None if value is None else float(value)


def check_gates(gates: Iterable[Gate], variants: Sequence[VariantResult], reference: str | None) -> list[GateResult]:
    """Check every gate against the variants it applies to (see module docstring).

    Returns:
        one :class:`GateResult` per (gate, variant) checked; a gate naming a missing variant yields one failed
        result with ``value`` ``None``.
    """
    results: list[GateResult] = []
    for gate in gates:
        if gate.variant is not None:
            targets = [v for v in variants if v.name == gate.variant]
            if not targets:
                results.append(GateResult(gate.variant, gate.metric, gate.op, gate.limit, None, False))
                continue
        else:
            targets = [v for v in variants if not (gate.skip_reference and v.name == reference)]
        for variant in targets:
            value = metric_value(variant, gate.metric)
            results.append(
                GateResult(
                    variant.name,
                    gate.metric,
                    gate.op,
                    gate.limit,
                    value,
                    gate.passes(value),
                    why_unknown=_why_unknown(variant, gate.metric) if value is None else None,
                )
            )
    return results


def _why_unknown(variant: VariantResult, metric: str) -> str | None:
    if variant.error:
        return "the variant failed"
    if metric in LABEL_METRICS:
        return "the data has no labels ('y'), so accuracy is unknown; gate on agreement instead, e.g. 'agreement>=0.99'"
    if metric.startswith("latency"):
        return "latency was not measured (--runs 0)"
    if metric == "arena_bytes":
        return variant.micro_note or "the arena was not measured (use --target micro)"
    return None

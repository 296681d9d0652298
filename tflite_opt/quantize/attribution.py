"""Which layer to blame when int8 collapses: impact on the final output, channel-range concentration, and the
``--keep-float`` set that actually recovers the output.

The quantization debugger's per-layer RMSE/scale points at the *victim* of the commonest int8 failure: a layer
whose output range is set by one or a few outlier channels (the MobileNet depthwise pattern). Its own error is
small relative to its huge scale, while the next layer, whose input lost every other channel, shows the large
error. Two measurements tell them apart (like NNCF's accuracy-control ranking, but bounded):

* **concentration** of every activation tensor: its largest per-channel range (max - min over the calibration
  samples and positions) divided by the median per-channel range. Around 1–10 is ordinary; 100–1000 means a few
  channels set the int8 scale of the whole tensor.
* **impact on the final output**: for the top-K candidates by local error and the top-K by concentration, the
  model is re-quantized from the one calibration with that layer kept in float (:mod:`tflite_opt.quantize.selective`,
  a fraction of a second each) and with its *output boundary* kept in float (the layer, the per-channel ops after it
  — pooling, reshape, padding — and the layers that consume them: an outlier tensor quantized again at its
  consumer's input loses the same channels), and the final output's SQNR and top-1 agreement with the float model
  are measured on the calibration samples.

The trial that recovers the output with the fewest float layers gives the printed ``--keep-float`` flags; the layer
it is rooted at is the **culprit**, the consumers in its boundary are **victims of** it. When the culprit's output is
concentrated and it starts a chain that cross-layer equalization can rescale, ``--equalize`` is the better fix: it
keeps the file integer-only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tflite_opt.errors import TfliteOptError
from tflite_opt.modes import IoType
from tflite_opt.quantize.activation_ranges import boundary_ops, channel_concentrations, read_graph
from tflite_opt.reporting.tables import Note, TextTable

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.quantize.selective import CalibratedModel, QuantizableOp
    from tflite_opt.representative_data import Dataset

DEFAULT_TOP_K = 3
CONCENTRATION_THRESHOLD = 20.0  # largest / median per-channel range above which a tensor is "concentrated"
MIN_GAIN_DB = 3.0  # SQNR gain a keep-float trial needs before anything is blamed on its layer
RECOVERED_AGREEMENT = 0.99
HEALTHY_SQNR_DB = 15.0  # int8 output at least this close to float, with RECOVERED_AGREEMENT: nothing to rescue
LOSSLESS_RMSE_SCALE = 0.01
IMBALANCE_HINT = 1e4  # spread of r1/r2 over a chain's channels above which weight outliers call for --equalize


@dataclass(frozen=True)
class Trial:
    """One re-quantization with some layers kept in float, measured on the final output.

    Attributes:
        keep_float: the ``--keep-float`` names.
        sqnr_db: the output's SQNR against the float model, dB.
        agreement: share of samples whose top-1 equals the float model's (``None``: not a classifier output).
        error: why the trial could not be made.
    """

    keep_float: tuple[str, ...]
    sqnr_db: float | None
    agreement: float | None
    error: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "keep_float": list(self.keep_float),
            "sqnr_db": _finite(self.sqnr_db),
            "agreement": self.agreement,
            "error": self.error,
        }


@dataclass
class ImpactRow:
    """One candidate layer.

    Attributes:
        rank: culprits first, then their victims, then the rest by gain.
        layer: the ``--keep-float`` name of the op (its layer, else its tensor).
        op_type: builtin op.
        tensor: the op's output tensor.
        role: ``"culprit"``, ``"victim of <layer>"`` or ``""``.
        concentration: largest / median per-channel range of the op's output (``None``: no channels).
        rmse_scale: the debugger's local RMSE/scale.
        alone: the trial with this op in float.
        boundary: the trial with its output boundary in float (``None``: its output is a model output).
    """

    rank: int
    layer: str
    op_type: str
    tensor: str
    role: str
    concentration: float | None
    rmse_scale: float | None
    alone: Trial | None
    boundary: Trial | None = None
    gain_db: float | None = None

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "layer": self.layer,
            "op": self.op_type,
            "tensor": self.tensor,
            "role": self.role,
            "concentration": _finite(self.concentration),
            "rmse_scale": _finite(self.rmse_scale),
            "alone": self.alone.to_json_dict() if self.alone else None,
            "boundary": self.boundary.to_json_dict() if self.boundary else None,
            "gain_db": _finite(self.gain_db),
        }


@dataclass
class Attribution:
    """The impact ranking and the keep-float set that recovers the output.

    Attributes:
        baseline: full int8, measured like the trials.
        rows: the candidates (see :attr:`ImpactRow.rank`).
        recommended: the trial that recovers the output with the fewest float layers (``None``: int8 is healthy or
            nothing recovers it).
        culprits: the layers the recommended trial is rooted at.
        equalize_hint: why ``--equalize`` is the better fix, when it is.
        activations: every activation tensor with channels: ``(tensor, producing layer, concentration)``.
        num_samples: samples measured.
        trials: re-quantizations made.
    """

    baseline: Trial
    rows: list[ImpactRow] = field(default_factory=list)
    recommended: Trial | None = None
    culprits: tuple[str, ...] = ()
    equalize_hint: str | None = None
    activations: list[tuple[str, str, float]] = field(default_factory=list)
    num_samples: int = 0
    trials: int = 0

    @property
    def healthy(self) -> bool:
        return _healthy(self.baseline)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline.to_json_dict(),
            "healthy": self.healthy,
            "rows": [row.to_json_dict() for row in self.rows],
            "recommended": self.recommended.to_json_dict() if self.recommended else None,
            "culprits": list(self.culprits),
            "equalize_hint": self.equalize_hint,
            "num_samples": self.num_samples,
            "trials": self.trials,
            "concentration_threshold": CONCENTRATION_THRESHOLD,
            "activations": [
                {"tensor": tensor, "layer": layer, "concentration": _finite(value)}
                for tensor, layer, value in self.activations
            ],
        }


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _healthy(trial: Trial) -> bool:
    return (
        trial.sqnr_db is not None
        and trial.sqnr_db >= HEALTHY_SQNR_DB
        and (trial.agreement is None or trial.agreement >= RECOVERED_AGREEMENT)
    )


# ----------------------------------------------------------------------------------------------------- trials


def agreement(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> float | None:
    """Mean share of samples whose top-1 matches, over the outputs that are class scores."""
    from tflite_opt.measure.evaluation import top1

    shares = []
    for name, ref in reference.items():
        if name in candidate and ref.ndim >= 2 and int(np.prod(ref.shape[1:])) > 1:
            shares.append(float(np.mean(top1(ref) == top1(candidate[name]))))
    return float(np.mean(shares)) if shares else None


class TrialRunner:
    """Re-quantizations of one calibration with some layers in float, measured against the float model."""

    def __init__(self, calibrated: "CalibratedModel", samples: "Dataset") -> None:
        from tflite_opt.measure.evaluation import run_dataset

        self.calibrated = calibrated
        self.samples = samples
        self.reference = run_dataset(calibrated.content, samples, xnnpack=False, workers=1)
        self.done: dict[frozenset[str], Trial] = {}

    def measure(self, names: Sequence[str]) -> Trial:
        """The final output with ``names`` kept in float (nothing: full int8); cached by the set of names."""
        from tflite_opt.measure.evaluation import run_dataset, sqnr_db
        from tflite_opt.quantize import selective

        names = tuple(dict.fromkeys(names))
        key = frozenset(names)
        if key not in self.done:
            try:
                selection = selective.resolve_keep_float(names, self.calibrated) if names else None
                content = selective.quantize_calibrated(self.calibrated, io_type=IoType.FLOAT32, keep_float=selection)
                outputs = run_dataset(content, self.samples, xnnpack=False, workers=1)
                trial = Trial(names, sqnr_db(self.reference, outputs), agreement(self.reference, outputs))
            except TfliteOptError as exc:
                trial = Trial(names, None, None, str(exc))
            self.done[key] = trial
        return self.done[key]


def _score(trial: Trial | None) -> float:
    return trial.sqnr_db if trial is not None and trial.sqnr_db is not None else -math.inf


# -------------------------------------------------------------------------------------------- attribution


def _candidates(
    calibrated: "CalibratedModel", layers: Sequence[Any], concentrations: dict[str, float], top_k: int
) -> list["QuantizableOp"]:
    by_tensor = {op.tensor: op for op in calibrated.ops}
    chosen: list[QuantizableOp] = []
    local = [e for e in layers if math.isfinite(e.rmse_scale) and e.rmse_scale >= LOSSLESS_RMSE_SCALE]
    for error in sorted(local, key=lambda e: -e.rmse_scale)[:top_k]:
        if error.tensor in by_tensor and by_tensor[error.tensor] not in chosen:
            chosen.append(by_tensor[error.tensor])
    ranked = sorted((name for name in concentrations if name in by_tensor), key=lambda n: -concentrations[n])
    for name in ranked[:top_k]:
        if by_tensor[name] not in chosen:
            chosen.append(by_tensor[name])
    return chosen


def _names_of(calibrated: "CalibratedModel", indices: Sequence[int], layer_names: Sequence[str]) -> tuple[str, ...]:
    by_index = {op.index: op for op in calibrated.ops}
    names: list[str] = []
    for index in indices:
        op = by_index.get(index)
        if op is None:
            continue
        layer, _ = calibrated.layer_label(op, layer_names)
        name = layer if layer is not None else op.tensor
        if name not in names:
            names.append(name)
    return tuple(names)


def _pick(rows: Sequence[ImpactRow], baseline: Trial) -> tuple[Trial | None, list[ImpactRow]]:
    """The trial that recovers the output with the fewest float layers (else the best one, if it gains enough),
    and the row it is rooted at."""
    scored = [(trial, row) for row in rows for trial in (row.alone, row.boundary) if trial and trial.error is None]
    if not scored:
        return None, []
    recovered = [(trial, row) for trial, row in scored if _healthy(trial)]
    if recovered:
        trial, row = min(recovered, key=lambda pair: (len(pair[0].keep_float), -_score(pair[0])))
        return trial, [row]
    trial, row = max(scored, key=lambda pair: _score(pair[0]))
    if _score(trial) - _score(baseline) < MIN_GAIN_DB:
        return None, []
    return trial, [row]


def attribute(
    calibrated: "CalibratedModel",
    samples: "Dataset",
    layers: Sequence[Any],
    layer_names: Sequence[str] = (),
    *,
    keras_model: Any = None,
    top_k: int = DEFAULT_TOP_K,
) -> Attribution:
    """Rank candidate layers by their effect on the final output and find the keep-float set that recovers it.

    Args:
        calibrated: the one calibration (``selective.calibrate``); every trial re-quantizes it.
        samples: the samples to measure on (the calibration samples).
        layers: the debugger's per-layer errors (:class:`~tflite_opt.quantize.debugging.LayerError`).
        layer_names: the Keras model's layer names, when known.
        keras_model: the Keras model, to tell whether ``--equalize`` can rescale the culprit.
        top_k: candidates taken by local error and, separately, by concentration.
    """
    graph = read_graph(calibrated.content)
    concentrations = channel_concentrations(calibrated, samples)
    runner = TrialRunner(calibrated, samples)
    baseline = runner.measure(())
    local = {e.tensor: e.rmse_scale for e in layers}
    rows: list[ImpactRow] = []
    for op in _candidates(calibrated, layers, concentrations, top_k):
        (name,) = _names_of(calibrated, [op.index], layer_names) or (op.tensor,)
        boundary = _names_of(calibrated, boundary_ops(graph, op.index), layer_names)
        row = ImpactRow(
            0,
            name,
            op.op_type,
            op.tensor,
            "",
            concentrations.get(op.tensor),
            local.get(op.tensor),
            alone=runner.measure((name,)),
            boundary=runner.measure(boundary) if len(boundary) > 1 else None,
        )
        row.gain_db = max(_score(row.alone), _score(row.boundary)) - _score(baseline)
        rows.append(row)
    rows.sort(
        key=lambda r: (
            -(r.gain_db if r.gain_db is not None and math.isfinite(r.gain_db) else -1e9),
            -(r.concentration or 0.0),
        )
    )
    for rank, row in enumerate(rows, start=1):
        row.rank = rank
    activations = [
        (op.tensor, _names_of(calibrated, [op.index], layer_names)[0], concentrations[op.tensor])
        for op in calibrated.ops
        if op.tensor in concentrations
    ]
    result = Attribution(baseline, rows, activations=activations, num_samples=len(samples))
    if not result.healthy:
        result.recommended, roots = _pick(rows, baseline)
        _label(result, roots)
        result.equalize_hint = _equalize_hint(result, roots, keras_model)
    result.trials = len(runner.done)
    return result


def _label(result: Attribution, roots: Sequence[ImpactRow]) -> None:
    """Roots of the recommended trial are culprits, the other layers it keeps in float their victims; culprits
    rank first, then victims, then the rest by gain."""
    result.culprits = tuple(root.layer for root in roots)
    kept = set(result.recommended.keep_float) if result.recommended is not None else set()
    for root in roots:
        root.role = "culprit"
    for row in result.rows:
        if not row.role and row.layer in kept and roots:
            row.role = f"victim of {roots[0].layer}"
    order = {"culprit": 0}
    result.rows.sort(key=lambda r: order.get(r.role, 1 if r.role else 2))
    for rank, row in enumerate(result.rows, start=1):
        row.rank = rank


def _equalize_hint(result: Attribution, roots: Sequence[ImpactRow], keras_model: Any) -> str | None:
    """Why ``--equalize`` is the better fix for a culprit: its output is concentrated, or a chain through it has
    per-channel ranges far out of balance (weight outliers that a neighbour compensates)."""
    for root in roots:
        concentrated = root.concentration is not None and root.concentration >= CONCENTRATION_THRESHOLD
        lead = (
            f"{root.layer}'s output range is set by a few channels (largest {root.concentration:.0f}× the median)"
            if concentrated
            else f"{root.layer}'s weights have outlier channels"
        )
        if keras_model is None:
            return f"{lead}; cross-layer equalization (--equalize) needs the Keras model" if concentrated else None
        from tflite_opt.quantize.equalize_chains import find_chains, imbalance

        try:
            chains, skipped = find_chains(keras_model)
        except TfliteOptError:
            return None
        touching = [c for c in chains if root.layer in (c.producer.name, c.consumer.name)]
        chain = max(touching, key=imbalance, default=None)
        if chain is not None and (concentrated or imbalance(chain) >= IMBALANCE_HINT):
            return (
                f"{lead}: --equalize rescales {chain.producer.name} → {chain.consumer.name} and keeps every op "
                "int8 (integer-only, int8-sized): the better fix"
            )
        if concentrated:
            reason = next((why for why in skipped if why.startswith(root.layer)), "it starts no equalizable chain")
            return f"{lead}; --equalize cannot rescale it ({reason})"
    return None


# ----------------------------------------------------------------------------------------------- rendering


def _db(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value + 0.0:.1f} dB".replace("-0.0", "0.0")


def _trial_text(trial: Trial | None) -> str:
    if trial is None:
        return "—"
    if trial.error is not None:
        return "failed"
    return _db(trial.sqnr_db)


def impact_table(attribution: Attribution, flags: str) -> TextTable:
    """The impact ranking, then who is to blame and the flags that recover the output."""
    rows = []
    for row in attribution.rows:
        boundary = row.boundary.keep_float if row.boundary else ()
        rows.append(
            (
                str(row.rank),
                row.layer,
                row.role or "—",
                "—" if row.concentration is None else f"{row.concentration:.1f}×",
                "—" if row.rmse_scale is None or not math.isfinite(row.rmse_scale) else f"{row.rmse_scale:.3f}",
                _trial_text(row.alone),
                _trial_text(row.boundary),
                "—" if not boundary else "+".join(boundary[1:]),
                _db(row.gain_db),
            )
        )
    base = attribution.baseline
    agree = "" if base.agreement is None else f", top-1 agreement {base.agreement:.1%}"
    notes = [
        Note(
            f"full int8: output SQNR {_db(base.sqnr_db)}{agree} against float on {attribution.num_samples} samples; "
            f"{attribution.trials} re-quantizations with the layer, or its output boundary, kept in float.",
            "dim",
        )
    ]
    if attribution.healthy:
        notes.append(Note("The int8 output is close to float: no culprit."))
    elif attribution.recommended is not None:
        best = attribution.recommended
        agree = "" if best.agreement is None else f", agreement {best.agreement:.1%}"
        how = "Keep in float with" if _healthy(best) else "Keeping in float recovers part of the output"
        notes.append(
            Note(f"Culprit: {', '.join(attribution.culprits)}. {how} (output SQNR {_db(best.sqnr_db)}{agree}):")
        )
        notes.append(Note(f"  {flags}", "bold"))
    else:
        notes.append(Note("No single layer or boundary in float recovers the output; try int16x8 or dynamic.", "error"))
    if attribution.equalize_hint:
        notes.append(Note(attribution.equalize_hint, "ok"))
    return TextTable(
        headers=(
            "#",
            "layer",
            "role",
            "concentration",
            "RMSE/scale",
            "alone float",
            "boundary float",
            "boundary adds",
            "gain",
        ),
        rows=rows,
        right=frozenset({0, 3, 4, 5, 6, 8}),
        wrap=frozenset({7}),
        error_rows=frozenset(i for i, row in enumerate(attribution.rows) if row.role == "culprit"),
        notes=notes,
        title="Impact on the final output",
    )

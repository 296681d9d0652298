"""Magnitude pruning with fine-tuning (``tfmot.sparsity.keras``), unstructured or 2:4 structured."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from tflite_opt.compat import tf as compat_tf
from tflite_opt.errors import TrainingError
from tflite_opt.progress import ensure
from tflite_opt.training.fit import FitConfig, FitHistory, fine_tune, import_training_stack
from tflite_opt.training.layers import (
    KERNEL_ATTRIBUTES,
    LayerWeights,
    check_layer_names,
    clone_wrapping,
    input_axis_size,
    iter_layers,
    weight_stats,
)

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.progress import Progress
    from tflite_opt.representative_data import Dataset

STRUCTURE_2_4 = (2, 4)
# Pruning removes a large share of the weights at once: recovering needs a livelier optimizer than QAT.
DEFAULT_LEARNING_RATE = 1e-3
# tfmot's default schedule frequency; capped so short fine-tunes still prune several times.
MAX_PRUNING_FREQUENCY = 100
# The polynomial schedule reaches its target after this share of the steps; the rest recovers accuracy.
POLYNOMIAL_RAMP_SHARE = 0.7


class Schedule(str, Enum):
    CONSTANT = "constant"
    POLYNOMIAL = "polynomial"


SCHEDULE_NAMES = [s.value for s in Schedule]


@dataclass
class PruneResult:
    """A pruned, stripped tf_keras model and what pruning achieved.

    Attributes:
        model: the stripped tf_keras model (plain layers, zeros in the weights), ready for
            ``conversion.convert_keras_model(..., ConversionOptions(mode, sparsity=True))``.
        per_layer: zero counts of every kernel; ``optimized`` marks the layers that were pruned.
        history: the fine-tuning history.
        target_sparsity: the sparsity asked for (0.5 for 2:4).
        structure: ``(2, 4)`` for structured sparsity, else ``None``.
        schedule: ``constant`` or ``polynomial``.
    """

    model: Any
    per_layer: list[LayerWeights]
    history: FitHistory
    target_sparsity: float
    structure: tuple[int, int] | None = None
    schedule: str = Schedule.CONSTANT.value
    skipped: list[str] = field(default_factory=list)

    @property
    def sparsity(self) -> float:
        """Zero share over the pruned layers' weights."""
        pruned = [row for row in self.per_layer if row.optimized]
        total = sum(row.size for row in pruned)
        return sum(row.zeros for row in pruned) / total if total else 0.0


def parse_structure(text: str | None) -> tuple[int, int] | None:
    """``"2:4"`` -> ``(2, 4)`` (the one N:M pattern TFLite and tfmot support)."""
    if text is None:
        return None
    if text.strip() != "2:4":
        raise TrainingError(f"structure {text!r} is not supported; the only structured pattern is 2:4")
    return STRUCTURE_2_4


def pruning_schedule(tfmot, schedule: str, sparsity: float, total_steps: int):
    """A tfmot schedule that finishes pruning within ``total_steps``."""
    frequency = max(1, min(MAX_PRUNING_FREQUENCY, total_steps // 8))
    if Schedule(schedule) == Schedule.CONSTANT:
        return tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=0, frequency=frequency)
    end_step = max(frequency, (int(total_steps * POLYNOMIAL_RAMP_SHARE) // frequency) * frequency)
    return tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0, end_step=end_step, frequency=frequency
    )


def prune_model(
    keras_model: Any,
    train: "Dataset",
    *,
    sparsity: float = 0.5,
    schedule: str = Schedule.CONSTANT.value,
    structure: tuple[int, int] | None = None,
    skip_layers: Sequence[str] = (),
    config: FitConfig | None = None,
    val: "Dataset | None" = None,
    progress: "Progress | None" = None,
) -> PruneResult:
    """Prune a model's Conv/Dense kernels to ``sparsity`` while fine-tuning, then strip the wrappers.

    Args:
        keras_model: a Keras 3 (bridged) or tf_keras Sequential/Functional model; left unchanged.
        train: labelled training data keyed by input name.
        sparsity: target share of zeros per pruned kernel, in (0, 1). Ignored with ``structure``.
        schedule: ``constant`` (prune to the target at once, then recover) or ``polynomial`` (ramp up from 0).
        structure: ``(2, 4)``: two zeros in every four consecutive weights along the input axis (layers whose
            input axis is not a multiple of 4 are left dense).
        skip_layers: layer names to leave dense (e.g. the first conv or the classifier).
        config: fine-tuning settings (default: ``FitConfig(learning_rate=DEFAULT_LEARNING_RATE)``).
        val: validation data (``None``: ``config.val_split`` of ``train``).
        progress: progress reporter.

    Returns:
        ``PruneResult`` with the stripped model and per-layer sparsity.

    Raises:
        DataError: bad training data (before training).
        TrainingError: nothing to prune, a bad option, or a model tfmot cannot wrap.
    """
    config = config or FitConfig(learning_rate=DEFAULT_LEARNING_RATE)
    progress = ensure(progress)
    if structure is None and not 0 < sparsity < 1:
        raise TrainingError(f"--sparsity must be between 0 and 1 (exclusive), got {sparsity}")
    if structure is not None and tuple(structure) != STRUCTURE_2_4:
        raise TrainingError(f"structure {structure} is not supported; the only structured pattern is 2:4")
    _, _, tfmot = import_training_stack()
    wrap = _PruneWrap(
        tfmot, sparsity=sparsity, schedule=schedule, structure=structure, skip_layers=skip_layers, progress=progress
    )
    tuned = fine_tune(
        keras_model,
        train,
        wrap=wrap,
        config=config,
        val=val,
        progress=progress,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
        description="Pruning",
    )
    try:
        stripped = tfmot.sparsity.keras.strip_pruning(tuned.model)
    except Exception as exc:  # noqa: BLE001
        raise TrainingError(f"cannot strip the pruning wrappers: {exc}") from exc
    return PruneResult(
        model=stripped,
        per_layer=weight_stats(stripped, wrap.pruned),
        history=tuned.history,
        target_sparsity=0.5 if structure else sparsity,
        structure=structure,
        schedule=schedule,
        skipped=wrap.skipped,
    )


@dataclass
class _PruneWrap:
    """``fine_tune``'s ``wrap`` step: wrap every prunable kernel of the tf_keras copy in ``prune_low_magnitude``,
    recording which layers were pruned and which were left dense (``skip_layers``, or not 2:4-compatible)."""

    tfmot: Any
    sparsity: float
    schedule: str
    structure: tuple[int, int] | None
    skip_layers: Sequence[str]
    progress: "Progress"
    pruned: set[str] = field(default_factory=set)
    skipped: list[str] = field(default_factory=list)

    def __call__(self, base: Any, total_steps: int) -> Any:
        tfmot, structure = self.tfmot, self.structure
        check_layer_names(base, self.skip_layers)
        prunable = {name for name, layer in iter_layers(base) if _prunable(tfmot, layer)}
        params = {
            "pruning_schedule": pruning_schedule(tfmot, self.schedule, 0.5 if structure else self.sparsity, total_steps)
        }
        if structure is not None:
            params["sparsity_m_by_n"] = tuple(structure)
        by_layer = {id(layer): name for name, layer in iter_layers(base)}

        def wrap_layer(layer):
            name = by_layer.get(id(layer), layer.name)
            if name not in prunable or not self._keeps(layer, name):
                return None
            self.pruned.add(name)
            return tfmot.sparsity.keras.prune_low_magnitude(layer, **params)

        wrapped = clone_wrapping(base, wrap_layer)
        if not self.pruned:
            raise TrainingError(
                "no layer to prune: pruning works on Conv and Dense kernels"
                + (f" (skipped: {', '.join(self.skipped)})" if self.skipped else "")
            )
        return wrapped

    def _keeps(self, layer: Any, name: str) -> bool:
        """Whether a prunable layer is pruned; records (and for 2:4, reports) the ones left dense."""
        if name in self.skip_layers or layer.name in self.skip_layers:
            self.skipped.append(name)
            return False
        structure = self.structure
        if structure is not None and (input_axis_size(layer) or 0) % structure[1] != 0:
            self.skipped.append(name)
            self.progress.info(
                f"layer {name}: input axis of {input_axis_size(layer)} is not a multiple of {structure[1]}; left dense"
            )
            return False
        return True


def _prunable(tfmot, layer: Any) -> bool:
    """Layers whose kernels tfmot prunes (the registry also 'supports' weightless layers; those need no wrap)."""
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

    if hasattr(layer, "get_prunable_weights"):
        return True
    return (
        type(layer).__name__ in KERNEL_ATTRIBUTES
        and prune_registry.PruneRegistry.supports(layer)
        and bool(compat_tf.prunable_weight_names(prune_registry.PruneRegistry, layer))
    )


def m_by_n_violations(kernel, m: int = 2, n: int = 4) -> int:
    """Groups of ``n`` consecutive weights along the input axis holding fewer than ``m`` zeros."""
    import numpy as np

    values = np.asarray(kernel)
    if values.ndim < 2 or values.shape[-2] % n:
        return 0
    # [..., in, out] -> rows of input-axis values per output (and spatial position), then blocks of n.
    moved = np.moveaxis(values, -2, -1).reshape(-1, values.shape[-2])
    blocks = moved.reshape(moved.shape[0], -1, n)
    return int(np.count_nonzero((blocks == 0).sum(axis=-1) < m))

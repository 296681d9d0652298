"""Quantization-aware training (``tfmot.quantization.keras``), optionally pruning-preserving (PQAT)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tflite_opt.errors import TrainingError, first_line
from tflite_opt.progress import ensure
from tflite_opt.training.fit import FitConfig, FitHistory, fine_tune, import_training_stack
from tflite_opt.training.layers import LayerWeights, check_layer_names, clone_wrapping, weight_stats

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.progress import Progress
    from tflite_opt.representative_data import Dataset

# Below this share of zero kernel weights, --preserve-sparsity has nothing worth preserving.
MIN_PRESERVABLE_SPARSITY = 0.1
# QAT starts from a trained model and only adapts it to fake quantization: a gentle learning rate.
DEFAULT_LEARNING_RATE = 1e-4


@dataclass
class QatResult:
    """A quantization-aware tf_keras model and what training did.

    Attributes:
        model: the QAT model (fake-quant wrappers included: this is what the converter expects; convert it with
            ``conversion.convert_keras_model(..., ConversionOptions(Mode.INT8, ...))``).
        history: the fine-tuning history.
        quantized_layers: layers that were annotated for quantization.
        skipped_layers: layers left unannotated (``skip_layers``); the converter calibrates them.
        preserve_sparsity: whether the pruning-preserving scheme was used.
        input_sparsity: zero share of the kernels before training.
        per_layer: kernel statistics after training (zeros, to show sparsity was preserved).
    """

    model: Any
    history: FitHistory
    quantized_layers: list[str] = field(default_factory=list)
    skipped_layers: list[str] = field(default_factory=list)
    preserve_sparsity: bool = False
    input_sparsity: float = 0.0
    per_layer: list[LayerWeights] = field(default_factory=list)

    @property
    def sparsity(self) -> float:
        total = sum(row.size for row in self.per_layer)
        return sum(row.zeros for row in self.per_layer) / total if total else 0.0


def quantize_scheme(tfmot, preserve_sparsity: bool):
    if preserve_sparsity:
        return tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    return tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme()


def nested_models(model: Any) -> list[str]:
    """Names of nested Sequential/Functional models (tfmot's quantize_apply needs a flat model)."""
    import tf_keras

    return [layer.name for layer in model.layers if isinstance(layer, tf_keras.Model)]


_UNSUPPORTED = re.compile(r"Layer ([^:\s]+):<class '([^']+)'> is not supported")
# Each failed quantize_apply names one layer; retrying without it finds the next (bounded: errors stay fast).
MAX_UNSUPPORTED_REPORTED = 10


def apply_quantization(tfmot, base: Any, scheme, skip_layers: Sequence[str]) -> tuple[Any, list[str], list[str]]:
    """Annotate every layer but ``skip_layers`` and apply ``scheme``.

    Returns:
        (QAT model, annotated layer names, skipped layer names).

    Raises:
        TrainingError: naming every layer tfmot cannot quantize, with the ``--skip-layer`` flags that would
            leave them unannotated.
    """
    import tf_keras

    nested = nested_models(base)
    if nested:
        raise TrainingError(
            f"QAT needs a flat model, but layer(s) {', '.join(nested)} are nested models; rebuild the model "
            "without nesting"
        )
    unsupported: list[tuple[str, str]] = []
    while True:
        excluded = set(skip_layers) | {name for name, _ in unsupported}
        annotated_names: list[str] = []
        skipped: list[str] = []

        def annotate(layer):
            if isinstance(layer, tf_keras.layers.InputLayer):
                return None
            if layer.name in excluded:
                skipped.append(layer.name)
                return None
            annotated_names.append(layer.name)
            return tfmot.quantization.keras.quantize_annotate_layer(layer)

        annotated = clone_wrapping(base, annotate)
        try:
            with tfmot.quantization.keras.quantize_scope():
                model = tfmot.quantization.keras.quantize_apply(annotated, scheme)
        except Exception as exc:  # noqa: BLE001 - tfmot raises RuntimeError/ValueError
            text = str(exc).strip()
            match = _UNSUPPORTED.search(text)
            if match and match.group(1) not in excluded and len(unsupported) < MAX_UNSUPPORTED_REPORTED:
                unsupported.append((match.group(1), match.group(2).rsplit(".", 1)[-1]))
                continue
            if unsupported:
                break
            raise TrainingError(
                f"tfmot cannot quantize this model: {first_line(exc)}; pass --skip-layer NAME to leave a layer "
                "unannotated"
            ) from exc
        if not unsupported:
            return model, annotated_names, skipped
        break
    names = ", ".join(f"{name} ({cls})" for name, cls in unsupported)
    flags = " ".join(f"--skip-layer {name}" for name, _ in unsupported)
    raise TrainingError(
        f"tfmot cannot quantize layer(s) {names}; pass {flags} to leave them unannotated (they stay float in "
        "training and the converter calibrates them)"
    )


def qat_model(
    keras_model: Any,
    train: "Dataset",
    *,
    preserve_sparsity: bool = False,
    skip_layers: Sequence[str] = (),
    config: FitConfig | None = None,
    val: "Dataset | None" = None,
    progress: "Progress | None" = None,
) -> QatResult:
    """Annotate every layer for 8-bit quantization, apply, and fine-tune with fake quantization.

    Args:
        keras_model: a Keras 3 (bridged) or tf_keras Sequential/Functional model; left unchanged. For
            ``preserve_sparsity`` it should be a pruned model (e.g. the ``.keras`` output of ``prune``).
        train: labelled training data.
        preserve_sparsity: pruning-preserving QAT (``Default8BitPrunePreserveQuantizeScheme``): the zeros of
            a pruned model stay zero through QAT.
        skip_layers: layers to leave unannotated (e.g. ones tfmot cannot quantize); they stay float in the QAT
            model and are calibrated by the converter's representative data.
        config: fine-tuning settings.
        val: validation data.
        progress: progress reporter.

    Returns:
        ``QatResult`` with the QAT model, ready for int8 conversion.

    Raises:
        TrainingError: a layer tfmot cannot quantize (named, with the ``--skip-layer`` hint), or training failed.
        DataError: bad training data (before training).
    """
    config = config or FitConfig(learning_rate=DEFAULT_LEARNING_RATE)
    progress = ensure(progress)
    _, _, tfmot = import_training_stack()
    scheme = quantize_scheme(tfmot, preserve_sparsity)
    annotated_names: list[str] = []
    skipped: list[str] = []
    before: dict[str, float] = {}

    def wrap(base, total_steps):
        check_layer_names(base, skip_layers)
        stats = weight_stats(base)
        size = sum(row.size for row in stats)
        before["sparsity"] = sum(row.zeros for row in stats) / size if size else 0.0
        if preserve_sparsity and before["sparsity"] < MIN_PRESERVABLE_SPARSITY:
            progress.warn(
                f"the model's kernels are only {before['sparsity']:.0%} zeros: --preserve-sparsity keeps the zeros "
                "of a pruned model; prune it first (tflite-opt prune MODEL -o pruned.keras ...)"
            )
        model, annotated, skipped_now = apply_quantization(tfmot, base, scheme, skip_layers)
        annotated_names.extend(annotated)
        skipped.extend(skipped_now)
        return model

    tuned = fine_tune(
        keras_model,
        train,
        wrap=wrap,
        config=config,
        val=val,
        progress=progress,
        description="Pruning-preserving QAT" if preserve_sparsity else "Quantization-aware training",
    )
    return QatResult(
        model=tuned.model,
        history=tuned.history,
        quantized_layers=annotated_names,
        skipped_layers=skipped,
        preserve_sparsity=preserve_sparsity,
        input_sparsity=before.get("sparsity", 0.0),
        per_layer=weight_stats(tuned.model, set(annotated_names)),
    )

"""Weight clustering with fine-tuning (``tfmot.clustering.keras``)."""

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
    iter_layers,
    weight_stats,
)

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.progress import Progress
    from tflite_opt.representative_data import Dataset


# Fine-tuning moves shared centroids, each used by many weights: a gentle learning rate.
DEFAULT_LEARNING_RATE = 1e-4


class CentroidInit(str, Enum):
    """``--init`` values, mapped to ``tfmot.clustering.keras.CentroidInitialization``."""

    KMEANS_PLUS_PLUS = "kmeans++"
    LINEAR = "linear"
    DENSITY = "density"
    RANDOM = "random"

    def tfmot_value(self, tfmot):
        names = {
            CentroidInit.KMEANS_PLUS_PLUS: "KMEANS_PLUS_PLUS",
            CentroidInit.LINEAR: "LINEAR",
            CentroidInit.DENSITY: "DENSITY_BASED",
            CentroidInit.RANDOM: "RANDOM",
        }
        return getattr(tfmot.clustering.keras.CentroidInitialization, names[self])


INIT_NAMES = [init.value for init in CentroidInit]


@dataclass
class ClusterResult:
    """A clustered, stripped tf_keras model and the unique weight values per layer.

    Attributes:
        model: the stripped tf_keras model (plain layers; each clustered kernel holds at most ``clusters``
            distinct values), ready for ``conversion.convert_keras_model``.
        per_layer: unique-value counts of every kernel; ``optimized`` marks the clustered layers.
        history: the fine-tuning history.
        clusters: clusters per kernel.
        init: centroid initialization.
        skipped: layers left alone (``skip_layers``, or too few weights to cluster).
    """

    model: Any
    per_layer: list[LayerWeights]
    history: FitHistory
    clusters: int
    init: str
    skipped: list[str] = field(default_factory=list)

    @property
    def max_unique_values(self) -> int:
        clustered = [row.unique_values for row in self.per_layer if row.optimized]
        return max(clustered) if clustered else 0


def cluster_model(
    keras_model: Any,
    train: "Dataset",
    *,
    clusters: int = 16,
    init: str = CentroidInit.KMEANS_PLUS_PLUS.value,
    preserve_sparsity: bool = False,
    skip_layers: Sequence[str] = (),
    config: FitConfig | None = None,
    val: "Dataset | None" = None,
    progress: "Progress | None" = None,
) -> ClusterResult:
    """Cluster the Conv/Dense kernels into ``clusters`` shared values, fine-tune, and strip the wrappers.

    Args:
        keras_model: a Keras 3 (bridged) or tf_keras Sequential/Functional model; left unchanged.
        train: labelled training data.
        clusters: distinct values per kernel (at least 2).
        init: ``kmeans++``, ``linear``, ``density`` or ``random`` centroid initialization.
        preserve_sparsity: keep the zeros of a pruned model (sparsity-preserving clustering).
        skip_layers: layer names to leave unclustered.
        config: fine-tuning settings.
        val: validation data.
        progress: progress reporter.

    Returns:
        ``ClusterResult`` with the stripped model and unique values per layer.

    Raises:
        DataError: bad training data (before training).
        TrainingError: a bad option, nothing to cluster, or a model tfmot cannot wrap.
    """
    config = config or FitConfig(learning_rate=DEFAULT_LEARNING_RATE)
    progress = ensure(progress)
    if clusters < 2:
        raise TrainingError(f"--clusters must be at least 2, got {clusters}")
    try:
        centroid_init = CentroidInit(init)
    except ValueError as exc:
        raise TrainingError(f"unknown --init {init!r}; choose one of {', '.join(INIT_NAMES)}") from exc
    _, _, tfmot = import_training_stack()
    wrap = _ClusterWrap(
        tfmot,
        clusters=clusters,
        init=centroid_init,
        preserve_sparsity=preserve_sparsity,
        skip_layers=skip_layers,
        progress=progress,
    )
    tuned = fine_tune(
        keras_model, train, wrap=wrap, config=config, val=val, progress=progress, description="Clustering"
    )
    try:
        stripped = tfmot.clustering.keras.strip_clustering(tuned.model)
    except Exception as exc:  # noqa: BLE001
        raise TrainingError(f"cannot strip the clustering wrappers: {exc}") from exc
    return ClusterResult(
        model=stripped,
        per_layer=weight_stats(stripped, wrap.clustered),
        history=tuned.history,
        clusters=clusters,
        init=centroid_init.value,
        skipped=wrap.skipped,
    )


@dataclass
class _ClusterWrap:
    """``fine_tune``'s ``wrap`` step: cluster every clusterable kernel of the tf_keras copy, recording which
    layers were clustered and which were left alone (``skip_layers``, or too few weights)."""

    tfmot: Any
    clusters: int
    init: CentroidInit
    preserve_sparsity: bool
    skip_layers: Sequence[str]
    progress: "Progress"
    clustered: set[str] = field(default_factory=set)
    skipped: list[str] = field(default_factory=list)

    def __call__(self, base: Any, total_steps: int) -> Any:
        check_layer_names(base, self.skip_layers)
        by_layer = {id(layer): name for name, layer in iter_layers(base)}
        wrapped = clone_wrapping(base, lambda layer: self._wrap_layer(layer, by_layer.get(id(layer), layer.name)))
        if not self.clustered:
            raise TrainingError(
                "no layer to cluster: clustering works on Conv, Dense and Embedding kernels"
                + (f" (skipped: {', '.join(self.skipped)})" if self.skipped else "")
            )
        return wrapped

    def _wrap_layer(self, layer: Any, name: str) -> Any:
        if not _clusterable(layer):
            return None
        if name in self.skip_layers or layer.name in self.skip_layers:
            self.skipped.append(name)
            return None
        size = sum(int(getattr(layer, a).shape.num_elements()) for a in KERNEL_ATTRIBUTES[type(layer).__name__])
        if size <= self.clusters:
            self.skipped.append(name)
            self.progress.info(f"layer {name}: {size} weights are not more than {self.clusters} clusters; left alone")
            return None
        self.clustered.add(name)
        return self.tfmot.clustering.keras.cluster_weights(
            layer,
            number_of_clusters=self.clusters,
            cluster_centroids_init=self.init.tfmot_value(self.tfmot),
            preserve_sparsity=self.preserve_sparsity,
        )


def _clusterable(layer: Any) -> bool:
    from tensorflow_model_optimization.python.core.clustering.keras import clustering_registry

    name = type(layer).__name__
    registry = clustering_registry.ClusteringRegistry
    if name not in KERNEL_ATTRIBUTES or not registry.supports(layer):
        return False
    # tfmot "supports" DepthwiseConv2D with an empty weight list: it wraps the layer but clusters nothing
    # ("non-clusterable due to big unrecoverable accuracy loss"), so it must not count as clustered.
    weights_map = compat_tf.clustering_weights_map(registry)
    if type(layer) in weights_map and not weights_map[type(layer)]:
        return False
    return all(getattr(layer, attribute, None) is not None for attribute in KERNEL_ATTRIBUTES[name])

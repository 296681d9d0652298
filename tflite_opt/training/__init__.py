"""Training-time optimization with tfmot: pruning, quantization-aware training, clustering.

Library API (no click, no printing; results are dataclasses, errors are ``TrainingError``/``DataError``)::

    prune_model(keras_model, train, *, sparsity, schedule, structure, skip_layers, config, val, progress)
        -> PruneResult(model, per_layer, history, ...)
    qat_model(keras_model, train, *, preserve_sparsity, skip_layers, config, val, progress)
        -> QatResult(model, history, ...)
    cluster_model(keras_model, train, *, clusters, init, preserve_sparsity, skip_layers, config, val, progress)
        -> ClusterResult(model, per_layer, history, ...)

Each takes an already-loaded Keras 3 or tf_keras model (``LoadedModel.keras_model``), leaves it unchanged, and
returns a tf_keras model ready for ``conversion.convert_keras_model``. Keras 3 models are rebuilt in tf_keras by
``bridge.to_tf_keras`` (tfmot works with tf_keras only), after an output check.

Submodules are imported lazily by callers; importing this package does not import TensorFlow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.training.clustering import ClusterResult, cluster_model
    from tflite_opt.training.fit import FitConfig, FitHistory
    from tflite_opt.training.pruning import PruneResult, prune_model
    from tflite_opt.training.qat import QatResult, qat_model

_EXPORTS = {
    "prune_model": "pruning", "PruneResult": "pruning",
    "qat_model": "qat", "QatResult": "qat",
    "cluster_model": "clustering", "ClusterResult": "clustering",
    "FitConfig": "fit", "FitHistory": "fit",
    "to_tf_keras": "bridge", "BridgeReport": "bridge",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"tflite_opt.training.{_EXPORTS[name]}"), name)
    raise AttributeError(name)

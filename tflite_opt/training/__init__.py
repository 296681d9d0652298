"""Training-time optimization with tfmot: pruning, quantization-aware training, clustering.

Library API (no click, no printing; results are dataclasses, errors are ``TrainingError``/``DataError``)::

    prune_model(keras_model, train, *, sparsity, schedule, structure, skip_layers, config, val, progress)
        -> PruneResult(model, per_layer, history, ...)
    qat_model(keras_model, train, *, preserve_sparsity, skip_layers, config, val, progress)
        -> QatResult(model, history, ...)
    cluster_model(keras_model, train, *, clusters, init, preserve_sparsity, skip_layers, config, val, progress)
        -> ClusterResult(model, per_layer, history, ...)

Each takes an already-loaded Keras 3 or tf_keras model (``LoadedModel.keras_model``), leaves it unchanged, and
returns a tf_keras model ready for ``quantize.conversion.convert_keras_model``. Keras 3 models are rebuilt in tf_keras by
``bridge.to_tf_keras`` (tfmot works with tf_keras only), after an output check.

Callers import the submodules they need (``tflite_opt.training.pruning`` ...); none imports TensorFlow at import
time: that happens inside the functions, through ``models.tf_runtime``.
"""

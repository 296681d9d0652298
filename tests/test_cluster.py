"""``tflite-opt cluster``: at most N unique values per clustered kernel, in the .keras and in the .tflite."""

from __future__ import annotations

import numpy as np
import pytest

from tests.fixtures_training import keras_kernels, run_cli, run_json, tflite_accuracy, tflite_weight_tensors

CLUSTERED_LAYERS = ("conv1", "conv2", "dense1", "logits")
pytestmark = pytest.mark.slow


def test_every_clustered_kernel_has_at_most_16_values(cluster_run):
    assert cluster_run.ok, cluster_run.result.output
    kernels = keras_kernels(cluster_run.outputs["keras"])
    for name in CLUSTERED_LAYERS:
        assert np.unique(kernels[name]).size <= 16, name
    reported = {row["layer"]: row for row in cluster_run.payload["layers"]}
    for name in CLUSTERED_LAYERS:
        assert reported[name]["optimized"] is True
        assert reported[name]["unique_values"] == np.unique(kernels[name]).size
    assert cluster_run.payload["max_unique_values"] <= 16


def test_clustered_tflite_keeps_16_values_gzips_smaller_and_classifies(cluster_run, fp32_baseline, digits):
    assert cluster_run.ok, cluster_run.result.output
    path = cluster_run.outputs["tflite"]
    kernels = [w for w in tflite_weight_tensors(path, min_size=144).values() if w.dtype == np.float32]
    assert len(kernels) == 4
    for kernel in kernels:
        # TFLite kernels are [out, ..., in]. The converter folds bn1 into conv1, scaling each output channel,
        # so the 16 shared values hold per output channel.
        per_channel = [np.unique(channel).size for channel in kernel]
        assert max(per_channel) <= 16
    files = {f["format"]: f for f in cluster_run.payload["files"]}
    assert files["tflite"]["gzip_ratio"] <= 0.5
    _, _, test_x, test_y = digits
    assert tflite_accuracy(path, test_x, test_y) >= 0.9


def test_cluster_a_keras3_model(tmp_path, keras3_cnn_path, data_dir):
    out = tmp_path / "clustered8.keras"
    run = run_json(
        "cluster",
        keras3_cnn_path,
        "--train-data",
        data_dir / "train.npz",
        "--clusters",
        "8",
        "--init",
        "linear",
        "--epochs",
        "1",
        "-o",
        out,
        outputs={"keras": out},
    )
    assert run.ok, run.result.output
    assert run.payload["history"]["bridge"]["max_abs_diff"] <= 1e-5
    assert run.payload["files"][0]["written_by"] == "keras3"  # bridged back: the Keras the source came from
    from tflite_opt.models import detect_kind

    assert detect_kind(out).value == "keras3"
    kernels = keras_kernels(out)
    assert max(np.unique(kernels[name]).size for name in CLUSTERED_LAYERS) <= 8


def test_cluster_needs_two_clusters(tmp_path, tf_keras_cnn_h5, data_dir):
    result = run_cli(
        "cluster",
        tf_keras_cnn_h5,
        "--train-data",
        data_dir / "train.npz",
        "--clusters",
        "1",
        "-o",
        tmp_path / "c.tflite",
    )
    assert result.exit_code == 2 and "--clusters" in result.stderr

"""The CLI's real import order, in a fresh process: a Keras 3 model is loaded (Keras 3 first), then QAT and
pruning need tf_keras and tfmot. No TF_USE_LEGACY_KERAS from the test environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_compare_keras3_model_with_qat_and_pruning_in_a_fresh_process(keras3_cnn_path, data_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "tflite_opt",
        "-q",
        "compare",
        str(keras3_cnn_path),
        "--data",
        str(data_dir / "test.npz"),
        "--output-dir",
        str(out),
        "--modes",
        "fp32",
        "--train-data",
        str(data_dir / "train.npz"),
        "--qat",
        "--prune",
        "0.5",
        "--epochs",
        "1",
        "--runs",
        "2",
        "--warmup",
        "1",
        "--format",
        "json",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    by_name = {v["name"]: v for v in json.loads(result.stdout)["variants"]}
    assert set(by_name) == {"fp32", "qat_int8", "pruned_50"}
    assert all(v["error"] is None for v in by_name.values())
    assert by_name["qat_int8"]["accuracy"] >= by_name["fp32"]["accuracy"] - 0.05
    assert by_name["pruned_50"]["sparsity"] >= 0.4

"""``tflite-opt prune``: sparsity reached, gzip size, 2:4 structure, Keras 3 input, strategies, and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from tests.fixtures_training import (
    densified_weights,
    keras_kernels,
    run_cli,
    run_json,
    tflite_accuracy,
    tflite_float_ops,
)
from tflite_opt.measure.evaluation import gzip_size

PRUNED_LAYERS = ("conv1", "conv2", "dense1", "logits")
pytestmark = pytest.mark.slow


def test_prune_reaches_the_sparsity_in_every_pruned_kernel(pruned_run, digits):
    assert pruned_run.ok, pruned_run.result.output
    kernels = keras_kernels(pruned_run.outputs["keras"])
    for name in PRUNED_LAYERS:
        zero_share = float(np.mean(kernels[name] == 0))
        assert zero_share >= 0.79, (name, zero_share)
    # The reported numbers are the measured ones.
    reported = {row["layer"]: row for row in pruned_run.payload["layers"]}
    for name in PRUNED_LAYERS:
        assert reported[name]["optimized"] is True
        assert reported[name]["sparsity"] == pytest.approx(float(np.mean(kernels[name] == 0)))
    assert pruned_run.payload["sparsity"] >= 0.79
    # The .tflite stores the kernels sparse-encoded; expanded at run time they hold the same zeros.
    densified = densified_weights(pruned_run.outputs["tflite"])
    assert len(densified) == 4
    for kernel in densified:
        assert np.mean(kernel == 0) >= 0.79, kernel.shape


def test_pruned_tflite_gzips_to_half_the_fp32_model_and_still_classifies(pruned_run, fp32_baseline, digits):
    assert pruned_run.ok, pruned_run.result.output
    pruned = pruned_run.outputs["tflite"].read_bytes()
    baseline = fp32_baseline.read_bytes()
    ratio = gzip_size(pruned) / gzip_size(baseline)
    assert ratio <= 0.5, ratio
    files = {f["format"]: f for f in pruned_run.payload["files"]}
    assert files["tflite"]["gzip_bytes"] == gzip_size(pruned)
    assert files["tflite"]["gzip_ratio"] == pytest.approx(ratio, rel=0.02)
    _, _, test_x, test_y = digits
    assert tflite_accuracy(pruned_run.outputs["tflite"], test_x, test_y) >= 0.9
    assert tflite_float_ops(pruned_run.outputs["tflite"])  # fp32 mode: float ops, as asked


def test_structure_2_4_leaves_two_zeros_in_every_group_of_four(tmp_path, tf_keras_cnn_h5, data_dir):
    out = tmp_path / "pruned_24.keras"
    result = run_cli(
        "prune",
        tf_keras_cnn_h5,
        "--train-data",
        data_dir / "train.npz",
        "--structure",
        "2:4",
        "--epochs",
        "1",
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    kernels = keras_kernels(out)
    checked = 0
    for name in ("conv2", "dense1", "logits"):  # conv1 has one input channel: no group of four exists
        kernel = kernels[name]
        rows = np.moveaxis(kernel, -2, -1).reshape(-1, kernel.shape[-2])  # input axis last
        groups = rows.reshape(rows.shape[0], -1, 4)
        zeros_per_group = (groups == 0).sum(axis=-1)
        assert zeros_per_group.min() >= 2, name
        checked += groups.shape[0] * groups.shape[1]
    assert checked > 9000
    assert np.count_nonzero(kernels["conv1"] == 0) == 0  # left dense, and the run said so
    assert "2:4 structured" in result.stdout


def test_prune_keras3_model_to_int8_with_polynomial_schedule(tmp_path, keras3_cnn_path, data_dir, digits):
    out = tmp_path / "pruned_int8.tflite"
    run = run_json(
        "prune",
        keras3_cnn_path,
        "--train-data",
        data_dir / "train.npz",
        "--sparsity",
        "0.6",
        "--schedule",
        "polynomial",
        "--epochs",
        "2",
        "--mode",
        "int8",
        "--no-baseline",
        "-o",
        out,
        outputs={"tflite": out},
    )
    assert run.ok, run.result.output
    bridge = run.payload["history"]["bridge"]
    assert bridge["max_abs_diff"] <= 1e-5 and bridge["samples"] == 32
    assert run.payload["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert tflite_float_ops(out) == []  # int8 with the training data as representative data: integer-only
    _, _, test_x, test_y = digits
    assert tflite_accuracy(out, test_x, test_y) >= 0.85


def test_mirrored_strategy_runs_the_fine_tuning(tmp_path, tf_keras_cnn_h5, data_dir):
    out = tmp_path / "mirrored.h5"
    run = run_json(
        "prune",
        tf_keras_cnn_h5,
        "--train-data",
        data_dir / "train.npz",
        "--distribute",
        "mirrored",
        "--epochs",
        "1",
        "--val-data",
        data_dir / "test.npz",
        "-o",
        out,
        outputs={"h5": out},
    )
    assert run.ok, run.result.output
    history = run.payload["history"]
    assert history["strategy"] == "MirroredStrategy" and history["replicas"] == 1
    assert history["val_samples"] == 397 and history["train_samples"] == 1400  # --val-data: no split
    assert history["final_val_accuracy"] > 0.8
    assert np.mean(keras_kernels(out)["dense1"] == 0) >= 0.49


@pytest.mark.parametrize(
    "data_name, message",
    [
        ("label_out_of_range", "label 10 of sample 17"),
        ("count_mismatch", "90 labels for 100 samples"),
        ("unlabelled", "has no labels"),
    ],
)
def test_bad_training_data_fails_before_training(tmp_path, tf_keras_cnn_h5, bad_training_data, data_name, message):
    out = tmp_path / "never.tflite"
    result = run_cli("prune", tf_keras_cnn_h5, "--train-data", bad_training_data[data_name], "-o", out)
    assert result.exit_code == 1
    assert message in result.stderr
    assert "epoch" not in result.output and not out.exists()


def test_unbridgeable_keras3_layer_is_named(tmp_path, keras3_custom_layer_path, data_dir):
    # Custom objects are refused by the safety scan unless trusted (tests/test_safety_scan.py); trusted, the
    # bridge names the layer it cannot rebuild.
    result = run_cli(
        "prune",
        keras3_custom_layer_path,
        "--train-data",
        data_dir / "train.npz",
        "-o",
        tmp_path / "x.tflite",
        "--trust-model",
    )
    assert result.exit_code == 1
    assert "layer 'my_scale'" in result.stderr and "TimesTwo" in result.stderr
    assert "has no tf_keras twin" in result.stderr


def test_subclassed_keras3_model_is_rejected_with_its_name(tmp_path, keras3_subclassed_path, data_dir):
    result = run_cli(
        "prune",
        keras3_subclassed_path,
        "--train-data",
        data_dir / "train.npz",
        "-o",
        tmp_path / "x.tflite",
        "--trust-model",
    )
    assert result.exit_code == 1
    assert "digits_net" in result.stderr and "subclassed" in result.stderr


def test_output_rules(tmp_path, tf_keras_cnn_h5, data_dir):
    train = data_dir / "train.npz"
    bad_suffix = run_cli("prune", tf_keras_cnn_h5, "--train-data", train, "-o", tmp_path / "out.onnx")
    assert bad_suffix.exit_code == 2 and ".tflite, .keras, .h5" in bad_suffix.stderr
    over_input = run_cli("prune", tf_keras_cnn_h5, "--train-data", train, "-o", tf_keras_cnn_h5)
    assert over_input.exit_code == 1 and "would overwrite the input" in over_input.stderr
    unknown_layer = run_cli(
        "prune", tf_keras_cnn_h5, "--train-data", train, "--skip-layer", "nope", "-o", tmp_path / "x.keras"
    )
    assert unknown_layer.exit_code == 1 and "--skip-layer nope: no such layer" in unknown_layer.stderr
    io_type = run_cli(
        "prune", tf_keras_cnn_h5, "--train-data", train, "--io-type", "uint8", "-o", tmp_path / "x.tflite"
    )
    assert io_type.exit_code == 2 and "--io-type applies to --mode int8 only" in io_type.stderr


def test_help_is_the_docstring():
    result = run_cli("prune", "--help")
    assert result.exit_code == 0
    assert "Magnitude pruning with fine-tuning" in result.stdout
    assert "tflite-opt prune model.keras --train-data train.npz --sparsity 0.8" in result.stdout

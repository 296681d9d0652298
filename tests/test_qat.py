"""``tflite-opt qat``: integer-only int8 output within 0.02 accuracy of the float model; PQAT; unquantizable layers."""

from __future__ import annotations

import numpy as np
import pytest

from tests.fixtures_training import (
    interpreter,
    run_cli,
    run_json,
    tflite_accuracy,
    tflite_float_ops,
    tflite_weight_tensors,
)

pytestmark = pytest.mark.slow


def io_dtypes(path):
    runner = interpreter(path).get_signature_runner()
    ins = [d["dtype"] for d in runner.get_input_details().values()]
    outs = [d["dtype"] for d in runner.get_output_details().values()]
    return ins, outs


def test_qat_int8_is_integer_only_and_as_accurate_as_the_float_model(qat_run, fp32_baseline, digits):
    assert qat_run.ok, qat_run.result.output
    path = qat_run.outputs["tflite"]
    assert io_dtypes(path) == ([np.int8], [np.int8])
    assert tflite_float_ops(path) == []
    assert qat_run.payload["tflite"]["integer_only"] is True
    _, _, test_x, test_y = digits
    float_accuracy = tflite_accuracy(fp32_baseline, test_x, test_y)
    qat_accuracy = tflite_accuracy(path, test_x, test_y)
    assert float_accuracy >= 0.9
    assert abs(qat_accuracy - float_accuracy) <= 0.02, (qat_accuracy, float_accuracy)
    assert set(qat_run.payload["quantized_layers"]) >= {"conv1", "bn1", "conv2", "dense1", "logits"}
    assert qat_run.payload["history"]["epochs"][0]["val_accuracy"] >= 0.9


def test_qat_on_a_keras3_model_with_float_io(tmp_path, keras3_cnn_path, data_dir, digits):
    out = tmp_path / "qat_float_io.tflite"
    run = run_json(
        "qat",
        keras3_cnn_path,
        "--train-data",
        data_dir / "train.npz",
        "--epochs",
        "1",
        "--io-type",
        "float32",
        "-o",
        out,
        outputs={"tflite": out},
    )
    assert run.ok, run.result.output
    assert run.payload["history"]["bridge"]["max_abs_diff"] <= 1e-5
    assert io_dtypes(out) == ([np.float32], [np.float32])
    assert tflite_float_ops(out) == []  # only the I/O QUANTIZE/DEQUANTIZE touch float
    _, _, test_x, test_y = digits
    assert tflite_accuracy(out, test_x, test_y) >= 0.93


def test_layer_tfmot_cannot_quantize_is_named_and_can_be_skipped(tmp_path, tf_keras_layernorm_h5, data_dir):
    out = tmp_path / "ln.tflite"
    refused = run_cli("qat", tf_keras_layernorm_h5, "--train-data", data_dir / "train.npz", "-o", out)
    assert refused.exit_code == 1
    assert "tfmot cannot quantize layer(s) ln (LayerNormalization)" in refused.stderr
    assert "--skip-layer ln" in refused.stderr
    assert "epoch" not in refused.output and not out.exists()

    run = run_json(
        "qat",
        tf_keras_layernorm_h5,
        "--train-data",
        data_dir / "train.npz",
        "--epochs",
        "1",
        "--skip-layer",
        "ln",
        "--allow-float-fallback",
        "-o",
        out,
        outputs={"tflite": out},
    )
    assert run.ok, run.result.output
    assert run.payload["skipped_layers"] == ["ln"]
    assert "ln" not in run.payload["quantized_layers"] and "dense" in run.payload["quantized_layers"]
    assert set(interpreter(out).get_signature_runner().get_input_details()) == {"image"}


def test_pruning_preserving_qat_keeps_the_zeros(tmp_path, pruned_run, data_dir, digits):
    assert pruned_run.ok, pruned_run.result.output
    out = tmp_path / "pqat.tflite"
    run = run_json(
        "qat",
        pruned_run.outputs["keras"],
        "--train-data",
        data_dir / "train.npz",
        "--epochs",
        "1",
        "--preserve-sparsity",
        "-o",
        out,
        outputs={"tflite": out},
    )
    assert run.ok, run.result.output
    assert run.payload["input_sparsity"] >= 0.79
    assert run.payload["sparsity"] >= 0.79  # the QAT model's kernels after fine-tuning
    dense_kernels = [w for w in tflite_weight_tensors(out, min_size=4000).values() if w.dtype == np.int8]
    assert len(dense_kernels) == 2  # conv2 (4608) and dense1 (32768)
    for kernel in dense_kernels:
        assert np.mean(kernel == 0) >= 0.78
    assert tflite_float_ops(out) == []
    _, _, test_x, test_y = digits
    assert tflite_accuracy(out, test_x, test_y) >= 0.9


def test_qat_writes_tflite_only(tmp_path, tf_keras_cnn_h5, data_dir):
    result = run_cli("qat", tf_keras_cnn_h5, "--train-data", data_dir / "train.npz", "-o", tmp_path / "q.keras")
    assert result.exit_code == 2 and "use one of .tflite" in result.stderr

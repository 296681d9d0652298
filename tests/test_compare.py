"""``tflite-opt compare``: every mode converted from one export, measured, reported, gated."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tflite_opt.cli import cli

FAST = ["--runs", "3", "--warmup", "1"]
MODES = ["fp32", "dynamic", "float16", "int8", "int16x8"]


def run(*args):
    return CliRunner().invoke(cli, ["-q", *map(str, args)])


def open_tflite(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=path.read_bytes())
    interpreter.allocate_tensors()
    return interpreter


@pytest.fixture(scope="module")
def compared(keras3_cnn_path, data_dir, tmp_path_factory):
    """One compare run over all five modes, with its stdout as JSON, shared by the assertions below."""
    import tflite_opt.models.loading as models

    out = tmp_path_factory.mktemp("compare") / "out"
    exports = []
    original = models.export_saved_model

    def counting_export(*args, **kwargs):
        exports.append(args)
        return original(*args, **kwargs)

    models.export_saved_model = counting_export
    try:
        result = run(
            "compare",
            keras3_cnn_path,
            "--data",
            data_dir / "test.npz",
            "--representative-data",
            data_dir / "calib.npz",
            "--output-dir",
            out,
            "--format",
            "json",
            "--plot",
            out / "plot.png",
            *FAST,
        )
    finally:
        models.export_saved_model = original
    return result, out, exports


def test_compare_writes_every_mode_and_reports(compared):
    result, out, exports = compared
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [v["name"] for v in report["variants"]] == MODES
    assert report["reference"] == "fp32"
    assert report["passed"] is True
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["variants"] == report["variants"]
    markdown = (out / "report.md").read_text()
    for mode in MODES:
        assert f"| {mode}" in markdown
        path = out / f"{mode}.tflite"
        open_tflite(path)
        variant = next(v for v in report["variants"] if v["name"] == mode)
        assert variant["size_bytes"] == path.stat().st_size
        assert variant["error"] is None
        assert variant["accuracy"] > 0.9
    by_name = {v["name"]: v for v in report["variants"]}
    assert by_name["int8"]["size_ratio"] <= 0.3
    assert abs(by_name["int8"]["accuracy_delta"]) <= 0.05
    assert by_name["int8"]["agreement"] >= 0.9
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_exports_the_source_model_once(compared):
    """SPEC §5: compare loads and exports the source model once per run, not once per mode."""
    result, _, exports = compared
    assert result.exit_code == 0
    assert len(exports) == 1


def test_compare_gate_failure_exits_3_with_files_written(keras3_cnn_path, data_dir, tmp_path):
    out = tmp_path / "out"
    result = run(
        "compare",
        keras3_cnn_path,
        "--data",
        data_dir / "test.npz",
        "--representative-data",
        data_dir / "calib.npz",
        "--output-dir",
        out,
        "--modes",
        "fp32,int8",
        "--gate",
        "int8:size_ratio<=0.01",
        *FAST,
    )
    assert result.exit_code == 3, result.output
    assert "size_ratio" in result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is False
    assert report["gates"][0]["passed"] is False and report["gates"][0]["variant"] == "int8"
    assert (out / "int8.tflite").exists() and (out / "fp32.tflite").exists()


@pytest.fixture(scope="module")
def sin_savedmodel(tmp_path_factory):
    """A SavedModel with SIN, which has no int8 kernel: int8 without fallback must fail, the rest must not."""
    import tensorflow as tf

    class Model(tf.Module):
        def __init__(self):
            self.w = tf.Variable(np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="x")])
        def serve(self, x):
            return {"scores": tf.matmul(tf.sin(x), self.w)}

    module = Model()
    path = tmp_path_factory.mktemp("sin") / "model"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    data = path.parent / "data.npz"
    rng = np.random.default_rng(1)
    np.savez(data, x=rng.random((64, 4), dtype=np.float32), y=rng.integers(0, 3, 64))
    return path, data


def test_failed_variant_is_reported_and_others_measured(sin_savedmodel, tmp_path):
    model, data = sin_savedmodel
    out = tmp_path / "out"
    result = run("compare", model, "--data", data, "--output-dir", out, "--modes", "fp32,int8,float16", *FAST)
    assert result.exit_code == 1, result.output
    assert "1 of 3 variants failed" in result.stderr and "int8" in result.stderr
    report = json.loads((out / "report.json").read_text())
    by_name = {v["name"]: v for v in report["variants"]}
    assert by_name["int8"]["error"] and "SIN" in by_name["int8"]["error"]
    assert by_name["int8"]["size_bytes"] is None  # never made: unknown (null), not 0
    assert not (out / "int8.tflite").exists()
    assert by_name["float16"]["error"] is None and by_name["float16"]["accuracy"] is not None
    assert by_name["float16"]["latency_ms"]["runs"] == 3


@pytest.mark.slow
def test_compare_with_training_rows(keras3_cnn_path, data_dir, tmp_path):
    """Issue: `compare --train-data ... --qat --prune 0.5` shows those rows in the table and in report.json."""
    out = tmp_path / "out"
    result = run(
        "compare",
        keras3_cnn_path,
        "--data",
        data_dir / "test.npz",
        "--output-dir",
        out,
        "--modes",
        "fp32,int8",
        "--train-data",
        data_dir / "train.npz",
        "--qat",
        "--prune",
        "0.5",
        "--epochs",
        "1",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    assert "qat_int8" in result.stdout and "pruned_50" in result.stdout
    report = json.loads((out / "report.json").read_text())
    by_name = {v["name"]: v for v in report["variants"]}
    assert set(by_name) == {"fp32", "int8", "qat_int8", "pruned_50"}
    assert by_name["qat_int8"]["mode"] == "qat" and by_name["pruned_50"]["mode"] == "prune"
    assert by_name["qat_int8"]["accuracy"] >= by_name["fp32"]["accuracy"] - 0.05
    assert by_name["pruned_50"]["sparsity"] >= 0.4
    interpreter = open_tflite(out / "qat_int8.tflite")
    assert interpreter.get_input_details()[0]["dtype"] == np.int8


def test_training_rows_need_train_data(keras3_cnn_path, data_dir, tmp_path):
    result = run("compare", keras3_cnn_path, "--data", data_dir / "test.npz", "--output-dir", tmp_path / "o", "--qat")
    assert result.exit_code == 2
    assert "--train-data" in result.stderr


def test_unknown_mode_is_a_usage_error(keras3_cnn_path, data_dir, tmp_path):
    result = run(
        "compare",
        keras3_cnn_path,
        "--data",
        data_dir / "test.npz",
        "--output-dir",
        tmp_path / "o",
        "--modes",
        "fp32,int3",
    )
    assert result.exit_code == 2
    assert "int3" in result.stderr


def test_calibrating_on_evaluation_data_warns(keras3_cnn_path, data_dir, tmp_path):
    result = CliRunner().invoke(
        cli,
        [
            "compare",
            str(keras3_cnn_path),
            "--data",
            str(data_dir / "test.npz"),
            "--output-dir",
            str(tmp_path / "o"),
            "--modes",
            "int8",
            *FAST,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "calibrating on the evaluation data" in result.stderr


@pytest.mark.slow
def test_compare_puts_both_backends_in_one_table(keras3_cnn_path, data_dir, tmp_path):
    """Issue #14: converter and LiteRT Quantizer rows side by side, ``backend`` in report.json (schema 2)."""
    out = tmp_path / "out"
    result = run(
        "compare",
        keras3_cnn_path,
        "--data",
        data_dir / "test.npz",
        "--representative-data",
        data_dir / "calib.npz",
        "--output-dir",
        out,
        "--modes",
        "fp32,int8,quantizer:int8,int4",
        "--format",
        "json",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["schema_version"] == 2
    by_name = {v["name"]: v for v in report["variants"]}
    assert list(by_name) == ["fp32", "int8", "int8_quantizer", "int4"]
    assert [v["backend"] for v in by_name.values()] == ["converter", "converter", "quantizer", "quantizer"]
    assert by_name["int8_quantizer"]["integer_only"] is True and by_name["int4"]["mode"] == "int4"
    assert by_name["int4"]["size_ratio"] <= 0.25 and by_name["int4"]["accuracy_delta"] >= -0.02
    assert abs(by_name["int8_quantizer"]["accuracy_delta"] - by_name["int8"]["accuracy_delta"]) <= 0.01
    assert json.loads(result.stdout)["variants"][3]["backend"] == "quantizer"

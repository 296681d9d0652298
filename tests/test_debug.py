"""``tflite-opt debug``: the per-layer ranking, its flags, its formats, and bad input with exit codes 1 and 2."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from tflite_opt.cli import cli
from tflite_opt.quantize.debugging import IDEAL_RMSE_SCALE

CNN_LAYERS = {"conv1", "conv2", "pool", "flatten", "dense1", "logits"}


def run(*args):
    return CliRunner().invoke(cli, ["-q", *map(str, args)])


@pytest.mark.slow
def test_debug_ranks_the_outlier_layer_worst_and_suggests_keeping_it_float(hostile_model):
    result = run("debug", hostile_model.path, "--representative-data", hostile_model.calib_data, "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # stdout holds nothing but the JSON
    layers = report["layers"]
    assert [layer["rank"] for layer in layers] == list(range(1, len(layers) + 1))
    worst = layers[0]
    assert worst["layer"] == "dense2" and worst["op"] == "FULLY_CONNECTED"
    # Per-channel weights crushed by the outliers: far beyond rounding noise (measured ~68).
    assert worst["rmse_scale"] > 10
    assert worst["above_threshold"] is True
    assert all(layer["rmse_scale"] < 0.7 and not layer["above_threshold"] for layer in layers[1:])
    assert {layer["layer"] for layer in layers} == {"dense2", "dense1", "logits", "flatten"}
    assert report["keep_float"] == ["dense2"]
    assert report["suggested_flags"] == "--keep-float dense2"
    assert report["threshold"] == 0.7 and report["num_samples"] == 200
    assert math.isclose(report["ideal_rmse_scale"], 0.288675, rel_tol=1e-5)


@pytest.mark.slow
def test_debug_on_a_well_behaved_cnn_flags_nothing_and_names_fused_layers(keras3_cnn_path, data_dir):
    table = run("debug", keras3_cnn_path, "--representative-data", data_dir / "calib.npz")
    assert table.exit_code == 0, table.output
    assert "No layer above 0.7" in table.stdout
    assert "conv1 (+bn1, relu1)" in table.stdout  # Conv2D + BatchNorm + ReLU fused into one CONV_2D

    result = run(
        "debug",
        keras3_cnn_path,
        "--representative-data",
        data_dir / "calib.npz",
        "--format",
        "csv",
        "--threshold",
        "0.25",
        "--num-samples",
        "50",
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {row["layer"] for row in rows} == CNN_LAYERS
    by_layer = {row["layer"]: row for row in rows}
    assert by_layer["conv1"]["fused_layers"] == "bn1;relu1" and by_layer["conv1"]["op"] == "CONV_2D"
    # The logits' output tensor is renamed to the signature output; the layer is recovered from its weights.
    assert by_layer["logits"]["tensor"].startswith("StatefulPartitionedCall")
    ratios = [float(row["rmse_scale"]) for row in rows]
    assert ratios == sorted(ratios, reverse=True)
    # Max pooling and reshape move quantized values unchanged; the arithmetic layers sit near pure rounding.
    assert float(by_layer["pool"]["rmse_scale"]) < 0.01 and float(by_layer["flatten"]["rmse_scale"]) < 0.01
    for name in ("conv1", "conv2", "dense1", "logits"):
        assert 0.5 * IDEAL_RMSE_SCALE < float(by_layer[name]["rmse_scale"]) < 0.7
    # --threshold decides what is flagged, nothing else.
    for row in rows:
        assert (row["above_threshold"] == "True") == (float(row["rmse_scale"]) > 0.25)


@pytest.mark.slow
def test_debug_feeds_a_two_input_savedmodel_by_name_and_its_flags_convert(two_io_savedmodel, tmp_path):
    calib = two_io_savedmodel.parent / "calib.npz"
    result = run("debug", two_io_savedmodel, "--representative-data", calib, "--format", "json", "--threshold", "0.01")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    layers = {layer["layer"] for layer in report["layers"]}
    # No Keras model to ask: the layer names are read back from the Keras 3 export's scopes (conv_1 -> conv).
    assert {"conv", "hidden", "digit", "parity"} <= layers
    assert report["keep_float"], report
    flags = [arg for name in report["keep_float"][:2] for arg in ("--keep-float", name)]
    out = tmp_path / "kept.tflite"
    converted = run("convert", two_io_savedmodel, "-o", out, "--mode", "int8", "--representative-data", calib, *flags)
    assert converted.exit_code == 0, converted.output
    from tflite_opt.quantize.conversion import float_op_names

    assert float_op_names(out.read_bytes())  # what was kept runs in float


def test_debug_requires_representative_data(keras3_cnn_path):
    result = run("debug", keras3_cnn_path)
    assert result.exit_code == 2
    assert "Missing option '--representative-data'" in result.output


def test_debug_rejects_a_non_positive_threshold(keras3_cnn_path, data_dir):
    result = run("debug", keras3_cnn_path, "--representative-data", data_dir / "calib.npz", "--threshold", "0")
    assert result.exit_code == 2
    assert "--threshold" in result.output


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "does not exist"),
        ("wrong_shape", "expects samples of shape (8, 8, 1)"),
        ("nan", "sample 3 of"),
    ],
)
def test_debug_rejects_bad_representative_data_with_exit_1(keras3_cnn_path, data_dir, tmp_path, case, message):
    path = tmp_path / f"{case}.npz"
    x = np.load(data_dir / "calib.npz")["x"][:10].copy()
    if case == "wrong_shape":
        np.savez(path, x=x[..., 0])
    elif case == "nan":
        x[3, 0, 0, 0] = np.nan
        np.savez(path, x=x)
    result = run("debug", keras3_cnn_path, "--representative-data", path)
    assert result.exit_code == 1, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_debug_blames_no_culprit_on_a_well_behaved_cnn(keras3_cnn_path, data_dir):
    result = run("debug", keras3_cnn_path, "--representative-data", data_dir / "calib.npz", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    attribution = report["attribution"]
    assert attribution["healthy"] is True and attribution["culprits"] == [] and attribution["recommended"] is None
    assert attribution["rows"] and all(row["role"] == "" for row in attribution["rows"])
    assert attribution["baseline"]["agreement"] >= 0.99 and attribution["baseline"]["sqnr_db"] > 30  # measured 41 dB
    assert all(row["concentration"] < 20 for row in attribution["rows"])  # no outlier channels anywhere
    assert report["keep_float"] == [] and report["suggested_flags"] == ""
    # Bounded: the baseline plus at most two trials for each of at most 2 x 3 candidates.
    assert len(attribution["rows"]) <= 6 and attribution["trials"] <= 1 + 2 * len(attribution["rows"])


@pytest.mark.slow
def test_debug_impact_ranking_on_weight_outliers_keeps_the_flags_and_names_equalize(hostile_model):
    table = run("debug", hostile_model.path, "--representative-data", hostile_model.calib_data)
    assert table.exit_code == 0, table.output
    text = " ".join(table.stdout.split())  # notes may wrap at the terminal width
    assert "Impact on the final output" in text
    assert "Culprit: dense2. Keep in float with (output SQNR" in text and "--keep-float dense2" in text
    assert "dense2's weights have outlier channels: --equalize rescales dense1 → dense2" in text

    report = json.loads(
        run(
            "debug",
            hostile_model.path,
            "--representative-data",
            hostile_model.calib_data,
            "--format",
            "json",
            "--impact-top-k",
            "0",
        ).stdout
    )
    assert report["attribution"] is None
    assert report["keep_float"] == ["dense2"]  # without the impact ranking: the flagged layers

"""Rough edges a new user hits (issue #15): evaluate --input-shape, data that fits no file, a Keras model where a
.tflite belongs, files of different models side by side, a failed compare variant, unknown output suffixes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tflite_opt.cli import cli


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def odd_models(tmp_path_factory):
    """``dynamic.tflite`` (input 'image' (-1, -1, -1, 1): any height and width), ``other.tflite`` (input 'feat' (4,),
    an unrelated model), ``sin/`` (a SavedModel whose SIN op has no int8 kernel) and data for them."""
    import keras
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("odd")
    keras.utils.set_random_seed(0)
    image = keras.Input((None, None, 1), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(image)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dynamic = keras.Model(image, keras.layers.Dense(3, name="logits")(x))
    dynamic.export(str(folder / "dynamic_sm"), format="tf_saved_model", verbose=False)
    (folder / "dynamic.tflite").write_bytes(
        tf.lite.TFLiteConverter.from_saved_model(str(folder / "dynamic_sm")).convert()
    )
    feat = keras.Input((4,), name="feat")
    other = keras.Model(feat, keras.layers.Dense(3, name="score")(feat))
    other.export(str(folder / "other_sm"), format="tf_saved_model", verbose=False)
    (folder / "other.tflite").write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(folder / "other_sm")).convert())

    class Sin(tf.Module):
        def __init__(self):
            self.w = tf.Variable(np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="x")])
        def serve(self, x):
            return {"scores": tf.matmul(tf.sin(x), self.w)}

    module = Sin()
    tf.saved_model.save(module, str(folder / "sin"), signatures={"serving_default": module.serve})
    rng = np.random.default_rng(1)
    np.savez(folder / "dynamic_16.npz", image=rng.random((12, 16, 16, 1), dtype=np.float32), y=rng.integers(0, 3, 12))
    np.savez(folder / "sin.npz", x=rng.random((120, 4), dtype=np.float32), y=rng.integers(0, 3, 120))
    from PIL import Image

    (folder / "images").mkdir()
    for index in range(3):
        Image.fromarray((rng.random((20, 24)) * 255).astype(np.uint8)).save(folder / "images" / f"{index}.png")
    return folder


# ------------------------------------------------------------------------------------------ evaluate --input-shape


def test_evaluate_input_shape_sizes_a_dynamic_input(odd_models):
    model, data = odd_models / "dynamic.tflite", odd_models / "dynamic_16.npz"
    unsized = invoke("evaluate", model, "--data", data, "--runs", "0")
    assert unsized.exit_code == 1
    assert unsized.stderr.strip().splitlines() == [
        "Error: input 'image' has dynamic axes (?, ?, 1); give them the data's sizes with "
        "--input-shape image=-1,16,16,1"
    ]
    sized = invoke("evaluate", model, "--data", data, "--runs", "2", "--input-shape", "image=-1,16,16,1")
    assert sized.exit_code == 0, sized.output
    doc = json.loads(
        invoke(
            "evaluate", model, "--data", data, "--runs", "0", "--input-shape", "image=1,16,16,1", "--format", "json"
        ).stdout
    )
    (variant,) = doc["variants"]
    assert variant["error"] is None and variant["accuracy"] is not None and doc["settings"]["num_samples"] == 12
    # An image folder is resized to the size --input-shape gives (without one, its hint names the option).
    folder = invoke(
        "evaluate", model, "--data", odd_models / "images", "--runs", "0", "--input-shape", "image=1,32,32,1"
    )
    assert folder.exit_code == 0, folder.output
    assert "3 samples" in folder.stdout


def test_evaluate_input_shape_cannot_change_a_fixed_axis(odd_models, tflite_files):
    conflict = invoke("evaluate", odd_models / "dynamic.tflite", "--runs", "0", "--input-shape", "image=1,8,8,3")
    assert conflict.exit_code == 1
    assert (
        f"--input-shape image=(1, 8, 8, 3) conflicts with the fixed shape (-1, -1, -1, 1) of input 'image' in "
        f"{odd_models / 'dynamic.tflite'}; only its -1 (dynamic) axes can be set"
    ) in conflict.stderr
    unknown = invoke("evaluate", tflite_files["fp32"], "--runs", "0", "--input-shape", "picture=1,8,8,1")
    assert unknown.exit_code == 1
    assert f"--input-shape names picture, but the inputs of {tflite_files['fp32']} are image" in unknown.stderr


def test_shape_mismatch_hint_no_longer_names_a_missing_option(tflite_files, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((10, 8, 8, 2), np.float32))
    result = invoke("evaluate", tflite_files["fp32"], "--data", bad, "--runs", "0")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: input 'image' expects samples of shape (8, 8, 1) but {bad} has (8, 8, 2) (array (10, 8, 8, 2)); "
        "give an array of shape (samples, 8, 8, 1)"
    ]


# ------------------------------------------------------------------------------------ data that fits no file


def test_data_that_fits_no_file_is_one_line_and_no_table(tflite_files, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((10, 8, 8), np.float32))
    report = tmp_path / "report.json"
    result = invoke(
        "evaluate", tflite_files["fp32"], tflite_files["int8"], "--data", bad, "--runs", "50", "--report", report
    )
    assert result.exit_code == 1
    assert result.stdout == ""  # no table, no "no data; latency: ..." footer
    assert result.stderr.strip().splitlines() == [
        f"Error: the data fits none of the 2 files: input 'image' expects samples of shape (8, 8, 1) but {bad} has "
        "(8, 8) (array (10, 8, 8)); the leading axis of the array is the sample axis: add a trailing/channel axis"
    ]
    assert not report.exists()


def test_data_that_fits_some_files_still_measures_them(tflite_files, odd_models, data_dir):
    result = invoke(
        "evaluate", tflite_files["fp32"], odd_models / "other.tflite", "--data", data_dir / "test.npz", "--runs", "0",
        "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 1
    by_name = {v["name"]: v for v in json.loads(result.stdout)["variants"]}
    assert by_name["cnn_fp32"]["accuracy"] > 0.9
    assert by_name["other"]["error"].startswith("input 'feat' expects samples of shape (4,)")


# ------------------------------------------------------------------------------- a model where a .tflite belongs


def test_inspect_and_evaluate_name_a_keras_file_and_the_command_to_run(keras3_cnn_path, tflite_files):
    expected = (
        f"Error: {keras3_cnn_path} is a Keras 3 model; convert it first: tflite-opt convert {keras3_cnn_path} "
        "-o cnn.tflite"
    )
    inspected = invoke("inspect", keras3_cnn_path)
    assert inspected.exit_code == 1 and inspected.stderr.strip().splitlines() == [expected]
    evaluated = invoke("evaluate", tflite_files["fp32"], keras3_cnn_path, "--runs", "0")
    assert evaluated.exit_code == 1 and evaluated.stderr.strip().splitlines() == [expected]
    assert evaluated.stdout == ""


def test_inspect_names_a_savedmodel_directory(odd_models):
    saved = odd_models / "other_sm"
    result = invoke("inspect", saved)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: {saved} is a SavedModel directory; convert it first: tflite-opt convert {saved} -o other_sm.tflite"
    ]
    plain = invoke("inspect", odd_models / "images")
    assert plain.exit_code == 1
    assert plain.stderr.strip().splitlines() == [f"Error: {odd_models / 'images'} is a directory, not a .tflite file"]


# ------------------------------------------------------------------------------ files of different models


def test_a_file_of_another_model_gets_no_ratios_against_the_reference(tflite_files, odd_models):
    other = odd_models / "other.tflite"
    result = invoke("evaluate", tflite_files["fp32"], other, "--runs", "2", "--warmup", "1", "--format", "json")
    assert result.exit_code == 0, result.output
    assert result.stderr.strip().splitlines() == [
        "warning: other is not the same model as the reference cnn_fp32 (feat (4,) → output_0 (3,) vs "
        "image (8, 8, 1) → output_0 (10,)): its size ratio, speedup, Δ accuracy, agreement and SQNR are left empty"
    ]
    by_name = {v["name"]: v for v in json.loads(result.stdout)["variants"]}
    assert by_name["cnn_fp32"]["speedup"] == 1.0 and by_name["cnn_fp32"]["size_ratio"] == 1.0
    for key in ("size_ratio", "speedup", "accuracy_delta", "agreement", "sqnr_db"):
        assert by_name["other"][key] is None, key
    assert by_name["other"]["latency_ms"]["runs"] == 2 and by_name["other"]["size_bytes"] > 0
    strict = invoke("--strict", "evaluate", tflite_files["fp32"], other, "--runs", "0")
    assert strict.exit_code == 1 and "is not the same model as the reference cnn_fp32" in strict.stderr


def test_files_of_the_same_model_are_compared(tflite_files):
    result = invoke(
        "evaluate", tflite_files["fp32"], tflite_files["int8"], tflite_files["fixed_batch"], "--runs", "0",
        "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0 and "warning" not in result.stderr
    ratios = [v["size_ratio"] for v in json.loads(result.stdout)["variants"]]
    assert ratios[0] == 1.0 and 0 < ratios[1] < 0.5 and ratios[2] == pytest.approx(1.0, abs=0.05)


def test_signatures_match_as_evaluation_matches_tensors():
    from tflite_opt.measure.preflight import signature_difference
    from tflite_opt.measure.runtime import SignatureInfo, TensorBinding
    from tflite_opt.specs import TensorSpec

    def info(inputs, outputs, key="serving_default"):
        def bind(name, shape):
            return TensorBinding(TensorSpec(name, tuple(None if d < 0 else d for d in shape)), 0, shape)

        return SignatureInfo(key, 0, tuple(bind(*i) for i in inputs), tuple(bind(*o) for o in outputs))

    keras3 = info([("image", (-1, 8, 8, 1))], [("output_0", (-1, 10))])
    tf_keras = info([("image", (-1, 8, 8, 1))], [("logits", (-1, 10))])  # one output each: paired despite names
    fixed = info([("image", (1, 8, 8, 1))], [("output_0", (1, 10))])  # the batch axis is not compared
    dynamic = info([("image", (-1, -1, -1, 1))], [("output_0", (-1, 10))])  # a dynamic axis matches anything
    assert [signature_difference(keras3, other) for other in (tf_keras, fixed, dynamic)] == [None, None, None]
    classes = info([("image", (-1, 8, 8, 1))], [("output_0", (-1, 3))])
    two_in = info([("image", (-1, 8, 8, 1)), ("meta", (-1, 4))], [("output_0", (-1, 10))])
    assert (
        signature_difference(keras3, classes) == "image (8, 8, 1) → output_0 (3,) vs image (8, 8, 1) → output_0 (10,)"
    )
    assert signature_difference(keras3, two_in).startswith("image (8, 8, 1), meta (4,) → output_0 (10,) vs")


# ---------------------------------------------------------------------------------- a failed compare variant


def test_failed_compare_variant_is_reported_once_with_nulls(odd_models, tmp_path):
    out = tmp_path / "out"
    result = invoke(
        "compare", odd_models / "sin", "--data", odd_models / "sin.npz", "--output-dir", out, "--modes", "fp32,int8",
        "--runs", "0",
    )  # fmt: skip
    assert result.exit_code == 1
    reason = "int8 conversion is not integer-only: op(s) SIN run in float; pass --allow-float-fallback"
    assert result.stderr.count(reason) == 1  # the final error only, no warning before it
    assert result.stderr.strip().splitlines()[-1].startswith(f"Error: 1 of 2 variants failed — int8: {reason}")
    int8 = {v["name"]: v for v in json.loads((out / "report.json").read_text())["variants"]}["int8"]
    assert int8["error"].startswith(reason)
    assert int8["path"] is None and int8["size_bytes"] is None and int8["sha256"] is None
    assert int8["gzip_bytes"] is None and int8["mode"] == "int8"
    assert not (out / "int8.tflite").exists()


# ----------------------------------------------------------------------------------------- output suffixes


def test_report_with_an_unknown_suffix_is_refused(tflite_files, tmp_path):
    result = invoke("evaluate", tflite_files["fp32"], "--runs", "0", "--report", tmp_path / "rep.txt")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: Invalid value for '--report': {tmp_path / 'rep.txt'}: the suffix picks the format; use .json "
        "(SPEC schema), .csv or .md"
    )
    assert not (tmp_path / "rep.txt").exists()
    for name in ("rep.json", "rep.csv", "rep.md"):
        assert invoke("evaluate", tflite_files["fp32"], "--runs", "0", "--report", tmp_path / name).exit_code == 0


def test_convert_to_a_non_tflite_name_is_refused(keras3_cnn_path, tmp_path):
    result = invoke("convert", keras3_cnn_path, "-o", tmp_path / "m.keras")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: Invalid value for '-o': {tmp_path / 'm.keras'}: this writes a .tflite flatbuffer; name it m.tflite"
    )
    assert not (tmp_path / "m.keras").exists()

"""Mis-scaled data is warned about (issue #15): integer arrays for float inputs, data a quantized input clips,
calibration and evaluation data on different scales, and calibration on fewer than 100 samples; --strict makes
each an error (exit 1)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from tflite_opt.cli import cli
from tflite_opt.progress import NullProgress
from tflite_opt.quantize.options import calibration_samples
from tflite_opt.representative_data import Dataset, load_data
from tflite_opt.representative_data.ranges import clipped_share, range_mismatch_warnings, representable_range
from tflite_opt.specs import TensorSpec

IMAGE = TensorSpec("image", (None, 8, 8, 1), "float32")
STRICT = "(a warning, and --strict makes warnings errors)"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def scaled_data(tmp_path_factory, digits):
    """test.npz's images as uint8 0-255 (test_u8.npz) and as float32 0-255 (test_255.npz)."""
    _, _, test_x, test_y = digits
    folder = tmp_path_factory.mktemp("scaled")
    np.savez(folder / "test_u8.npz", x=np.round(test_x * 255).astype(np.uint8), y=test_y)
    np.savez(folder / "test_255.npz", x=test_x * 255, y=test_y)
    return folder


def integer_warning(source: str) -> str:
    return (
        f"input 'image' takes floats but {source} holds uint8 values in [0, 255]; if the model was trained on "
        "scaled inputs, scale the arrays (e.g. x / 255 for [0, 1]; an image folder with --preprocess unit does "
        "this), or save them as float32 if it expects this range"
    )


def test_integer_arrays_for_a_float_input_are_named_with_their_range(scaled_data):
    path = scaled_data / "test_u8.npz"
    dataset = load_data(path, [IMAGE])
    assert dataset.warnings == [integer_warning(str(path))]
    assert dataset.inputs["image"].dtype == np.float32 and dataset.inputs["image"].max() == 255
    # Integer 0/1 flags and float arrays of any range are the user's deliberate choice: no warning.
    flags = Dataset(inputs={"image": np.ones((3, 8, 8, 1), dtype=np.uint8)}, source="flags")
    scaled = load_data(scaled_data / "test_255.npz", [IMAGE])
    from tflite_opt.representative_data.dataset import validate

    validate(flags, [IMAGE])
    assert flags.warnings == [] and scaled.warnings == []


def test_evaluate_warns_about_uint8_data_and_strict_fails(tflite_files, scaled_data):
    path = scaled_data / "test_u8.npz"
    args = ["evaluate", tflite_files["fp32"], "--data", path, "--runs", "0"]
    warned = invoke(*args)
    assert warned.exit_code == 0, warned.output
    assert f"warning: {integer_warning(str(path))}" in warned.stderr
    strict = invoke("--strict", *args)
    assert strict.exit_code == 1
    assert strict.stderr.strip().splitlines() == [f"Error: {integer_warning(str(path))} {STRICT}"]


def test_a_quantized_input_that_clips_the_data_is_warned_about(tflite_files, scaled_data, digits):
    """The int8 file represents [0, 1] (scale 1/255, zero point -128); data in 0-255 is clipped to it."""
    from tflite_opt.measure.runtime import load_signature

    (spec,) = load_signature(tflite_files["int8"].read_bytes()).input_specs
    low, high = representable_range(spec)
    assert spec.dtype == "int8" and spec.zero_point == -128 and low == 0 and high == pytest.approx(1.0)
    values = digits[2] * 255
    share = np.mean(values > high + spec.scale / 2)  # what quantizing into the input clips
    assert clipped_share(values, spec) == pytest.approx(share) and share > 0.3
    assert clipped_share(values, spec, (float(values.min()), float(values.max()))) == clipped_share(values, spec)
    path = scaled_data / "test_255.npz"
    expected = (
        f"{share:.1%} of the values of input 'image' in {path} (range [0, 255]) lie outside what "
        f"{tflite_files['int8']} can represent ([0, 1], int8 with scale {spec.scale:.6g} and zero point -128) and "
        "are clipped; scale the data like the data the model was calibrated on"
    )
    args = ["evaluate", tflite_files["fp32"], tflite_files["int8"], "--data", path, "--runs", "0"]
    warned = invoke(*args)
    assert warned.exit_code == 0, warned.output
    assert warned.stderr.strip().splitlines() == [f"warning: {expected}"]
    strict = invoke("--strict", *args)
    assert strict.exit_code == 1
    assert strict.stderr.strip().splitlines() == [f"Error: {expected} {STRICT}"]


def test_clean_data_for_a_quantized_input_gives_no_warning(tflite_files, data_dir):
    result = invoke("evaluate", tflite_files["int8"], "--data", data_dir / "test.npz", "--runs", "0")
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr


def test_calibration_and_evaluation_ranges_more_than_2x_apart():
    calibration = {"image": np.array([0.0, 255.0]), "meta": np.array([0.0, 1.0])}
    evaluation = {"image": np.array([0.0, 1.0]), "meta": np.array([-0.5, 1.2])}  # meta: 1.7x, within 2x
    assert range_mismatch_warnings(calibration, evaluation, "calib.npz", "test.npz") == [
        "input 'image': the calibration data (calib.npz) spans [0, 255] but the evaluation data (test.npz) spans "
        "[0, 1] (the calibration range is 255× wider); quantization ranges set on one do not fit the other: scale "
        "both sets the same way"
    ]
    assert range_mismatch_warnings({"x": np.zeros(3)}, {"x": np.ones(3)}, "a", "b") == []  # both constant


def test_compare_warns_when_calibration_is_scaled_unlike_evaluation(keras3_cnn_path, data_dir, scaled_data, tmp_path):
    """--strict stops at the warning, before anything is converted."""
    calibration = scaled_data / "test_255.npz"
    result = invoke(
        "--strict", "compare", keras3_cnn_path, "--data", data_dir / "test.npz", "--representative-data",
        calibration, "--modes", "fp32,int8", "--output-dir", tmp_path / "out",
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: input 'image': the calibration data ({calibration}) spans [0, 255] but the evaluation data "
        f"({data_dir / 'test.npz'}) spans [0, 1] (the calibration range is 255× wider); quantization ranges set on "
        f"one do not fit the other: scale both sets the same way {STRICT}"
    )
    assert not (tmp_path / "out" / "int8.tflite").exists()


def test_fewer_than_100_calibration_samples_are_warned_about(digits):
    dataset = Dataset(inputs={"image": digits[0][:40]}, source="calib.npz")
    progress = NullProgress()
    assert len(calibration_samples(dataset, None, progress)) == 40
    assert progress.warnings == [
        "calibrating on 40 samples of calib.npz: activation ranges from fewer than 100 samples are unreliable (the "
        "converter's docs recommend 100-500 representative samples); give more samples"
    ]
    enough = NullProgress()
    calibration_samples(Dataset(inputs={"image": digits[0][:100]}, source="calib.npz"), None, enough)
    calibration_samples(dataset, 10)  # a later look at the samples (no progress) says nothing
    assert enough.warnings == []


def test_convert_int8_on_few_samples_warns_and_strict_fails(keras3_cnn_path, digits, tmp_path):
    calibration = tmp_path / "few.npz"
    np.savez(calibration, x=digits[0][:20])
    out = tmp_path / "m.tflite"
    args = ["convert", keras3_cnn_path, "-o", out, "--mode", "int8", "--representative-data", calibration]
    message = (
        f"calibrating on 20 samples of {calibration}: activation ranges from fewer than 100 samples are unreliable "
        "(the converter's docs recommend 100-500 representative samples); give more samples"
    )
    warned = invoke("-q", *args)
    assert warned.exit_code == 0, warned.output
    assert warned.stderr.strip().splitlines() == [f"warning: {message}"]
    assert out.stat().st_size > 0
    strict = invoke("-q", "--strict", *args[:3], tmp_path / "strict.tflite", *args[4:])
    assert strict.exit_code == 1
    assert strict.stderr.strip().splitlines() == [f"Error: {message} {STRICT}"]
    assert not (tmp_path / "strict.tflite").exists()

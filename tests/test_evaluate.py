"""``tflite-opt evaluate`` and the evaluation engine (runtime, evaluation, latency)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tests.test_report import assert_report_schema
from tflite_opt.cli import cli
from tflite_opt.errors import DataError, EvaluationError
from tflite_opt.measure.evaluation import (
    SQNR_CAP_DB,
    EvaluationOptions,
    VariantSource,
    evaluate_variants,
    pick_accuracy_output,
    run_dataset,
    sqnr_db,
    top1,
    topk_accuracy,
    variant_names,
)
from tflite_opt.measure.latency import measure_latency, percentile, summarize
from tflite_opt.measure.runtime import ModelRunner, dequantize, interpreter_from_bytes, quantize, read_model_bytes
from tflite_opt.representative_data import Dataset
from tflite_opt.specs import TensorSpec


def _evaluate(*args: str):
    return CliRunner().invoke(cli, ["-q", "evaluate", *args])


def _json(*args: str) -> dict:
    result = _evaluate(*args, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _by_name(doc: dict) -> dict:
    return {v["name"]: v for v in doc["variants"]}


# ------------------------------------------------------------------------------------------------- the command


def test_int8_io_file_matches_its_fp32_source(tflite_files, data_dir, digits):
    doc = _json(
        str(tflite_files["fp32"]),
        str(tflite_files["int8"]),
        "--data",
        str(data_dir / "test.npz"),
        "--runs",
        "3",
        "--warmup",
        "1",
    )
    assert_report_schema(doc)
    variants = _by_name(doc)
    fp32, int8 = variants["cnn_fp32"], variants["cnn_int8"]
    assert fp32["accuracy"] > 0.9  # the fixture CNN reaches ~97% on digits
    assert abs(int8["accuracy"] - fp32["accuracy"]) <= 0.05
    assert int8["agreement"] >= 0.9
    assert int8["accuracy_delta"] == pytest.approx(int8["accuracy"] - fp32["accuracy"])
    assert 20 < int8["sqnr_db"] < SQNR_CAP_DB
    assert fp32["agreement"] == 1.0 and fp32["sqnr_db"] is None and fp32["speedup"] == 1.0
    assert int8["top5"] >= int8["accuracy"]
    assert doc["settings"]["num_samples"] == len(digits[3])


def test_accuracy_equals_a_per_sample_reference_loop(tflite_files, digits):
    """The batched, multi-interpreter path gives exactly the tutorials' set_tensor/invoke/get_tensor answer."""
    _, _, test_x, test_y = digits
    content = tflite_files["int8"].read_bytes()
    interpreter = interpreter_from_bytes(content, xnnpack=True)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = inp["quantization"]
    predictions = []
    for sample in test_x:
        q = np.clip(np.round(sample / scale + zero), -128, 127).astype(np.int8)[None]
        interpreter.set_tensor(inp["index"], q)
        interpreter.invoke()
        predictions.append(int(interpreter.get_tensor(out["index"]).argmax()))
    expected = float(np.mean(np.array(predictions) == test_y))

    dataset = Dataset(inputs={"image": test_x}, labels=test_y)
    outputs = run_dataset(content, dataset, batch_size=64, workers=2)
    assert outputs["output_0"].dtype == np.float32 and outputs["output_0"].shape == (len(test_x), 10)
    assert float(np.mean(top1(outputs["output_0"]) == test_y)) == pytest.approx(expected, abs=1 / len(test_x))


def test_batching_and_workers_do_not_change_outputs(tflite_files, digits):
    test_x = digits[2][:101]  # not a multiple of the batch: the last batch is padded
    dataset = Dataset(inputs={"image": test_x})
    content = tflite_files["fp32"].read_bytes()
    single = run_dataset(content, dataset, batch_size=1, workers=1)["output_0"]
    batched = run_dataset(content, dataset, batch_size=16, workers=2)["output_0"]
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-4)
    fixed = run_dataset(tflite_files["fixed_batch"].read_bytes(), dataset, batch_size=16, workers=2)["output_0"]
    np.testing.assert_allclose(fixed, single, rtol=1e-4, atol=1e-4)


def test_fixed_batch_file_is_run_per_sample(tflite_files, data_dir):
    runner = ModelRunner(tflite_files["fixed_batch"].read_bytes())
    assert runner.signature.batch_resizable is False
    assert runner.prepare(64) == 1
    doc = _json(
        str(tflite_files["fp32"]), str(tflite_files["fixed_batch"]), "--data", str(data_dir / "test.npz"), "--runs", "0"
    )
    variants = _by_name(doc)
    assert variants["cnn_fixed_batch"]["accuracy"] == variants["cnn_fp32"]["accuracy"]
    assert variants["cnn_fixed_batch"]["agreement"] == 1.0


def test_unloadable_file_is_reported_and_the_others_measured(tmp_path, tflite_files, data_dir):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    report_path = tmp_path / "out" / "report.json"
    result = _evaluate(
        str(tflite_files["fp32"]),
        str(junk),
        str(tflite_files["dynamic"]),
        "--data",
        str(data_dir / "test.npz"),
        "--runs",
        "2",
        "--format",
        "json",
        "--report",
        str(report_path),
    )
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: 1 of 3 variants failed — junk: {junk} is not a valid .tflite file (damaged or truncated flatbuffer);"
        " re-export or re-download it"
    ]
    doc = json.loads(report_path.read_text())
    assert json.loads(result.stdout) == doc
    assert_report_schema(doc)
    variants = _by_name(doc)
    assert "not a valid .tflite file" in variants["junk"]["error"]
    assert variants["junk"]["accuracy"] is None and variants["junk"]["size_bytes"] == 4000
    assert variants["cnn_dynamic"]["error"] is None and variants["cnn_dynamic"]["accuracy"] > 0.9
    assert variants["cnn_dynamic"]["latency_ms"]["runs"] == 2
    assert doc["passed"] is False


def test_json_on_stdout_and_nothing_else(tflite_files, data_dir):
    # without -q: progress may be drawn, but only on stderr
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            str(tflite_files["int8"]),
            "--data",
            str(data_dir / "test.npz"),
            "--runs",
            "2",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert result.stdout.strip().startswith("{") and result.stdout.strip().endswith("}")
    assert doc["reference"] == "cnn_int8" and doc["variants"][0]["mode"] == "int8"


def test_csv_and_markdown_formats(tflite_files, data_dir):
    import csv
    import io

    args = [
        str(tflite_files["fp32"]),
        str(tflite_files["float16"]),
        "--data",
        str(data_dir / "test.npz"),
        "--runs",
        "0",
    ]
    result = _evaluate(*args, "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["name"] for r in rows] == ["cnn_fp32", "cnn_float16"]
    assert float(rows[1]["size_ratio"]) == pytest.approx(0.5, abs=0.05)
    result = _evaluate(*args, "--format", "markdown")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("| variant | mode |")
    assert "| cnn_float16 | float16 |" in result.stdout


def test_table_output_has_the_docs_columns(tflite_files, data_dir):
    result = _evaluate(
        str(tflite_files["fp32"]), str(tflite_files["int8"]), "--data", str(data_dir / "test.npz"), "--runs", "3"
    )
    assert result.exit_code == 0, result.output
    for header in ("variant", "size", "vs ref", "accuracy", "Δ accuracy", "agreement", "latency", "speedup"):
        assert header in result.stdout
    assert "cnn_fp32 (ref)" in result.stdout and " ms " in result.stdout


def test_reference_can_be_another_file(tflite_files, data_dir):
    doc = _json(
        str(tflite_files["int8"]),
        "--reference",
        str(tflite_files["fp32"]),
        "--data",
        str(data_dir / "test.npz"),
        "--runs",
        "0",
    )
    assert doc["reference"] == "cnn_fp32"
    assert [v["name"] for v in doc["variants"]] == ["cnn_fp32", "cnn_int8"]
    doc = _json(
        str(tflite_files["fp32"]),
        str(tflite_files["int8"]),
        "--reference",
        str(tflite_files["int8"]),
        "--data",
        str(data_dir / "test.npz"),
        "--runs",
        "0",
    )
    assert doc["reference"] == "cnn_int8"
    assert _by_name(doc)["cnn_fp32"]["size_ratio"] > 3


def test_keras_reference_is_converted_to_fp32(tflite_files, keras3_cnn_path, data_dir):
    """SPEC §2: --reference FILE_OR_MODEL. A model reference is converted to fp32 in memory and measured."""
    doc = _json(
        str(tflite_files["int8"]),
        "--reference",
        str(keras3_cnn_path),
        "--data",
        str(data_dir / "test.npz"),
        "--runs",
        "0",
    )
    assert doc["reference"] == "cnn"
    reference, int8 = doc["variants"]
    assert reference["name"] == "cnn" and reference["mode"] == "fp32" and reference["path"] == str(keras3_cnn_path)
    assert reference["accuracy"] > 0.9
    assert int8["agreement"] >= 0.9 and int8["size_ratio"] < 0.35


def test_without_data_only_size_sparsity_latency(tflite_files):
    doc = _json(str(tflite_files["fp32"]), str(tflite_files["int8"]), "--runs", "3", "--warmup", "0")
    int8 = _by_name(doc)["cnn_int8"]
    assert int8["accuracy"] is None and int8["agreement"] is None and int8["sqnr_db"] is None
    assert int8["latency_ms"]["runs"] == 3 and int8["speedup"] > 0
    assert int8["sparsity"] is not None and doc["settings"]["num_samples"] is None


def test_unlabelled_data_gives_fidelity_only(tflite_files, data_dir):
    doc = _json(
        str(tflite_files["fp32"]),
        str(tflite_files["int8_float_io"]),
        "--data",
        str(data_dir / "calib.npy"),
        "--runs",
        "0",
    )
    variant = _by_name(doc)["cnn_int8_float_io"]
    assert variant["accuracy"] is None and variant["accuracy_delta"] is None
    assert variant["agreement"] >= 0.9 and variant["sqnr_db"] > 20
    assert doc["settings"]["num_samples"] == 200


def test_random_data_warns_even_when_quiet(tflite_files):
    result = _evaluate(
        str(tflite_files["fp32"]), "--data", "random", "--num-samples", "10", "--runs", "0", "--format", "json"
    )
    assert result.exit_code == 0, result.output
    assert "random data" in result.stderr and "meaningless" in result.stderr
    assert json.loads(result.stdout)["settings"]["num_samples"] == 10


def test_no_xnnpack_and_threads_are_recorded(tflite_files, data_dir):
    doc = _json(
        str(tflite_files["fp32"]), "--data", str(data_dir / "test.npz"), "--no-xnnpack", "--threads", "2", "--runs", "2"
    )
    assert doc["settings"]["xnnpack"] is False and doc["settings"]["threads"] == 2
    assert doc["variants"][0]["accuracy"] > 0.9


def test_two_io_model_matches_outputs_by_name(two_io_tflite):
    doc = _json(
        str(two_io_tflite["fp32"]), str(two_io_tflite["int8"]), "--data", str(two_io_tflite["data"]), "--runs", "0"
    )
    fp32, int8 = _by_name(doc)["two_fp32"], _by_name(doc)["two_int8"]
    assert fp32["accuracy"] > 0.5  # 'digit' (sorts before 'parity') after 3 epochs
    assert abs(int8["accuracy"] - fp32["accuracy"]) <= 0.05
    assert int8["agreement"] >= 0.9 and int8["sqnr_db"] > 15


def test_output_option_selects_the_accuracy_output(tmp_path, two_io_tflite):
    data = np.load(two_io_tflite["data"])
    parity = tmp_path / "parity.npz"
    np.savez(parity, image=data["image"], meta=data["meta"], y=data["y"] % 2)
    doc = _json(str(two_io_tflite["fp32"]), "--data", str(parity), "--runs", "0", "--output", "parity")
    assert doc["variants"][0]["accuracy"] > 0.6 and doc["variants"][0]["top5"] is None
    result = _evaluate(str(two_io_tflite["fp32"]), "--data", str(parity), "--runs", "0", "--output", "nope")
    assert result.exit_code == 1
    assert "--output 'nope' is not an output of the model; its outputs are 'digit', 'parity'" in result.stderr


def test_labels_outside_the_classes_are_an_error(tmp_path, tflite_files, digits):
    bad = tmp_path / "bad_labels.npz"
    np.savez(bad, x=digits[2][:20], y=np.full(20, 12))
    result = _evaluate(str(tflite_files["fp32"]), "--data", str(bad), "--runs", "0")
    assert result.exit_code == 1
    assert "label 12 of sample 0" in result.stderr and "10 classes" in result.stderr


def test_data_that_does_not_fit_names_the_input(tmp_path, tflite_files):
    bad = tmp_path / "wrong_shape.npz"
    np.savez(bad, x=np.zeros((5, 9, 9, 1), np.float32))
    result = _evaluate(str(tflite_files["fp32"]), "--data", str(bad), "--runs", "0")
    assert result.exit_code == 1
    assert "input 'image' expects samples of shape (8, 8, 1)" in result.stderr


def test_missing_data_path_is_a_usage_error(tflite_files, tmp_path):
    result = _evaluate(str(tflite_files["fp32"]), "--data", str(tmp_path / "none.npz"))
    assert result.exit_code == 2
    assert "none.npz does not exist" in result.stderr


def test_report_never_overwrites_an_input(tflite_files):
    result = _evaluate(str(tflite_files["fp32"]), "--runs", "0", "--report", str(tflite_files["fp32"]))
    assert result.exit_code == 1
    assert "would overwrite the input" in result.stderr


def test_file_without_signature_uses_tensor_names(no_signature_tflite, digits):
    dataset = Dataset(inputs={"serving_default_image:0": digits[2][:10]})
    outputs = run_dataset(no_signature_tflite.read_bytes(), dataset)
    assert list(outputs) == ["StatefulPartitionedCall_1:0"] and outputs["StatefulPartitionedCall_1:0"].shape == (10, 10)


# ------------------------------------------------------------------------------------------------- the library


def test_evaluate_variants_takes_bytes_and_a_dataset(tflite_files, digits):
    _, _, test_x, test_y = digits
    sources = [
        VariantSource("fp32", path="fp32.tflite", content=tflite_files["fp32"].read_bytes(), mode="fp32"),
        VariantSource("int8", path="int8.tflite", content=tflite_files["int8"].read_bytes(), mode="int8"),
        VariantSource("failed", mode="int16x8", error="conversion failed: no kernel"),
    ]
    run = evaluate_variants(
        sources, Dataset(inputs={"image": test_x}, labels=test_y), options=EvaluationOptions(runs=0)
    )
    fp32, int8, failed = run.variants
    assert run.reference == "fp32" and run.num_samples == len(test_x)
    assert int8.mode == "int8" and int8.size_ratio < 0.35 and int8.agreement >= 0.9
    assert failed.error == "conversion failed: no kernel" and failed.size_bytes is None and failed.mode == "int16x8"


def test_evaluate_variants_reuses_a_measured_reference(tflite_files, digits):
    _, _, test_x, test_y = digits
    data = Dataset(inputs={"image": test_x}, labels=test_y)
    fp32 = VariantSource("fp32", content=tflite_files["fp32"].read_bytes(), mode="fp32")
    int8 = VariantSource("int8", content=tflite_files["int8"].read_bytes(), mode="int8")
    full = evaluate_variants([fp32, int8], data, options=EvaluationOptions(runs=0))
    # A reference that cannot be read proves it is not run again; its results and outputs are reused.
    gone = VariantSource("fp32", path="/nonexistent/fp32.tflite")
    reused = evaluate_variants(
        [gone, int8], data, options=EvaluationOptions(runs=0), measured={"fp32": full.measured("fp32")}
    )
    assert reused.variants == full.variants and reused.num_samples == full.num_samples
    assert reused.variants[0] is not full.variants[0]


def test_bad_samples_fail_up_front_and_float64_is_cast(tflite_files, digits):
    _, _, test_x, test_y = digits
    content = tflite_files["fp32"].read_bytes()
    bad = test_x.copy()
    bad[7, 0, 0, 0] = np.nan
    # Data that fits no file is one error before anything is measured (issue #15), not a failed variant.
    with pytest.raises(DataError, match="sample 7 .*NaN or Inf"):
        evaluate_variants(
            [VariantSource("fp32", content=content)],
            Dataset(inputs={"image": bad}, labels=test_y),
            options=EvaluationOptions(runs=0, batch_size=4),
        )
    # float64 samples are cast first (not checked beside): same metrics as float32 ones.
    as32 = evaluate_variants(
        [VariantSource("fp32", content=content)],
        Dataset(inputs={"image": test_x}, labels=test_y),
        options=EvaluationOptions(runs=0),
    )
    as64 = evaluate_variants(
        [VariantSource("fp32", content=content)],
        Dataset(inputs={"image": test_x.astype(np.float64)}, labels=test_y),
        options=EvaluationOptions(runs=0),
    )
    assert as32.variants == as64.variants and as32.variants[0].accuracy > 0.5


def test_run_dataset_is_the_same_in_any_batches_and_workers(tflite_files, digits):
    content = tflite_files["int8"].read_bytes()
    dataset = Dataset(inputs={"image": digits[2][:37]})
    expected = run_dataset(content, dataset, batch_size=1, workers=1)["output_0"]
    for batch, workers in ((5, 2), (64, 3), (8, 1)):
        got = run_dataset(content, dataset, batch_size=batch, workers=workers)["output_0"]
        assert got.dtype == np.float32 and np.array_equal(got, expected)


def test_evaluate_variants_rejects_bad_names():
    with pytest.raises(EvaluationError, match="repeated: a"):
        evaluate_variants([VariantSource("a", "x"), VariantSource("a", "y")], None)
    with pytest.raises(EvaluationError, match="the reference 'z' is not among"):
        evaluate_variants([VariantSource("a", "x")], None, reference="z")


def test_variant_names_are_unique():
    assert variant_names(["a/m.tflite", "b/m.tflite", "c/n.tflite"]) == ["a/m", "b/m", "n"]
    assert variant_names(["m.tflite", "m.tflite"]) == ["m", "m#2"]


def test_quantize_round_trip_and_rounding():
    spec = TensorSpec("x", (None, 3), "int8", scale=0.5, zero_point=-10)
    q = quantize(np.array([[0.25, -0.25, 1000.0]], np.float32), spec)
    # round half away from zero like TFLite's QUANTIZE, then clamp to int8
    assert q.tolist() == [[-9, -11, 127]] and q.dtype == np.int8
    np.testing.assert_allclose(dequantize(q, spec), [[0.5, -0.5, 68.5]])


def test_metric_helpers():
    scores = np.array([[0.1, 0.9, 0.0, 0, 0, 0], [0.8, 0.1, 0.1, 0, 0, 0]], np.float32)
    assert top1(scores).tolist() == [1, 0]
    assert topk_accuracy(scores, np.array([1, 2]), 1) == 0.5
    assert topk_accuracy(scores, np.array([1, 2]), 5) == 1.0
    assert topk_accuracy(scores[:, :3], np.array([1, 2]), 5) is None
    assert top1(np.array([[0.2], [0.7]])).tolist() == [0, 1]  # sigmoid output
    assert top1(np.array([[-1.0], [2.0]])).tolist() == [0, 1]  # logit output
    ref = {"a": np.array([3.0, 4.0]), "b": np.array([0.0, 0.0])}
    assert sqnr_db(ref, {"a": np.array([3.0, 4.0]), "b": np.zeros(2)}) == SQNR_CAP_DB
    assert sqnr_db(ref, {"a": np.array([3.0, 3.0]), "b": np.zeros(2)}) == pytest.approx(10 * np.log10(25.0))
    assert sqnr_db({"y": np.array([1.0])}, {"other": np.array([0.5])}) == pytest.approx(10 * np.log10(4.0))
    assert sqnr_db(ref, {"c": np.zeros(2), "d": np.zeros(2)}) is None
    assert pick_accuracy_output(["parity", "digit"]) == "digit"
    assert pick_accuracy_output(["parity", "digit"], "parity") == "parity"


def test_latency_statistics_follow_the_benchmark_tool():
    stats = summarize([4.0, 1.0, 3.0, 2.0, 10.0])
    assert (stats.median, stats.min, stats.runs, stats.mean) == (3.0, 1.0, 5, 4.0)
    assert stats.p90 == pytest.approx(percentile([1.0, 2.0, 3.0, 4.0, 10.0], 90)) == pytest.approx(7.6)
    assert stats.std == pytest.approx(np.std([4.0, 1.0, 3.0, 2.0, 10.0], ddof=1))


def test_measure_latency(tflite_files, digits):
    stats = measure_latency(tflite_files["int8"].read_bytes(), warmup=2, runs=7, sample={"image": digits[2][:1]})
    assert stats.runs == 7 and 0 < stats.min <= stats.median <= stats.p90 < 1000
    with pytest.raises(EvaluationError, match="--runs must be at least 1"):
        measure_latency(tflite_files["int8"].read_bytes(), runs=0)


def test_read_model_bytes_errors(tmp_path):
    with pytest.raises(EvaluationError, match="does not exist"):
        read_model_bytes(tmp_path / "none.tflite")
    (tmp_path / "empty.tflite").write_bytes(b"")
    with pytest.raises(EvaluationError, match="is empty"):
        read_model_bytes(tmp_path / "empty.tflite")
    with pytest.raises(EvaluationError, match="is a directory"):
        read_model_bytes(tmp_path)


def test_one_array_dataset_fits_a_one_input_model_under_any_key(no_signature_tflite, tflite_files, digits):
    _, _, test_x, test_y = digits
    sources = [VariantSource("fp32", str(tflite_files["fp32"])), VariantSource("nosig", str(no_signature_tflite))]
    run = evaluate_variants(sources, Dataset(inputs={"x": test_x}, labels=test_y), options=EvaluationOptions(runs=0))
    fp32, nosig = run.variants
    assert nosig.error is None and nosig.accuracy == fp32.accuracy > 0.9
    assert nosig.agreement == 1.0  # single outputs are matched although their names differ
    assert nosig.sqnr_db == SQNR_CAP_DB


def test_gzip_size_is_the_size_of_gzip_level_6(tflite_files):
    import gzip

    from tflite_opt.measure.evaluation import gzip_size

    for content in (
        b"",
        b"a",
        bytes(range(256)) * 300,
        tflite_files["fp32"].read_bytes(),
        np.random.default_rng(0).bytes(50_000),
    ):
        assert gzip_size(content) == len(gzip.compress(content, compresslevel=6, mtime=0))


@pytest.mark.parametrize(
    "dtype, scale, zero_point",
    [("int8", 1 / 255, -128), ("int8", 0.1, 3), ("uint8", 0.02, 128), ("int16", 1 / 3000, 0)],
)
def test_quantize_rounds_half_away_from_zero_like_the_quantize_op(dtype, scale, zero_point):
    spec = TensorSpec("x", (None, 4), dtype, scale=scale, zero_point=zero_point)
    rng = np.random.default_rng(0)
    ties = (np.arange(-300, 300, dtype=np.float32) + np.float32(0.5)) * np.float32(scale)
    values = np.concatenate(
        [rng.normal(0, 200 * scale, 20_000).astype(np.float32), ties, np.array([0.0, -0.0, 1e9, -1e9], np.float32)]
    )
    scaled = values / np.float32(scale)
    expected = np.clip(
        np.sign(scaled) * np.floor(np.abs(scaled) + 0.5) + zero_point, np.iinfo(dtype).min, np.iinfo(dtype).max
    ).astype(dtype)
    assert np.array_equal(quantize(values, spec), expected)

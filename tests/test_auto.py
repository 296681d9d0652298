"""``tflite-opt auto``: the accuracy-budget search, its stopping rules, its report, and its exit codes."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner

from tflite_opt.cli import cli
from tflite_opt.measure.latency import LatencyStats
from tflite_opt.modes import Mode
from tflite_opt.quantize.search import Budget, Trial, choose
from tflite_opt.reporting.report import VariantResult

FAST = ("--runs", "5", "--warmup", "1")


def run(*args, quiet=True):
    return CliRunner().invoke(cli, ["-q"] * quiet + [*map(str, args)])


def load_interpreter(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=path.read_bytes())
    interpreter.allocate_tensors()
    return interpreter


@pytest.mark.slow
def test_auto_keeps_the_outlier_layer_in_float_and_reports_every_trial(hostile_model, tmp_path, monkeypatch):
    from tflite_opt.errors import ConversionError
    from tflite_opt.quantize import conversion

    convert = conversion.convert

    def dynamic_fails(model, options, *args, **kwargs):
        if options.mode == Mode.DYNAMIC:
            raise ConversionError("simulated dynamic-range failure")
        return convert(model, options, *args, **kwargs)

    # A trial that fails is reported with its error; the search goes on and still succeeds.
    monkeypatch.setattr(conversion, "convert", dynamic_fails)
    out, report_path, trials = tmp_path / "auto.tflite", tmp_path / "auto.json", tmp_path / "trials"
    result = run(
        "auto",
        hostile_model.path,
        "--data",
        hostile_model.test_data,
        "--representative-data",
        hostile_model.calib_data,
        "--max-accuracy-drop",
        "0.01",
        "-o",
        out,
        "--report",
        report_path,
        "--trials-dir",
        trials,
        "--skip",
        "equalize",
        "--skip",
        "int4",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["schema_version"] == 2 and report["reference"] == "fp32" and report["passed"] is True
    variants = {v["name"]: v for v in report["variants"]}
    names = [v["name"] for v in report["variants"]]
    # fp32 reference, int8 (fails), int8 + dense2 in float (passes: no more float layers), then the other modes.
    assert names[:3] == ["fp32", "int8", "int8+float:dense2"]
    assert names[3:5] == ["int16x8", "dynamic"]
    assert variants["int8"]["accuracy_delta"] < -0.3  # measured: -76 points
    kept = variants["int8+float:dense2"]
    assert kept["accuracy_delta"] >= -0.01 and kept["error"] is None
    # Same weights crushed in int16x8 (int8 weights): it fails the budget too.
    assert variants["int16x8"]["accuracy_delta"] < -0.3
    assert variants["dynamic"]["error"] == "simulated dynamic-range failure"
    assert variants["dynamic"]["size_bytes"] is None and variants["dynamic"]["accuracy"] is None  # never made
    # The chosen one is the smallest within budget (float16, if tried, passes but is larger).
    within = [v for v in report["variants"][1:] if v["accuracy_delta"] is not None and v["accuracy_delta"] >= -0.01]
    assert min(within, key=lambda v: v["size_bytes"])["name"] == "int8+float:dense2"
    assert report["gates"] == [
        {
            "variant": "int8+float:dense2",
            "metric": "accuracy_delta",
            "op": ">=",
            "limit": -0.01,
            "value": kept["accuracy_delta"],
            "passed": True,
        }
    ]
    # OUT is that trial's file, byte for byte, and runs.
    assert kept["path"] == str(out)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == kept["sha256"]
    load_interpreter(out)
    written = [f"{n.replace(':', '-')}.tflite" for n in names[1:] if n != "dynamic"]
    assert sorted(p.name for p in trials.iterdir()) == sorted(written)
    assert "chosen: int8+float:dense2" in result.stdout
    assert "→ int8+float:dense2" in result.stdout


@pytest.mark.slow
def test_auto_returns_full_int8_after_one_trial_on_a_well_behaved_model(keras3_cnn_path, data_dir, tmp_path):
    out = tmp_path / "cnn.tflite"
    result = run(
        "auto",
        keras3_cnn_path,
        "--data",
        data_dir / "test.npz",
        "--representative-data",
        data_dir / "calib.npz",
        "--max-accuracy-drop",
        "0.01",
        "-o",
        out,
        "--format",
        "json",
        *FAST,
        quiet=False,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # status messages go to stderr, stdout stays JSON
    assert [v["name"] for v in report["variants"]] == ["fp32", "int8"]
    int8 = report["variants"][1]
    assert int8["mode"] == "int8" and int8["accuracy_delta"] >= -0.01 and int8["size_ratio"] < 0.35
    assert report["passed"] is True
    details = load_interpreter(out).get_input_details()
    assert details[0]["dtype"] == np.int8  # integer I/O, like convert --mode int8
    assert "int8: within budget" in result.stderr
    assert "full int8 is within the budget: search stopped" in result.stderr
    assert "chosen: int8" in result.stderr


@pytest.mark.slow
def test_auto_with_an_impossible_budget_writes_the_report_and_exits_3(tie_model, tmp_path):
    out, report_path = tmp_path / "never.tflite", tmp_path / "report.json"
    result = run(
        "auto",
        tie_model.path,
        "--data",
        tie_model.test_data,
        "--representative-data",
        tie_model.calib_data,
        "--max-accuracy-drop",
        "0",
        "-o",
        out,
        "--report",
        report_path,
        *FAST,
        quiet=False,
    )
    assert result.exit_code == 3, result.output
    assert not out.exists()
    # The ladder (issue #10, #14): int8, the rescue rungs (skipped: one Dense layer has no chain to equalize),
    # keep-float, int4, int16x8, dynamic, float16.
    assert "no variant within the budget after 6 trial(s)" in result.stderr
    assert "int8+equalize skipped: no layer chain could be equalized" in result.stderr
    report = json.loads(report_path.read_text())
    assert report["passed"] is False
    names = [v["name"] for v in report["variants"]]
    assert names == ["fp32", "int8", "int8+float:tie", "int4", "int16x8", "dynamic", "float16"]
    assert report["variants"][0]["accuracy"] == 1.0
    for variant in report["variants"][1:]:
        # Every lossy mode, float16 included, flips predictions the float model gets right.
        assert variant["error"] is None and variant["accuracy_delta"] < -0.1, variant
    assert len(report["gates"]) == 1 and report["gates"][0]["passed"] is False


@pytest.mark.slow
def test_auto_without_labels_uses_min_agreement_and_gates_the_choice(keras3_cnn_path, data_dir, tmp_path):
    out, report_path = tmp_path / "cnn.tflite", tmp_path / "report.csv"
    result = run(
        "auto",
        keras3_cnn_path,
        "--data",
        data_dir / "calib.npy",
        "--representative-data",
        data_dir / "calib.npz",
        "--min-agreement",
        "0.95",
        "-o",
        out,
        "--report",
        report_path,
        "--gate",
        "size_ratio<=0.01",
        *FAST,
    )
    # int8 is chosen on agreement, but the extra gate fails: exit 3 with the file and the report written.
    assert result.exit_code == 3, result.output
    assert "size_ratio <= 0.01" in result.stderr
    assert out.exists()
    rows = report_path.read_text().splitlines()
    assert rows[0].startswith("name,mode,path") and [r.split(",")[0] for r in rows[1:]] == ["fp32", "int8"]
    int8 = rows[2].split(",")
    header = rows[0].split(",")
    assert int8[header.index("accuracy")] == ""  # no labels, no accuracy
    assert float(int8[header.index("agreement")]) >= 0.95


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max-accuracy-drop", "0.01"], "Missing option '--data'"),
        (["--data", "{test}"], "give a budget"),
        (["--data", "{test}", "--max-accuracy-drop", "2"], "--max-accuracy-drop"),
        (["--data", "{calib}", "--max-accuracy-drop", "0.01"], "has no labels"),
        (["--data", "{test}", "--max-accuracy-drop", "0.01", "--gate", "speed>>2"], "cannot read gate"),
    ],
)
def test_auto_usage_errors_exit_2(keras3_cnn_path, data_dir, tmp_path, extra, message):
    extra = [e.format(test=data_dir / "test.npz", calib=data_dir / "calib.npz") for e in extra]
    result = run(
        "auto", keras3_cnn_path, "--representative-data", data_dir / "calib.npz", "-o", tmp_path / "x.tflite", *extra
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "x.tflite").exists()


@pytest.mark.parametrize(
    "data, message",
    [
        ("missing.npz", "does not exist"),
        ("random", "'random' data is not allowed here"),
        ("bad_shape.npz", "expects samples of shape (8, 8, 1)"),
    ],
)
def test_auto_bad_data_exits_1(keras3_cnn_path, data_dir, tmp_path, data, message):
    if data == "bad_shape.npz":
        np.savez(tmp_path / data, x=np.zeros((4, 8, 8), np.float32), y=np.zeros(4, np.int64))
    path = data if data == "random" else tmp_path / data
    result = run(
        "auto",
        keras3_cnn_path,
        "--data",
        path,
        "--representative-data",
        data_dir / "calib.npz",
        "--max-accuracy-drop",
        "0.01",
        "-o",
        tmp_path / "x.tflite",
    )
    assert result.exit_code == 1, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------------------------- library pieces


def trial(name, size, latency, delta, budget=Budget(max_accuracy_drop=0.01)):
    result = VariantResult(
        name=name,
        size_bytes=size,
        accuracy_delta=delta,
        agreement=1.0,
        latency_ms=LatencyStats(latency, latency, latency, 0.0, latency, 5),
    )
    within, verdict = budget.check(result)
    return Trial(name, Mode.INT8, (), result, within, verdict, b"")


def test_budget_verdicts():
    assert trial("a", 10, 1.0, -0.01).within_budget  # exactly at the budget passes
    failing = trial("b", 10, 1.0, -0.0101)
    assert not failing.within_budget and failing.verdict == "accuracy drop 1.01 pp > 1.00 pp"
    agreement = Budget(min_agreement=0.99)
    result = VariantResult(name="c", agreement=0.985)
    assert agreement.check(result) == (False, "agreement 98.50% < 99.00%")
    assert Budget(max_accuracy_drop=0.01).check(VariantResult(name="d", error="boom")) == (False, "failed: boom")


def test_choose_prefers_the_smallest_and_breaks_size_ties_by_latency():
    assert choose([trial("big", 2000, 0.1, 0.0), trial("small", 1000, 0.9, 0.0)]).name == "small"
    # Within 1% in size: the faster wins.
    assert choose([trial("a", 1000, 0.9, 0.0), trial("b", 1009, 0.5, 0.0)]).name == "b"
    assert choose([trial("a", 1000, 0.9, 0.0), trial("b", 1011, 0.5, 0.0)]).name == "a"
    assert choose([trial("a", 1000, 0.9, -0.5)]) is None


@pytest.mark.slow
def test_auto_rescues_collapsed_int8_with_equalization_and_stays_integer_only(hostile_model, tmp_path):
    """Issue #10: integer-only candidates come first; equalization rescues the weight-outlier MLP."""
    out, report_path = tmp_path / "auto.tflite", tmp_path / "auto.json"
    result = run(
        "auto",
        hostile_model.path,
        "--data",
        hostile_model.test_data,
        "--representative-data",
        hostile_model.calib_data,
        "--max-accuracy-drop",
        "0.01",
        "-o",
        out,
        "--report",
        report_path,
        *FAST,
        quiet=False,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    variants = {v["name"]: v for v in report["variants"]}
    assert [v["name"] for v in report["variants"]][:3] == ["fp32", "int8", "int8+equalize"]
    assert variants["int8"]["accuracy_delta"] < -0.3
    rescued = variants["int8+equalize"]
    assert rescued["accuracy_delta"] >= -0.01 and rescued["transforms"] == ["equalize"]
    # Integer-only and int8-sized (this MLP on 8x8 inputs has a tiny fan-in: its int8 file is ~0.4x fp32).
    assert rescued["integer_only"] is True and rescued["size_bytes"] <= variants["int8"]["size_bytes"] * 1.01
    assert "chosen: int8+equalize" in result.stdout and "search stopped" in result.stderr
    details = load_interpreter(out).get_input_details()
    assert details[0]["dtype"] == np.int8

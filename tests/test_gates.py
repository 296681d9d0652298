"""Quality gates: parsing, which variants they apply to, and exit code 3 from ``evaluate``."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tflite_opt.cli import cli
from tflite_opt.measure.latency import LatencyStats
from tflite_opt.reporting.gates import (
    Gate,
    GateSyntaxError,
    check_gates,
    check_variant_names,
    max_accuracy_drop_gate,
    metric_value,
    parse_gate,
    parse_gates,
)
from tflite_opt.reporting.report import VariantResult


@pytest.mark.parametrize(
    "text, expected",
    [
        ("int8:accuracy_delta>=-0.01", Gate("accuracy_delta", ">=", -0.01, "int8", False)),
        ("size_ratio<=0.3", Gate("size_ratio", "<=", 0.3, None, True)),
        (" accuracy > 0.9 ", Gate("accuracy", ">", 0.9, None, False)),
        ("model_int8 : latency_ms < 2.5", Gate("latency_ms", "<", 2.5, "model_int8", False)),
        ("accuracy>=95%", Gate("accuracy", ">=", 0.95, None, False)),
        ("size_bytes==1e3", Gate("size_bytes", "==", 1000.0, None, False)),
        ("latency_ms.p90<=.5", Gate("latency_p90_ms", "<=", 0.5, None, False)),
    ],
)
def test_parse_gate(text, expected):
    gate = parse_gate(text)
    assert (gate.metric, gate.op, gate.variant, gate.skip_reference) == (
        expected.metric,
        expected.op,
        expected.variant,
        expected.skip_reference,
    )
    assert gate.limit == pytest.approx(expected.limit)
    assert gate.text == text


@pytest.mark.parametrize(
    "text, message",
    [
        ("accuracy=>0.9", "expected [VARIANT:]METRIC OP NUMBER"),
        ("accuracy>=", "expected [VARIANT:]METRIC OP NUMBER"),
        ("accuracy >= high", "expected [VARIANT:]METRIC OP NUMBER"),
        ("acc>=0.9", "unknown metric 'acc'"),
        ("int8:latency_ms.max<1", "unknown metric 'latency_ms.max'"),
        ("", "expected [VARIANT:]METRIC OP NUMBER"),
    ],
)
def test_bad_gate_names_the_problem(text, message):
    with pytest.raises(GateSyntaxError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_gate(text)


def test_max_accuracy_drop_is_a_non_reference_delta_gate():
    gate = max_accuracy_drop_gate(0.02)
    assert (gate.metric, gate.op, gate.limit, gate.variant, gate.skip_reference) == (
        "accuracy_delta",
        ">=",
        -0.02,
        None,
        True,
    )
    assert parse_gates(["accuracy>0.5"], 0.01)[0].metric == "accuracy_delta"
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(GateSyntaxError, match="fraction in"):
            max_accuracy_drop_gate(bad)


def test_comparisons_allow_rounding_slack_but_not_more():
    gate = parse_gate("accuracy_delta>=-0.01")
    assert gate.passes(0.95 - 0.96)  # -0.010000000000000009
    assert not gate.passes(-0.0101)
    assert parse_gate("accuracy==0.3").passes(0.1 + 0.2)
    assert not parse_gate("accuracy>0.3").passes(0.3)
    assert parse_gate("accuracy<0.31").passes(0.3)
    assert not gate.passes(None)
    assert not gate.passes(float("nan"))


def _variants():
    return [
        VariantResult(
            name="fp32",
            size_bytes=100,
            size_ratio=1.0,
            accuracy=0.9,
            accuracy_delta=0.0,
            latency_ms=LatencyStats(2.0, 3.0, 2.1, 0.1, 1.9, 10),
            speedup=1.0,
        ),
        VariantResult(
            name="int8",
            size_bytes=25,
            size_ratio=0.25,
            accuracy=0.88,
            accuracy_delta=-0.02,
            latency_ms=LatencyStats(1.0, 1.5, 1.1, 0.1, 0.9, 10),
            speedup=2.0,
        ),
        VariantResult(name="broken", error="cannot load"),
    ]


def test_unqualified_relative_gates_skip_the_reference_and_fail_unknown_values():
    results = check_gates([parse_gate("size_ratio<=0.5")], _variants(), "fp32")
    assert [(r.variant, r.value, r.passed) for r in results] == [("int8", 0.25, True), ("broken", None, False)]


def test_unqualified_absolute_gates_check_the_reference_too():
    results = check_gates([parse_gate("accuracy>=0.89")], _variants(), "fp32")
    assert [(r.variant, r.passed) for r in results] == [("fp32", True), ("int8", False), ("broken", False)]


def test_named_gates_check_only_that_variant_even_the_reference():
    results = check_gates(
        [parse_gate("fp32:latency_ms<=2"), parse_gate("int8:latency_ms.p90<1.5"), parse_gate("gone:accuracy>0")],
        _variants(),
        "fp32",
    )
    assert [(r.variant, r.metric, r.value, r.passed) for r in results] == [
        ("fp32", "latency_ms", 2.0, True),
        ("int8", "latency_p90_ms", 1.5, False),
        ("gone", "accuracy", None, False),
    ]
    with pytest.raises(GateSyntaxError, match="names variant 'gone', but the variants are 'fp32', 'int8'"):
        check_variant_names([parse_gate("gone:accuracy>0")], ["fp32", "int8"])


def test_metric_value_reads_latency_median():
    assert metric_value(_variants()[1], "latency_ms") == 1.0
    assert metric_value(_variants()[2], "latency_ms") is None
    assert metric_value(_variants()[1], "size_bytes") == 25.0


# -------------------------------------------------------------------------------------------------- via the CLI


def test_failing_gate_exits_3_with_the_report_written(tmp_path, tflite_files, data_dir):
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(
        cli,
        [
            "-q",
            "evaluate",
            str(tflite_files["fp32"]),
            str(tflite_files["int8"]),
            "--data",
            str(data_dir / "test.npz"),
            "--runs",
            "0",
            "--report",
            str(report_path),
            "--gate",
            "cnn_int8:size_ratio<=0.01",
            "--max-accuracy-drop",
            "0.05",
        ],
    )
    assert result.exit_code == 3, result.output
    assert result.stderr.strip().splitlines() == [
        f"Gate failed: cnn_int8: size_ratio <= 0.01 (value {json.loads(report_path.read_text())['variants'][1]['size_ratio']:.6g}) FAILED"
    ]
    doc = json.loads(report_path.read_text())
    assert doc["passed"] is False
    assert [(g["variant"], g["metric"], g["passed"]) for g in doc["gates"]] == [
        ("cnn_int8", "accuracy_delta", True),
        ("cnn_int8", "size_ratio", False),
    ]
    # the table/data still went to stdout before the exit
    assert "cnn_int8" in result.stdout


def test_passing_gates_exit_0(tflite_files, data_dir):
    result = CliRunner().invoke(
        cli,
        [
            "-q",
            "evaluate",
            str(tflite_files["fp32"]),
            str(tflite_files["int8"]),
            "--data",
            str(data_dir / "test.npz"),
            "--runs",
            "0",
            "--format",
            "json",
            "--max-accuracy-drop",
            "0.05",
            "--gate",
            "accuracy>=0.9",
            "--gate",
            "cnn_int8:agreement>=90%",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["passed"] is True
    assert [(g["variant"], g["metric"]) for g in doc["gates"]] == [
        ("cnn_int8", "accuracy_delta"),
        ("cnn_fp32", "accuracy"),
        ("cnn_int8", "accuracy"),
        ("cnn_int8", "agreement"),
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--gate", "accuracy=>0.9"], "cannot read gate 'accuracy=>0.9'"),
        (["--gate", "nope:accuracy>=0.9"], "gate 'nope:accuracy>=0.9' names variant 'nope'"),
        (["--max-accuracy-drop", "5"], "--max-accuracy-drop takes a fraction in [0, 1]"),
    ],
)
def test_bad_gates_are_usage_errors(tflite_files, args, message):
    result = CliRunner().invoke(cli, ["evaluate", str(tflite_files["fp32"]), "--runs", "0", *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stdout == ""

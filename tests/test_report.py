"""The report (SPEC §4): exact keys, types, fractions in [0, 1], and the JSON/CSV/Markdown renderers."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from tflite_opt.cli import cli
from tflite_opt.measure.latency import LatencyStats
from tflite_opt.reporting.report import (
    CSV_COLUMNS,
    GateResult,
    Report,
    Settings,
    VariantResult,
    collect_environment,
    format_for_path,
    render_text,
    to_markdown,
    variants_from_json,
)

TOP_KEYS = {"schema_version", "tool", "environment", "settings", "reference", "variants", "gates", "passed", "pipeline"}
ENV_KEYS = {"python", "tensorflow", "ai_edge_litert", "tfmot", "platform"}
SETTINGS_KEYS = {"threads", "xnnpack", "warmup", "runs", "num_samples"}
VARIANT_TYPES = {
    "name": (str,),
    "mode": (str, type(None)),
    # null when unknown (SPEC §4): a variant that was never made has no file
    "path": (str, type(None)),
    "sha256": (str, type(None)),
    "size_bytes": (int, type(None)),
    "gzip_bytes": (int, type(None)),
    "size_ratio": (float, type(None)),
    "accuracy": (float, type(None)),
    "top5": (float, type(None)),
    "accuracy_delta": (float, type(None)),
    "agreement": (float, type(None)),
    "sqnr_db": (float, type(None)),
    "latency_ms": (dict, type(None)),
    "speedup": (float, type(None)),
    "sparsity": (float, type(None)),
    "error": (str, type(None)),
    # schema version 2
    "backend": (str, type(None)),
    "integer_only": (bool, type(None)),
    "transforms": (list,),
    "arena_bytes": (int, type(None)),
    "cached": (bool,),
}
LATENCY_TYPES = {"median": float, "p90": float, "mean": float, "std": float, "min": float, "runs": int}
GATE_TYPES = {
    "variant": (str,),
    "metric": (str,),
    "op": (str,),
    "limit": (float,),
    "value": (float, type(None)),
    "passed": (bool,),
}
FRACTIONS = ("accuracy", "top5", "agreement", "sparsity")


def _is(value, types) -> bool:
    # bool is an int subclass: an int field must not be a bool, a float field may not be an int either.
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def assert_report_schema(doc: dict) -> None:
    """Fail unless ``doc`` is exactly a SPEC §4 report (keys, types, fraction ranges)."""
    assert set(doc) == TOP_KEYS
    assert doc["schema_version"] == 2
    assert _is(doc["pipeline"], (str, type(None)))
    assert doc["tool"]["name"] == "tflite-opt" and isinstance(doc["tool"]["version"], str)
    assert set(doc["tool"]) == {"name", "version"}
    assert set(doc["environment"]) == ENV_KEYS
    assert isinstance(doc["environment"]["python"], str) and isinstance(doc["environment"]["ai_edge_litert"], str)
    assert isinstance(doc["environment"]["platform"], str)
    for key in ("tensorflow", "tfmot"):
        assert _is(doc["environment"][key], (str, type(None)))
    assert set(doc["settings"]) == SETTINGS_KEYS
    s = doc["settings"]
    assert _is(s["threads"], (int,)) and _is(s["xnnpack"], (bool,)) and _is(s["warmup"], (int,))
    assert _is(s["runs"], (int,)) and _is(s["num_samples"], (int, type(None)))
    assert _is(doc["reference"], (str, type(None)))
    names = [v["name"] for v in doc["variants"]]
    assert doc["reference"] is None or doc["reference"] in names
    for variant in doc["variants"]:
        assert set(variant) == set(VARIANT_TYPES), set(variant) ^ set(VARIANT_TYPES)
        for key, types in VARIANT_TYPES.items():
            assert _is(variant[key], types), (key, variant[key])
        for key in FRACTIONS:
            if variant[key] is not None:
                assert 0.0 <= variant[key] <= 1.0, (key, variant[key])
        if variant["accuracy_delta"] is not None:
            assert -1.0 <= variant["accuracy_delta"] <= 1.0
        if variant["latency_ms"] is not None:
            assert set(variant["latency_ms"]) == set(LATENCY_TYPES)
            for key, type_ in LATENCY_TYPES.items():
                assert _is(variant["latency_ms"][key], (type_,)), (key, variant["latency_ms"][key])
            lat = variant["latency_ms"]
            assert 0 < lat["min"] <= lat["median"] <= lat["p90"] and lat["runs"] >= 1
        if variant["sha256"]:
            assert len(variant["sha256"]) == 64
    assert isinstance(doc["gates"], list)
    for gate in doc["gates"]:
        assert set(gate) == set(GATE_TYPES)
        for key, types in GATE_TYPES.items():
            assert _is(gate[key], types), (key, gate[key])
        assert gate["op"] in (">=", "<=", ">", "<", "==")
    assert _is(doc["passed"], (bool,))
    # The whole document must survive strict JSON (no NaN/Infinity).
    json.loads(json.dumps(doc, allow_nan=False))


def _sample_report() -> Report:
    latency = LatencyStats(median=1.5, p90=2.0, mean=1.6, std=0.2, min=1.2, runs=10)
    reference = VariantResult(
        name="fp32",
        mode="fp32",
        path="a/fp32.tflite",
        sha256="0" * 64,
        size_bytes=1000,
        gzip_bytes=900,
        size_ratio=1.0,
        accuracy=0.9,
        top5=1.0,
        accuracy_delta=0.0,
        agreement=1.0,
        latency_ms=latency,
        speedup=1.0,
        sparsity=0.0,
    )
    int8 = VariantResult(
        name="int8",
        mode="int8",
        path="a/int8.tflite",
        sha256="1" * 64,
        size_bytes=250,
        gzip_bytes=200,
        size_ratio=0.25,
        accuracy=0.88,
        top5=None,
        accuracy_delta=-0.02,
        agreement=0.95,
        sqnr_db=float("inf"),
        latency_ms=LatencyStats(0.5, 0.6, 0.5, 0.05, 0.4, 10),
        speedup=3.0,
        sparsity=float("nan"),
    )
    broken = VariantResult(name="bad|name", path="bad.tflite", error="not a valid .tflite file")
    return Report(
        settings=Settings(threads=1, xnnpack=True, warmup=2, runs=10, num_samples=100),
        reference="fp32",
        variants=[reference, int8, broken],
        gates=[GateResult("int8", "accuracy_delta", ">=", -0.01, -0.02, False)],
    )


def test_sample_report_matches_schema_and_turns_non_finite_into_null():
    doc = _sample_report().to_json_dict()
    assert_report_schema(doc)
    int8 = doc["variants"][1]
    assert int8["sqnr_db"] is None and int8["sparsity"] is None
    assert int8["latency_ms"] == {"median": 0.5, "p90": 0.6, "mean": 0.5, "std": 0.05, "min": 0.4, "runs": 10}
    assert doc["passed"] is False


def test_passed_needs_every_gate_and_no_error():
    report = _sample_report()
    assert report.passed is False
    report.variants = report.variants[:2]
    assert report.passed is False  # the gate still fails
    report.gates[0].passed = True
    assert report.passed is True
    assert report.failed_gates == [] and report.failed_variants == []


def test_environment_is_read_without_importing_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys, json; from tflite_opt.reporting.report import collect_environment; env = collect_environment(); "
        "print(json.dumps([env, 'tensorflow' in sys.modules]))"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root).stdout
    env, imported = json.loads(out)
    assert imported is False
    assert set(env) == ENV_KEYS
    assert env["tensorflow"] is not None and env["tensorflow"].startswith("2.")
    assert env["ai_edge_litert"] == collect_environment()["ai_edge_litert"] != "unknown"


def test_csv_has_one_row_per_variant_with_flattened_latency():
    text = render_text(_sample_report(), "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0].keys()) == list(CSV_COLUMNS)
    assert [r["name"] for r in rows] == ["fp32", "int8", "bad|name"]
    assert rows[1]["latency_median_ms"] == "0.5" and rows[1]["latency_runs"] == "10"
    assert rows[1]["size_ratio"] == "0.25" and rows[1]["sqnr_db"] == ""
    assert rows[2]["error"] == "not a valid .tflite file"


def test_markdown_table_escapes_pipes_and_lists_gates():
    text = to_markdown(_sample_report())
    lines = text.splitlines()
    assert lines[0].startswith("| variant | mode | size |") and lines[0].endswith("| error |")
    # header, separator and three rows all have the same number of cells
    cells = [line.replace("\\|", "").count("|") for line in lines[:5]]
    assert len(set(cells)) == 1, lines[:5]
    assert "bad\\|name" in text
    assert "| int8 | int8 | 250 B | 0.25× | 88.00% | -2.00 pp | 95.00% | — | 0.5 ms | 3.00× |" in text
    assert "✘ int8: accuracy_delta >= -0.01 (value -0.02) FAILED" in text


def test_report_format_follows_the_suffix():
    assert format_for_path("out/report.json") == "json"
    assert format_for_path("report.CSV") == "csv"
    assert format_for_path("report.md") == "markdown"
    assert format_for_path("report") == "json"
    with pytest.raises(ValueError, match="unknown report format"):
        render_text(_sample_report(), "xml")


def test_variants_round_trip_through_json():
    doc = _sample_report().to_json_dict()
    rebuilt = variants_from_json(doc["variants"])
    assert [v.to_json_dict() for v in rebuilt] == doc["variants"]
    assert math.isclose(rebuilt[1].latency_ms.p90, 0.6)


def test_evaluate_report_file_matches_schema(tmp_path, tflite_files, data_dir):
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(
        cli,
        [
            "-q",
            "evaluate",
            str(tflite_files["fp32"]),
            str(tflite_files["int8"]),
            str(tflite_files["float16"]),
            "--data",
            str(data_dir / "test.npz"),
            "--runs",
            "5",
            "--warmup",
            "1",
            "--report",
            str(report_path),
            "--gate",
            "size_ratio<=0.6",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(report_path.read_text())
    assert_report_schema(doc)
    assert doc["reference"] == "cnn_fp32"
    assert doc["settings"] == {"threads": 1, "xnnpack": True, "warmup": 1, "runs": 5, "num_samples": 397}
    by_name = {v["name"]: v for v in doc["variants"]}
    assert by_name["cnn_fp32"]["size_ratio"] == 1.0 and by_name["cnn_fp32"]["accuracy_delta"] == 0.0
    assert by_name["cnn_int8"]["mode"] == "int8" and by_name["cnn_float16"]["mode"] == "float16"
    assert by_name["cnn_int8"]["size_ratio"] < 0.35
    assert by_name["cnn_int8"]["latency_ms"]["runs"] == 5
    assert by_name["cnn_int8"]["gzip_bytes"] < by_name["cnn_int8"]["size_bytes"]
    assert [g["variant"] for g in doc["gates"]] == ["cnn_int8", "cnn_float16"]
    assert doc["passed"] is True


# ------------------------------------------------------------------------------------------------------ plotting


def test_plot_tradeoff_writes_a_png(tmp_path):
    import subprocess
    import sys

    from PIL import Image

    from tflite_opt.reporting.plotting import plot_tradeoff

    path = plot_tradeoff(_sample_report(), tmp_path / "plots" / "tradeoff.png")
    assert path == tmp_path / "plots" / "tradeoff.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        assert image.size == (900, 600)  # 7.5 x 5 inches at 120 dpi
    assert [p.name for p in path.parent.iterdir()] == ["tradeoff.png"]  # no temporary file left
    # the object API with the Agg canvas: no pyplot, no global backend
    code = (
        "import sys, tests.test_report as t; from tflite_opt.reporting.plotting import plot_tradeoff; "
        f"plot_tradeoff(t._sample_report(), {str(tmp_path / 'b.png')!r}); print('matplotlib.pyplot' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root).stdout
    assert out.strip() == "False"


def test_plot_falls_back_to_agreement_and_size(tmp_path):
    from tflite_opt.errors import EvaluationError
    from tflite_opt.reporting.plotting import _axes_values, plot_tradeoff

    report = _sample_report()
    for variant in report.variants:
        variant.accuracy = None
        variant.latency_ms = None
    x_label, y_label, points = _axes_values(report)
    assert (x_label, y_label) == ("file size (KB)", "top-1 agreement with the reference")
    assert [(v.name, x) for v, x, _ in points] == [("fp32", 1000 / 1024), ("int8", 250 / 1024)]
    assert plot_tradeoff(report, tmp_path / "p.png").stat().st_size > 1000
    for variant in report.variants:
        variant.agreement = None
    with pytest.raises(EvaluationError, match="nothing to plot"):
        plot_tradeoff(report, tmp_path / "q.png")
    assert not (tmp_path / "q.png").exists()

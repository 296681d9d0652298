"""``tflite-opt table``: several reports pivoted into the TensorFlow Lite docs' layout, one row per model."""

from __future__ import annotations

import csv
import io
import json

from click.testing import CliRunner

from tflite_opt.cli import cli
from tflite_opt.reporting.report import LatencyStats, Report, Settings, VariantResult


def run(*args, env=None):
    return CliRunner().invoke(cli, ["-q", *map(str, args)], env=env)


def _variant(name, accuracy, latency, size, error=None):
    return VariantResult(
        name=name,
        mode=name,
        size_bytes=size,
        accuracy=accuracy,
        sha256="0" * 64,
        latency_ms=None if latency is None else LatencyStats(latency, latency, latency, 0.0, latency, 3),
        error=error,
    )


def write_reports(tmp_path):
    """Two models as compare would report them: ``mobilenet`` (fp32, int8, qat_int8) and ``digits`` (fp32, int8,
    float16), each in its own folder."""
    mobilenet = Report(
        Settings(runs=3),
        "fp32",
        [
            _variant("fp32", 0.7110, 12.5, 14_000_000),
            _variant("int8", 0.7010, 4.25, 3_600_000),
            _variant("qat_int8", 0.7080, 4.20, 3_600_000),
        ],
    )
    digits = Report(
        Settings(runs=3),
        "fp32",
        [
            _variant("fp32", 0.9748, 0.0384, 157_286),
            _variant("int8", 0.9723, 0.0213, 48_230),
            _variant("float16", None, None, 0, error="conversion failed"),
        ],
    )
    paths = []
    for name, report in (("mobilenet", mobilenet), ("digits", digits)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "report.json").write_text(json.dumps(report.to_json_dict()))
        paths.append(folder / "report.json")
    return paths


EXPECTED_MARKDOWN = """\
| model | accuracy original | accuracy int8 | accuracy qat_int8 | accuracy float16 | latency original | latency int8 | latency qat_int8 | latency float16 | size original | size int8 | size qat_int8 | size float16 |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
| mobilenet | 71.10% | 70.10% | 70.80% | — | 12.50 ms | 4.25 ms | 4.20 ms | — | 13.4 MB | 13.4 MB → 3.4 MB | 13.4 MB → 3.4 MB | — |
| digits | 97.48% | 97.23% | — | — | 0.0384 ms | 0.0213 ms | — | — | 153.6 KB | 153.6 KB → 47.1 KB | — | — |
"""


def test_markdown_has_one_row_per_model_with_the_docs_columns(tmp_path):
    result = run("table", *write_reports(tmp_path), "--format", "markdown")
    assert result.exit_code == 0, result.output
    assert result.stdout == EXPECTED_MARKDOWN


def test_csv_holds_the_raw_numbers(tmp_path):
    result = run("table", *write_reports(tmp_path), "--format", "csv", "--name", "MobileNetV2", "--name", "digits")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["model"] for r in rows] == ["MobileNetV2", "digits"]
    assert rows[0]["accuracy_qat_int8"] == "0.708" and rows[0]["size_bytes_int8"] == "3600000"
    assert rows[1]["latency_median_ms_original"] == "0.0384" and rows[1]["accuracy_float16"] == ""


def test_table_and_html_formats(tmp_path):
    paths = write_reports(tmp_path)
    table = run("table", *paths)
    assert table.exit_code == 0, table.output
    lines = [line for line in table.stdout.splitlines() if "│" in line]
    assert [line.split("│")[1].strip() for line in lines] == ["mobilenet", "digits"]
    page = run("table", *paths, "--format", "html")
    assert page.exit_code == 0
    assert page.stdout.startswith("<!DOCTYPE html>") and '<table class="cross">' in page.stdout
    assert "<td>13.4 MB → 3.4 MB</td>" in page.stdout and "<script" not in page.stdout


def test_bad_inputs(tmp_path):
    paths = write_reports(tmp_path)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = run("table", paths[0], broken)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {broken} is not a report.json (JSONDecodeError:")
    result = run("table", *paths, "--name", "only-one")
    assert result.exit_code == 2
    assert "give --name once per REPORT.json (2), or not at all" in result.stderr


def test_a_pipeline_with_two_models_writes_the_table_itself(keras3_cnn_path, data_dir, tmp_path):
    """Two [[model]] entries: one folder and report per model, and table.md across them (the second model's
    files come from the cache: same bytes, same options)."""
    pipeline = tmp_path / "two.toml"
    pipeline.write_text(f"""
[data]
eval = "{data_dir / "test.npz"}"

[[model]]
name = "cnn_a"
path = "{keras3_cnn_path}"

[[model]]
name = "cnn_b"
path = "{keras3_cnn_path}"

[[variant]]
name = "fp32"

[[variant]]
name = "dynamic"

[evaluation]
runs = 2
warmup = 1

[output]
dir = "out"
""")
    result = run("run", pipeline)
    assert result.exit_code == 0, result.output
    for name in ("cnn_a", "cnn_b"):
        report = json.loads((tmp_path / "out" / name / "report.json").read_text())
        assert [v["name"] for v in report["variants"]] == ["fp32", "dynamic"]
    second = json.loads((tmp_path / "out" / "cnn_b" / "report.json").read_text())
    assert [v["cached"] for v in second["variants"]] == [True, True]
    table = (tmp_path / "out" / "table.md").read_text().splitlines()
    assert table[0] == (
        "| model | accuracy original | accuracy dynamic | latency original | latency dynamic "
        "| size original | size dynamic |"
    )
    assert [line.split("|")[1].strip() for line in table[2:]] == ["cnn_a", "cnn_b"]
    again = run(
        "table",
        tmp_path / "out" / "cnn_a" / "report.json",
        tmp_path / "out" / "cnn_b" / "report.json",
        "--format",
        "markdown",
    )
    assert again.stdout.splitlines() == table

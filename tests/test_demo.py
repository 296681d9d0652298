"""``tflite-opt demo``: offline training plus a five-mode comparison, end to end."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tflite_opt.cli import cli


@pytest.mark.slow
def test_demo_trains_and_prints_the_five_mode_table(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["demo", "--output-dir", str(out), "--epochs", "3", "--runs", "3"])
    assert result.exit_code == 0, result.output
    for mode in ("fp32", "dynamic", "float16", "int8", "int16x8"):
        assert f"│ {mode}" in result.stdout
        assert (out / f"{mode}.tflite").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["reference"] == "fp32"
    by_name = {v["name"]: v for v in report["variants"]}
    assert by_name["fp32"]["accuracy"] > 0.85
    assert by_name["int8"]["size_ratio"] < 0.35
    assert (out / "model.keras").exists() and (out / "tradeoff.png").exists()
    assert "float accuracy" in result.stderr

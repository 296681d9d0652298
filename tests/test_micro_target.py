"""``evaluate --target micro`` and ``compare --target micro`` (issue #11, SPEC §2/§4/§9): ``arena`` and ``flash``
columns, ``arena_bytes`` in report.json, ``--gate "arena_bytes<=N"``, and variants TFLM cannot run reported, not
fatal."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tflite_opt.cli import cli

NO_LATENCY = ["--runs", "0"]
INTEGER_VARIANTS = ("int8", "int16x8", "int8_quantizer")


def run(*args):
    return CliRunner().invoke(cli, ["-q", *map(str, args)], env={"COLUMNS": "250"})


def test_evaluate_target_micro_reports_the_arena_measure_micro_finds(tflite_files, data_dir):
    from tflite_opt.measure.micro import measure_micro

    path, data = tflite_files["int8"], data_dir / "test.npz"
    result = run("evaluate", path, "--data", data, "--target", "micro", *NO_LATENCY, "--format", "json")
    assert result.exit_code == 0, result.output
    variant = json.loads(result.stdout)["variants"][0]
    expected = measure_micro(path.read_bytes(), path=str(path), data=str(data))
    assert expected.arena_bytes is not None and variant["arena_bytes"] == expected.arena_bytes
    assert variant["size_bytes"] == expected.flash_bytes == path.stat().st_size

    table = run("evaluate", path, "--data", data, "--target", "micro", *NO_LATENCY)
    assert table.exit_code == 0, table.output
    header = next(line for line in table.stdout.splitlines() if "variant" in line)
    assert "arena" in header and "flash" in header
    assert f"{expected.arena_bytes:,} B" in table.stdout and f"{expected.flash_bytes:,} B" in table.stdout
    assert "host (64-bit)" in table.stdout


def test_host_target_is_the_default_and_unchanged(tflite_files):
    result = run("evaluate", tflite_files["int8"], *NO_LATENCY, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["variants"][0]["arena_bytes"] is None
    table = run("evaluate", tflite_files["int8"], *NO_LATENCY)
    assert "arena" not in table.stdout and "flash" not in table.stdout


def test_arena_gate_passes_and_fails_with_exit_3(tflite_files, tmp_path):
    path = tflite_files["int8"]
    passed = run("evaluate", path, "--target", "micro", *NO_LATENCY, "--gate", "arena_bytes<=65536")
    assert passed.exit_code == 0, passed.output
    report = tmp_path / "report.json"
    failed = run("evaluate", path, "--target", "micro", *NO_LATENCY, "--gate", "arena_bytes<=1024", "--report", report)
    assert failed.exit_code == 3, failed.output
    assert "arena_bytes <= 1024" in failed.output and "FAILED" in failed.output
    gate = json.loads(report.read_text())["gates"][0]  # the report is still written
    assert gate["metric"] == "arena_bytes" and gate["value"] > 1024 and gate["passed"] is False


def test_variant_tflm_cannot_run_is_noted_and_its_arena_gate_unknown(tflite_files):
    """A dynamic-range (hybrid) file: n/a with TFLM's reason, the others measured, exit 0 without a gate; an
    arena gate on it is unknown, hence failed (exit 3) with the reason. A float file is measured and flagged."""
    files = [tflite_files["fp32"], tflite_files["dynamic"], tflite_files["int8"]]
    result = run("evaluate", *files, "--target", "micro", *NO_LATENCY, "--format", "json")
    assert result.exit_code == 0, result.output
    arenas = {v["name"]: v["arena_bytes"] for v in json.loads(result.stdout)["variants"]}
    assert arenas["cnn_dynamic"] is None and arenas["cnn_int8"] > 0 and arenas["cnn_fp32"] > arenas["cnn_int8"]
    assert all(v["error"] is None for v in json.loads(result.stdout)["variants"])

    table = run("evaluate", *files, "--target", "micro", *NO_LATENCY, "--gate", "arena_bytes<=1048576")
    assert table.exit_code == 3, table.output
    text = " ".join(table.stdout.split())
    assert "n/a" in text and "cnn_dynamic: ops TensorFlow Lite Micro cannot run" in text and "Hybrid" in text
    assert "cnn_fp32: float on a microcontroller: consider int8" in text
    assert "✔ cnn_int8: arena_bytes" in text and "✘ cnn_dynamic: arena_bytes <= 1.04858e+06 (value n/a:" in text


@pytest.fixture(scope="module")
def compared_on_micro(keras3_cnn_path, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare_micro") / "out"
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
        "fp32,dynamic,int8,int16x8,quantizer:int8,int4",
        "--target",
        "micro",
        "--gate",
        "arena_bytes<=1048576",
        *NO_LATENCY,
    )
    return result, out


def test_compare_target_micro_measures_every_integer_variant(compared_on_micro):
    result, out = compared_on_micro
    # the hybrid rows (dynamic, int4) cannot run in TFLM: their arena gate is unknown, so exit 3
    assert result.exit_code == 3, result.output
    variants = {v["name"]: v for v in json.loads((out / "report.json").read_text())["variants"]}
    markdown = (out / "report.md").read_text()
    assert markdown.splitlines()[0].endswith("| arena | flash |")
    for name in INTEGER_VARIANTS:
        arena, flash = variants[name]["arena_bytes"], variants[name]["size_bytes"]
        assert isinstance(arena, int) and arena > 0, name
        assert flash == (out / f"{name}.tflite").stat().st_size
        row = next(line for line in markdown.splitlines() if line.startswith(f"| {name} |"))
        assert row.endswith(f"| {arena:,} B | {flash:,} B |"), row
    assert variants["fp32"]["arena_bytes"] > variants["int8"]["arena_bytes"]
    assert variants["dynamic"]["arena_bytes"] is None and variants["int4"]["arena_bytes"] is None
    gates = {g["variant"]: g for g in json.loads((out / "report.json").read_text())["gates"]}
    assert all(gates[name]["passed"] for name in (*INTEGER_VARIANTS, "fp32"))
    assert gates["dynamic"]["value"] is None and not gates["dynamic"]["passed"]
    assert "int4: ops TensorFlow Lite Micro cannot run" in markdown
    assert "arena" in (out / "report.html").read_text()

"""Tables fit 80, 100 and 160 columns without cutting a cell (issue #15), and pruned/clustered rows show what they
gain: the gzip size and its ratio, with the file's real mode beside the technique."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tflite_opt.cli import cli
from tflite_opt.measure.evaluation import EvaluationOptions, VariantSource, build_report, evaluate_variants
from tflite_opt.reporting.html import variants_table
from tflite_opt.reporting.report import report_table, to_markdown, variants_from_json

WIDTHS = (80, 100, 160)
BOX = "┃│┏┡└"


def invoke(*args, columns: int):
    return CliRunner().invoke(cli, [str(a) for a in args], env={"COLUMNS": str(columns)})


def table_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line[:1] in BOX]


def assert_fits(stdout: str, width: int, names) -> None:
    """No cell is cut ("…"), every table line fits, and every variant name is shown whole."""
    assert "…" not in stdout, stdout
    lines = table_lines(stdout)
    assert lines and max(len(line) for line in lines) <= width, stdout
    for name in names:
        assert any(f"│ {name} " in line for line in lines), (name, stdout)


@pytest.mark.parametrize("width", WIDTHS)
def test_evaluate_table_fits_the_terminal(tflite_files, data_dir, tmp_path, width):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64 + b"not a flatbuffer" * 20)
    files = [tflite_files[m] for m in ("fp32", "dynamic", "float16", "int8")]
    result = invoke("evaluate", *files, junk, "--data", data_dir / "test.npz", "--runs", "3", columns=width)
    assert result.exit_code == 1  # the junk file failed; the others are measured
    assert_fits(result.stdout, width, ["cnn_fp32 (ref)", "cnn_dynamic", "cnn_float16", "cnn_int8", "junk"])
    assert ("--wide shows all" in result.stdout) == (width < 160)  # 160 columns hold every column
    if width == 80:  # the error no longer fits as a column, even wrapped: it is listed under the table, whole
        assert f"junk: error: {junk} is not a valid .tflite file" in result.stdout
        assert "error listed above to fit 80 columns" in result.stdout
    else:  # the error column wraps; no other cell does
        assert "error" in table_lines(result.stdout)[1]
    wide = CliRunner().invoke(
        cli, ["--wide", "evaluate", *map(str, files), "--data", str(data_dir / "test.npz"), "--runs", "3"],
        env={"COLUMNS": str(width)},
    )  # fmt: skip
    assert all(h in table_lines(wide.stdout)[1] for h in ("agreement", "SQNR", "speedup")) and "…" not in wide.stdout


@pytest.fixture(scope="module")
def compare_report(keras3_cnn_path, data_dir, tmp_path_factory):
    """One compare run (fp32, dynamic, int8) at 80 columns: its stdout and report.json."""
    out = tmp_path_factory.mktemp("cmp") / "out"
    result = invoke(
        "compare", keras3_cnn_path, "--data", data_dir / "test.npz", "--representative-data", data_dir / "calib.npz",
        "--modes", "fp32,dynamic,int8", "--output-dir", out, "--runs", "3", "--warmup", "1", columns=80,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return result.stdout, json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("width", WIDTHS)
def test_compare_table_fits_the_terminal(compare_report, width):
    from rich.console import Console

    from tflite_opt.reporting.render import natural_width, to_rich

    stdout, doc = compare_report
    assert_fits(stdout, 80, ["fp32 (ref)", "dynamic", "int8"])
    assert "hidden to fit 80 columns: agreement, SQNR" in stdout
    # The same report drawn at each width (as compare draws it).
    report = build_report_from(doc)
    drawn = to_rich(report_table(report), width=width)
    console = Console(width=max(width, natural_width(drawn)), color_system=None, record=True, soft_wrap=True)
    console.print(drawn)
    assert_fits(console.export_text(), width, ["fp32 (ref)", "dynamic", "int8"])


def build_report_from(doc):
    from tflite_opt.reporting.report import Report, Settings

    return Report(
        settings=Settings(**doc["settings"]), reference=doc["reference"], variants=variants_from_json(doc["variants"])
    )


def test_clustered_and_pruned_rows_show_gzip_and_the_real_mode(tflite_files, data_dir):
    sources = [
        VariantSource("fp32", str(tflite_files["fp32"])),
        VariantSource("clustered_16", str(tflite_files["fp32"]), mode="cluster"),
        VariantSource("qat_int8", str(tflite_files["int8"]), mode="qat"),
    ]
    options = EvaluationOptions(runs=0)
    report = build_report(evaluate_variants(sources, data_dir / "test.npz", options=options), options)
    table = report_table(report)
    assert list(table.headers[:6]) == ["variant", "mode", "size", "vs ref", "gzip", "gzip vs ref"]
    rows = {row[0]: row for row in table.rows}
    fp32 = report.variant("fp32")
    assert rows["fp32 (ref)"][1] == "fp32" and rows["fp32 (ref)"][5] == "1.00×"
    assert rows["clustered_16"][1] == "fp32 + cluster" and rows["qat_int8"][1] == "int8 + qat"
    int8 = report.variant("qat_int8")
    assert rows["qat_int8"][5] == f"{int8.gzip_bytes / fp32.gzip_bytes:.2f}×"
    assert "| variant | mode | size | vs ref | gzip | gzip vs ref |" in to_markdown(report)
    assert "<th>vs ref</th><th>gzip</th><th>gzip vs ref</th>" in variants_table(report)
    assert json.loads(json.dumps(report.to_json_dict()))["variants"][1]["mode"] == "cluster"  # JSON: the technique
    # No pruned or clustered row: no gzip columns.
    plain = build_report(evaluate_variants(sources[::2], data_dir / "test.npz", options=options), options)
    assert "gzip" not in report_table(plain).headers and report_table(plain).rows[1][1] == "int8 + qat"


@pytest.mark.parametrize("width", WIDTHS)
def test_a_clustered_row_fits_too(tflite_files, width):
    from rich.console import Console

    from tflite_opt.reporting.render import natural_width, to_rich

    sources = [
        VariantSource("fp32", str(tflite_files["fp32"])),
        VariantSource("clustered_16", str(tflite_files["fp32"]), mode="cluster"),
        VariantSource("pruned_50", str(tflite_files["dynamic"]), mode="prune"),
    ]
    options = EvaluationOptions(runs=3, warmup=1)
    report = build_report(evaluate_variants(sources, None, options=options), options)
    drawn = to_rich(report_table(report), width=width)
    console = Console(width=max(width, natural_width(drawn)), color_system=None, record=True, soft_wrap=True)
    console.print(drawn)
    text = console.export_text()
    assert_fits(text, width, ["fp32 (ref)", "clustered_16", "pruned_50"])
    assert "fp32 + cluster" in text and "gzip" in table_lines(text)[1]

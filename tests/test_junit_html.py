"""JUnit XML for gates, the self-contained HTML report (rendered in headless Chromium), and the plot's labels."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from click.testing import CliRunner

from tflite_opt.cli import cli
from tflite_opt.reporting.report import GateResult, LatencyStats, Report, Settings, VariantResult

FAST = ["--runs", "3", "--warmup", "1"]
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def run(*args, env=None):
    return CliRunner().invoke(cli, ["-q", *map(str, args)], env=env)


def _variant(name, accuracy, latency, size, error=None):
    return VariantResult(
        name=name,
        mode=name,
        size_bytes=size,
        accuracy=accuracy,
        sha256="0" * 64,
        error=error,
        latency_ms=None if latency is None else LatencyStats(latency, latency, latency, 0.0, latency, 3),
    )


def crowded_report() -> Report:
    """fp32, dynamic, float16 and a pruned file at nearly the same accuracy and latency (their labels used to
    print on top of each other), plus two that stand apart."""
    return Report(
        Settings(runs=3),
        "fp32",
        [
            _variant("fp32", 0.975, 0.100, 160_000),
            _variant("dynamic", 0.975, 0.101, 46_000),
            _variant("float16", 0.975, 0.1005, 82_000),
            _variant("pruned_50", 0.9745, 0.1002, 160_000),
            _variant("int8", 0.972, 0.080, 46_000),
            _variant("int16x8", 0.974, 0.900, 48_000),
        ],
    )


# --------------------------------------------------------------------------------------------------------- JUnit


def test_junit_has_a_case_per_gate_and_per_failed_variant():
    from tflite_opt.reporting.junit import to_junit

    report = crowded_report()
    report.variants.append(_variant("int4", None, None, 0, error="int4 conversion failed: op TANH"))
    report.gates = [
        GateResult("int8", "accuracy_delta", ">=", -0.01, -0.023, False),
        GateResult("int8", "size_ratio", "<=", 0.3, 0.2875, True),
        GateResult("dynamic", "latency_ms", "<=", 1.0, None, False),
    ]
    root = ElementTree.fromstring(to_junit([("run: digits", report)]))
    assert (root.tag, root.get("tests"), root.get("failures"), root.get("errors")) == ("testsuites", "4", "3", "0")
    (suite,) = root
    assert (suite.get("name"), suite.get("tests"), suite.get("failures")) == ("run: digits", "4", "3")
    cases = [
        (c.get("classname"), c.get("name"), None if c.find("failure") is None else c.find("failure").get("message"))
        for c in suite
    ]
    assert cases == [
        ("int8", "int8: accuracy_delta >= -0.01", "value -0.023"),
        ("int8", "int8: size_ratio <= 0.3", None),
        ("dynamic", "dynamic: latency_ms <= 1", "value n/a (unknown)"),
        ("int4", "int4: produced and measured", "int4 conversion failed: op TANH"),
    ]


def test_evaluate_junit_with_one_failing_gate_exits_3(tflite_files, data_dir, tmp_path):
    junit = tmp_path / "gates.xml"
    result = run(
        "evaluate",
        tflite_files["fp32"],
        tflite_files["int8"],
        "--data",
        data_dir / "test.npz",
        *FAST,
        "--gate",
        "cnn_int8:accuracy_delta>=-0.05",
        "--gate",
        "cnn_int8:size_ratio<=0.01",
        "--junit",
        junit,
    )
    assert result.exit_code == 3, result.output
    root = ElementTree.parse(junit).getroot()
    assert (root.get("tests"), root.get("failures")) == ("2", "1")
    failure = root.find("./testsuite/testcase/failure")
    assert failure.get("message").startswith("value 0.2")
    assert root.find("./testsuite").get("name") == "tflite-opt evaluate"


# ---------------------------------------------------------------------------------------------------------- HTML


def _chromium(*args, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def html_report(tflite_files, data_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("html")
    files = [tflite_files[m] for m in ("fp32", "dynamic", "float16", "int8")]
    result = run(
        "evaluate",
        *files,
        "--data",
        data_dir / "test.npz",
        *FAST,
        "--max-accuracy-drop",
        "0.05",
        "--html",
        folder / "report.html",
    )
    assert result.exit_code == 0, result.output
    return folder / "report.html"


def test_html_report_is_self_contained(html_report):
    text = html_report.read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert "<script" not in text and "<link" not in text and "@import" not in text
    assert re.findall(r"url\((?!#)", text) == []  # clip paths point inside the document only
    assert re.findall(r'\b(?:src|href)="(?!#)', text) == []  # only in-document references (SVG glyphs)
    assert "Content-Security-Policy" in text and "<svg" in text
    for name in ("cnn_fp32", "cnn_dynamic", "cnn_float16", "cnn_int8"):
        assert f'<td class="text">{name}' in text
    assert "accuracy_delta &gt;= -0.05" in text and "Environment" in text


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")
def test_html_report_renders_offline_in_chromium(html_report, tmp_path):
    from PIL import Image

    dom = _chromium("--dump-dom", html_report.as_uri(), profile=tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = re.sub(r"<[^>]+>", " ", re.sub(r"<svg.*?</svg>", " ", dom.stdout, flags=re.DOTALL))
    for name in ("cnn_fp32 (ref)", "cnn_dynamic", "cnn_float16", "cnn_int8"):
        assert name in rendered
    shot = tmp_path / "report.png"  # kept in the test's tmp dir as the artifact
    done = _chromium(
        f"--screenshot={shot}", "--window-size=1280,2200", html_report.as_uri(), profile=tmp_path / "profile"
    )
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1280, 2200)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text, table rules, the plot's markers: not a blank page


def test_compare_writes_report_html_and_appends_the_step_summary(keras3_cnn_path, data_dir, tmp_path):
    summary = tmp_path / "summary.md"
    out = tmp_path / "out"
    result = run(
        "compare",
        keras3_cnn_path,
        "--data",
        data_dir / "test.npz",
        "--modes",
        "fp32,dynamic",
        "--output-dir",
        out,
        *FAST,
        "--junit",
        tmp_path / "j.xml",
        env={"GITHUB_STEP_SUMMARY": str(summary)},
    )
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    assert '<td class="text">fp32 (ref)</td>' in page and '<td class="text">dynamic</td>' in page
    assert summary.read_text() == (out / "report.md").read_text()
    root = ElementTree.parse(tmp_path / "j.xml").getroot()
    assert (root.get("tests"), root.get("failures")) == ("0", "0")


def test_auto_writes_junit_and_html(keras3_cnn_path, data_dir, tmp_path):
    result = run(
        "auto",
        keras3_cnn_path,
        "--data",
        data_dir / "test.npz",
        "--representative-data",
        data_dir / "calib.npz",
        "--max-accuracy-drop",
        "0.5",
        "-o",
        tmp_path / "m.tflite",
        *FAST,
        "--gate",
        "size_ratio<=0.01",
        "--junit",
        tmp_path / "auto.xml",
        "--html",
        tmp_path / "auto.html",
    )
    assert result.exit_code == 3, result.output
    root = ElementTree.parse(tmp_path / "auto.xml").getroot()
    assert int(root.get("failures")) >= 1 and root.find(".//failure").get("message").startswith("value ")
    assert "size_ratio &lt;= 0.01" in (tmp_path / "auto.html").read_text()


# ---------------------------------------------------------------------------------------------------------- plot


def test_plot_labels_never_overlap():
    from tflite_opt.reporting.plotting import build_tradeoff_figure

    figure, labels = build_tradeoff_figure(crowded_report())
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    boxes = [label.get_window_extent(renderer) for label in labels]
    assert [label.get_text().split(",")[0] for label in labels] == [
        "fp32 (ref)",
        "dynamic",
        "float16",
        "pruned_50",
        "int8",
        "int16x8",
    ]
    for (a, text_a), (b, text_b) in itertools.combinations(zip(boxes, labels), 2):
        assert not a.overlaps(b), (text_a.get_text(), text_b.get_text())
    frame = figure.bbox
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in boxes)


def test_plot_svg_is_deterministic_and_inline():
    from tflite_opt.reporting.plotting import tradeoff_svg

    first, second = tradeoff_svg(crowded_report()), tradeoff_svg(crowded_report())
    assert first == second
    assert first.startswith("<svg") and "<?xml" not in first and "<text" not in first  # glyphs as paths

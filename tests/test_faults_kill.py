"""``compare`` stopped at several moments — SIGKILL during conversion, during evaluation and while writing the
reports; SIGINT and SIGTERM — leaves only complete files; the next run removes what a killed one left and
succeeds. The moments are found by polling the output folder, never by hooks in the code."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from tests.fault_processes import cli_process, finish, run_cli, wait_until
from tflite_opt.outputlock import FOLDER_LOCK_NAME

pytestmark = pytest.mark.slow
FILES = {"fp32.tflite", "int8.tflite", "report.json", "report.md", "report.html"}


def _compare_args(tmp_path: Path, keras3_cnn_path, data_dir) -> list:
    # 150x the test digits (60k samples), so that evaluation lasts long enough to be caught in the middle.
    with np.load(data_dir / "test.npz") as test:
        np.savez(tmp_path / "test150.npz", x=np.tile(test["x"], (150, 1, 1, 1)), y=np.tile(test["y"], 150))
    return ["compare", keras3_cnn_path, "--data", tmp_path / "test150.npz", "--representative-data",
            data_dir / "calib.npz", "--output-dir", tmp_path / "out", "--modes", "fp32,int8", "--runs", "20",
            "--warmup", "1", "--format", "json"]  # fmt: skip


def _written_since(path: Path, start: float) -> bool:
    try:
        return path.stat().st_mtime >= start - 1
    except FileNotFoundError:
        return False


def _assert_complete(out: Path) -> list[str]:
    """Every file of ``out`` is whole: .tflite files load and run in LiteRT, report.json parses. Returns the
    names of the temporaries and lock files (hidden names)."""
    from ai_edge_litert.interpreter import Interpreter

    hidden = []
    for path in sorted(out.iterdir()):
        if path.name.startswith("."):
            hidden.append(path.name)
        elif path.suffix == ".tflite":
            interpreter = Interpreter(model_content=path.read_bytes())
            interpreter.allocate_tensors()
            interpreter.invoke()
        elif path.name == "report.json":
            report = json.loads(path.read_text())
            assert {v["name"] for v in report["variants"]} == {"fp32", "int8"}
        elif path.suffix == ".html":
            assert path.read_text().rstrip().endswith("</html>")
        else:
            assert path.name == "report.md" and path.read_text().strip(), path
    return hidden


def test_sigkill_at_three_moments_then_the_next_run_cleans_up_and_succeeds(tmp_path, keras3_cnn_path, data_dir):
    args = _compare_args(tmp_path, keras3_cnn_path, data_dir)
    out = tmp_path / "out"
    moments = {
        "during conversion": "fp32.tflite",  # written: int8 is being calibrated and converted
        "during evaluation": "int8.tflite",  # both written: the variants are being evaluated
        "while writing the reports": "report.json",  # report.md and report.html follow
    }
    leftovers = []
    for moment, marker in moments.items():
        start = time.time()
        with cli_process(*args, cwd=tmp_path) as process:
            wait_until(process, lambda: _written_since(out / marker, start), f"{marker} ({moment})")
            process.send_signal(signal.SIGKILL)
            assert process.wait(timeout=30) == -signal.SIGKILL
        hidden = _assert_complete(out)
        assert all(name == FOLDER_LOCK_NAME or name.endswith(".tmp") for name in hidden), hidden
        # What a write cut short leaves: the killed process's temporary (reaching that instant by polling is luck).
        partial = out / f".report.html.{process.pid}.k1ll3d.tmp"
        partial.write_text("<html><body>half")
        leftovers.append(partial.name)

    final = run_cli(*args, cwd=tmp_path)
    assert final.returncode == 0, final.stderr
    assert _assert_complete(out) == []  # every leftover temporary and the lock file are gone
    assert {p.name for p in out.iterdir()} == FILES
    assert json.loads(final.stdout)["passed"] is True


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_and_sigterm_end_with_the_shell_code_and_keep_finished_files(
    signum, code, tmp_path, keras3_cnn_path, data_dir
):
    args = _compare_args(tmp_path, keras3_cnn_path, data_dir)
    out = tmp_path / "out"
    with cli_process(*args, cwd=tmp_path) as process:
        wait_until(process, lambda: (out / "fp32.tflite").exists(), "the first file is written")
        process.send_signal(signum)
        returncode, stderr = finish(process)
    assert returncode == code, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        f"Interrupted ({signal.Signals(signum).name}): files finished before it are complete and kept"
    )
    assert "fp32.tflite" in {p.name for p in out.iterdir()}
    assert _assert_complete(out) == []  # no temporary, and the lock was released

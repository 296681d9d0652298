"""``--help``, ``inspect`` and ``evaluate`` never import TensorFlow (SPEC §5): checked in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization")

# What a quiet JSON evaluate has no use for, and which each cost it milliseconds of start-up (SPEC §5, issue 16):
# rich draws nothing, package versions come from folder names, the worker pool is plain threads, latency
# statistics are not computed with --runs 0, and the flatbuffer is walked without LiteRT's generated schema.
NOT_FOR_QUIET_JSON = (
    "rich",
    "importlib.metadata",
    "concurrent.futures",
    "logging",
    "statistics",
    "flatbuffers",
    "ai_edge_litert.schema_py_generated",
)

# Runs the CLI exactly as the console script does, then records the exit code and which heavy modules got loaded.
SCRIPT = """
import json, os, runpy, sys
record, sys.argv = sys.argv[1], ["tflite-opt", *sys.argv[2:]]
code = 0
try:
    runpy.run_module("tflite_opt", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
heavy = sorted(name for name in %r if name in sys.modules)
with open(record, "w") as handle:
    json.dump({"code": code, "heavy": heavy}, handle)
with open(record + ".process", "w") as handle:
    json.dump({"blas_threads": os.environ.get("OPENBLAS_NUM_THREADS")}, handle)
"""


def _run_cli(
    tmp_path, *args: str, watch: tuple[str, ...] = HEAVY, env: dict | None = None
) -> tuple[dict, subprocess.CompletedProcess]:
    record = tmp_path / "record.json"
    process = subprocess.run(
        [sys.executable, "-c", SCRIPT % (watch,), str(record), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert record.exists(), process.stderr
    return json.loads(record.read_text()), process


def _environment(**settings: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    return {**env, **settings}


@pytest.mark.parametrize(
    ("args", "settings", "threads"),
    [
        (["inspect", "--help"], {}, "1"),
        (["inspect", "--help"], {"OPENBLAS_NUM_THREADS": "3"}, "3"),
        (["convert", "--help"], {}, None),
    ],
    ids=["inspect-one-blas-thread", "the-user-setting-wins", "convert-keeps-blas-threads"],
)
def test_inference_only_commands_start_numpy_with_one_blas_thread(tmp_path, args, settings, threads):
    """evaluate and inspect do no linear algebra in NumPy: they do not start OpenBLAS's thread per core (issue 16)."""
    record, process = _run_cli(tmp_path, *args, env=_environment(**settings))
    assert record["code"] == 0, process.stderr
    facts = json.loads((tmp_path / "record.json.process").read_text())
    assert facts == {"blas_threads": threads}


@pytest.mark.parametrize("args", [["--help"], ["evaluate", "--help"], ["inspect", "--help"]])
def test_help_does_not_import_tensorflow(tmp_path, args):
    record, process = _run_cli(tmp_path, *args)
    assert record == {"code": 0, "heavy": []}
    assert "Usage: tflite-opt" in process.stdout


def test_inspect_does_not_import_tensorflow(tmp_path, tflite_files):
    record, process = _run_cli(tmp_path, "inspect", str(tflite_files["int8"]), "--format", "json")
    assert record == {"code": 0, "heavy": []}
    assert json.loads(process.stdout)["integer_only"] is True


@pytest.mark.parametrize(
    ("runs", "watch"), [("2", HEAVY), ("0", HEAVY + NOT_FOR_QUIET_JSON)], ids=["with-latency", "quiet-json-lean"]
)
def test_evaluate_does_not_import_tensorflow(tmp_path, tflite_files, data_dir, runs, watch):
    files = [str(tflite_files["fp32"]), str(tflite_files["int8"])]
    args = ["-q", "evaluate", *files, "--data", str(data_dir / "test.npz"), "--runs", runs, "--format", "json"]
    record, process = _run_cli(tmp_path, *args, "--gate", "accuracy>=0.5", watch=watch)
    assert record == {"code": 0, "heavy": []}, process.stderr
    report = json.loads(process.stdout)
    assert report["variants"][1]["accuracy"] > 0.9
    assert report["environment"]["ai_edge_litert"] != "unknown"


def test_failed_evaluate_does_not_import_tensorflow_either(tmp_path):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    record, process = _run_cli(tmp_path, "evaluate", str(junk), "--runs", "1")
    assert record == {"code": 1, "heavy": []}
    assert process.stderr.strip().splitlines()[-1].startswith("Error: 1 of 1 variants failed — junk:")

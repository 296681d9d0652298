"""The evaluation's workers: a failing batch, a bug in a worker, the pool's lifetime, the XNNPACK banner."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from tflite_opt import verbosity
from tflite_opt.cli import cli
from tflite_opt.errors import EvaluationError
from tflite_opt.measure import inspection, runtime, workers
from tflite_opt.measure.evaluation import EvaluationOptions, VariantSource, evaluate_variants, run_dataset
from tflite_opt.measure.runtime import ModelRunner
from tflite_opt.representative_data import Dataset


def _pool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(workers.THREAD_NAME_PREFIX)]


@pytest.fixture
def two_workers(monkeypatch):
    """Two workers (the calling thread and one helper) whatever the machine."""
    monkeypatch.setattr(workers, "available_cpus", lambda: 2)


def _fail_third_helper_batch(monkeypatch, source: str, error: BaseException) -> list[str]:
    """Make the helper thread's 3rd batch of ``source`` raise ``error``; returns the threads that ran its batches.

    The calling thread waits (in its first batch of ``source``) until the helper has raised, so that it is the
    helper's error that has to find its way to the user.
    """
    run = ModelRunner.run
    failed = threading.Event()
    threads: list[str] = []

    def failing_run(self, arrays):
        if self.source == source:
            on_main = threading.current_thread() is threading.main_thread()
            threads.append("main" if on_main else "helper")
            if on_main:
                failed.wait(timeout=10)
            elif threads.count("helper") == 3:
                failed.set()
                raise error
        return run(self, arrays)

    monkeypatch.setattr(ModelRunner, "run", failing_run)
    return threads


def test_a_failing_batch_fails_its_file_and_the_next_file_is_measured(monkeypatch, two_workers, tflite_files, data_dir):
    int8 = str(tflite_files["int8"])
    message = f"LiteRT failed to run {int8}: injected failure"
    threads = _fail_third_helper_batch(monkeypatch, int8, EvaluationError(message))
    walks = []
    analyze = inspection.analyze

    def recording_analyze(content, source):
        walks.append(source)
        return analyze(content, source=source)

    monkeypatch.setattr(inspection, "analyze", recording_analyze)
    result = CliRunner().invoke(
        cli,
        [
            "-q",
            "evaluate",
            str(tflite_files["fp32"]),
            int8,
            str(tflite_files["dynamic"]),
            "--data",
            str(data_dir / "test.npz"),
            "--batch-size",
            "4",
            "--runs",
            "1",
            "--warmup",
            "0",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [f"Error: 1 of 3 variants failed — cnn_int8: {message}"]
    variants = {v["name"]: v for v in json.loads(result.stdout)["variants"]}
    failed = variants["cnn_int8"]
    assert failed["error"] == message and failed["accuracy"] is None and failed["latency_ms"] is None
    # The file's fixed costs were still gathered, each once: sha256, gzip size, the flatbuffer walk.
    assert len(failed["sha256"]) == 64 and failed["gzip_bytes"] > 0 and failed["sparsity"] is not None
    assert walks == [str(tflite_files["fp32"]), int8, str(tflite_files["dynamic"])]
    assert threads.count("helper") == 3 and "main" in threads
    # The file after the failing one ran on the same pool, fully.
    for name in ("cnn_fp32", "cnn_dynamic"):
        assert variants[name]["error"] is None and variants[name]["accuracy"] > 0.9
        assert variants[name]["latency_ms"]["runs"] == 1
    assert variants["cnn_dynamic"]["agreement"] >= 0.9
    assert _pool_threads() == []


def test_a_bug_in_a_worker_propagates_as_an_internal_error(monkeypatch, two_workers, tflite_files, data_dir):
    int8 = str(tflite_files["int8"])
    threads = _fail_third_helper_batch(monkeypatch, int8, RuntimeError("injected bug"))
    result = CliRunner().invoke(
        cli,
        [
            "-q",
            "evaluate",
            str(tflite_files["fp32"]),
            int8,
            "--data",
            str(data_dir / "test.npz"),
            "--batch-size",
            "4",
            "--runs",
            "0",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: internal error (RuntimeError: injected bug); this is a bug")
    assert "variants failed" not in result.stderr and result.stdout == ""
    assert threads.count("helper") == 3
    assert _pool_threads() == []


def test_the_flatbuffer_error_ranks_before_the_inference_error(monkeypatch, two_workers, tflite_files, digits):
    def broken_walk(content, source):
        raise EvaluationError(f"cannot read the flatbuffer of {source}: injected")

    def broken_run(self, arrays):
        raise EvaluationError(f"LiteRT failed to run {self.source}: injected")

    monkeypatch.setattr(inspection, "analyze", broken_walk)
    monkeypatch.setattr(ModelRunner, "run", broken_run)
    _, _, test_x, test_y = digits
    source = VariantSource("fp32", content=tflite_files["fp32"].read_bytes())
    for workers_ in (1, 2):
        run = evaluate_variants(
            [source],
            Dataset(inputs={"image": test_x}, labels=test_y),
            options=EvaluationOptions(runs=0, batch_size=8, workers=workers_),
        )
        assert run.variants[0].error == "cannot read the flatbuffer of fp32: injected"
        assert run.variants[0].sha256 is not None
    assert _pool_threads() == []


def test_only_the_calling_thread_swaps_the_descriptors(monkeypatch, tflite_files, digits):
    """The process's first XNNPACK allocation (the banner's) happens on the calling thread, before any helper's."""
    monkeypatch.setattr(runtime, "_xnnpack_banner_due", True)  # as in a fresh process
    swaps, allocations = [], []
    quiet_native = verbosity.quiet_native

    def recording_quiet_native():
        swaps.append(threading.current_thread() is threading.main_thread())
        return quiet_native()

    allocate = runtime._allocate_quietly

    helper_allocated = threading.Event()

    def recording_allocate(wrapper, subgraph, xnnpack):
        on_main = threading.current_thread() is threading.main_thread()
        if on_main and runtime._xnnpack_banner_due:
            helper_allocated.wait(timeout=0.5)  # gives a helper that was started already the time to go first
        allocations.append((on_main, runtime._xnnpack_banner_due))
        allocate(wrapper, subgraph, xnnpack)
        if not on_main:
            helper_allocated.set()

    run = ModelRunner.run
    helper_ran = threading.Event()

    def run_once_a_helper_ran(self, arrays):
        if threading.current_thread() is threading.main_thread():
            helper_ran.wait(timeout=10)
        else:
            helper_ran.set()
        return run(self, arrays)

    monkeypatch.setattr(verbosity, "quiet_native", recording_quiet_native)
    monkeypatch.setattr(runtime, "_allocate_quietly", recording_allocate)
    monkeypatch.setattr(ModelRunner, "run", run_once_a_helper_ran)
    content = tflite_files["int8"].read_bytes()
    dataset = Dataset(inputs={"image": digits[2][:200]})
    got = run_dataset(content, dataset, batch_size=4, workers=2)["output_0"]
    assert helper_ran.is_set()
    assert swaps == [True]
    assert allocations[0] == (True, True)
    assert (False, False) in allocations and all(not due for _, due in allocations[1:])
    assert _pool_threads() == []
    monkeypatch.undo()
    expected = run_dataset(content, dataset, batch_size=200, workers=1)["output_0"]
    assert np.array_equal(got, expected)


def test_evaluate_keeps_stderr_clean_of_the_xnnpack_banner(tmp_path, tflite_files, data_dir):
    """In a fresh process, where LiteRT prints its banner once, to file descriptor 2."""
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "tflite_opt",
            "-q",
            "evaluate",
            str(tflite_files["fp32"]),
            str(tflite_files["int8"]),
            "--data",
            str(data_dir / "test.npz"),
            "--runs",
            "1",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 0, process.stderr
    assert process.stderr == ""
    assert json.loads(process.stdout)["variants"][1]["accuracy"] > 0.9

"""Files LiteRT cannot run here: a custom op without a kernel, tensors bigger than the memory available, a ``.npy``
whose header promises more data than it holds. Each ends with exit 1 and one line that names the cause."""

from __future__ import annotations

import json
import re
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from tests.fixtures_eval import CUSTOM_OP, with_custom_op
from tflite_opt.cli import cli
from tflite_opt.measure import resources


def test_a_custom_op_is_listed_by_inspect_and_evaluate_says_a_resolver_is_needed(tflite_files, data_dir, tmp_path):
    path = with_custom_op(tflite_files["fp32"], tmp_path / "custom.tflite")
    inspected = CliRunner().invoke(cli, ["inspect", str(path), "--format", "json"])
    assert inspected.exit_code == 0, inspected.output
    ops = {op["op"]: op["count"] for op in json.loads(inspected.output)["ops"]}
    assert ops[CUSTOM_OP] == 1 and ops["FULLY_CONNECTED"] == 1

    for flags in ([], ["--no-xnnpack"]):
        result = CliRunner().invoke(
            cli, ["evaluate", str(path), "--data", str(data_dir / "test.npz"), "--runs", "0", "-q", *flags]
        )
        assert result.exit_code == 1
        assert result.output.splitlines()[-1] == (
            f"Error: 1 of 1 variants failed — custom: {path} uses the custom op {CUSTOM_OP}, which this LiteRT "
            f"build has no kernel for; running it needs a custom op resolver that registers {CUSTOM_OP} (an "
            "application or LiteRT build with the kernel linked in); 'tflite-opt inspect' still reads the file"
        )


def _evaluate(path, data, *flags):
    return CliRunner().invoke(
        cli, ["evaluate", str(path), "--data", str(data), "--runs", "0", "--batch-size", "1", "-q", *flags]
    )


def test_tensors_that_cannot_fit_are_refused_before_allocation(tflite_files, data_dir, monkeypatch):
    path = tflite_files["fp32"]
    limit = 100_000
    monkeypatch.setattr(resources, "available_memory", lambda: (limit, "a test's limit"))
    # XNNPACK keeps a packed copy of every conv/dense weight: here all of the file's float32 constants.
    weights = json.loads(CliRunner().invoke(cli, ["inspect", str(path), "--format", "json"]).output)
    packed = weights["weight_bytes"]["float32"]
    assert packed > limit

    refused = _evaluate(path, data_dir / "test.npz")
    assert refused.exit_code == 1
    found = re.fullmatch(
        rf"Error: 1 of 1 variants failed — {path.stem}: {re.escape(str(path))} needs at least ([\d,]+) bytes \(.*\) of "
        r"memory for its tensors \(([\d,]+) bytes \(.*\) for the inputs and outputs of its largest op, CONV_2D, at "
        rf"batch 1, plus {packed:,} bytes \(.*\) of weights XNNPACK repacks\) but only {limit:,} bytes \(.*\) is "
        r"available \(a test's limit\); free memory or run with --no-xnnpack",
        refused.output.strip().splitlines()[-1],
    )
    assert found, refused.output
    needed, activations = (int(group.replace(",", "")) for group in found.groups())
    assert activations == 8 * 8 * (16 + 32) * 4 and needed == activations + packed  # conv2: 16 in, 32 out

    # Without XNNPACK the same file fits in the same memory; below its activations it is refused there too.
    assert _evaluate(path, data_dir / "test.npz", "--no-xnnpack").exit_code == 0
    monkeypatch.setattr(resources, "available_memory", lambda: (activations - 1, "a test's limit"))
    tight = _evaluate(path, data_dir / "test.npz", "--no-xnnpack")
    assert tight.exit_code == 1 and f"needs at least {activations:,} bytes" in tight.output
    assert "XNNPACK" not in tight.output.splitlines()[-1]


def test_a_batch_that_cannot_fit_suggests_a_smaller_batch(tflite_files, data_dir, monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: (1_000_000, "MemAvailable in /proc/meminfo"))
    result = CliRunner().invoke(
        cli, ["evaluate", str(tflite_files["fp32"]), "--data", str(data_dir / "test.npz"), "--runs", "0",
              "--batch-size", "256", "--no-xnnpack"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "at batch 256) but only 1,000,000 bytes" in result.output
    assert result.output.strip().endswith("; free memory or pass a smaller --batch-size")


def test_available_memory_reads_meminfo():
    found = resources.available_memory()
    assert found is not None and found[0] > 0  # Linux CI: /proc/meminfo is always there


def _lying_npy(handle, shape, rows_written):
    np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False, "shape": shape})
    handle.write(np.zeros((rows_written, *shape[1:]), np.float32).tobytes())


@pytest.mark.parametrize("kind", ["npy", "npz"])
def test_an_array_header_claiming_more_than_the_file_holds_is_refused_before_loading(kind, tflite_files, tmp_path):
    path = tmp_path / f"lie.{kind}"
    shape = (10**9, 8, 8, 1)  # 256 GB declared, 10 rows stored: loading would try to allocate it all
    if kind == "npy":
        with open(path, "wb") as handle:
            _lying_npy(handle, shape, 10)
        named = str(path)
    else:
        with zipfile.ZipFile(path, "w") as archive, archive.open("x.npy", "w") as member:
            _lying_npy(member, shape, 10)
        named = f"array 'x' in {path}"
    result = _evaluate(tflite_files["fp32"], path)
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.endswith(
        f"{named} is truncated or damaged: its header declares an array of shape {shape} and dtype float32 "
        f"(256,000,000,000 bytes) but it holds {10 * 64 * 4:,} bytes of data; re-create the file"
    )


@pytest.mark.parametrize(
    ("litert_error", "expected"),
    [
        ("Encountered unresolved custom op: FlexAtan2.\nSee instructions: ...",
         "m.tflite uses the TensorFlow op Atan2 (a Select TF / Flex op)"),
        ("Didn't find op for builtin opcode 'STABLEHLO_COMPOSITE' version '2'. An older version of this builtin "
         "might be supported.", "m.tflite uses the builtin op STABLEHLO_COMPOSITE version 2, which this LiteRT build"),
        ("Encountered unresolved custom op: MyOp.", "m.tflite uses the custom op MyOp, which"),
    ],
)  # fmt: skip
def test_missing_kernel_errors_are_explained(litert_error, expected):
    from tflite_opt.measure import runtime

    assert runtime._missing_kernel_message("m.tflite", " ".join(litert_error.split())).startswith(expected)
    assert runtime._missing_kernel_message("m.tflite", "tensor 3 has the wrong type") is None

"""``tflite-opt micro``: the arena TFLM needs (checked against TFLM itself), the resolver, ops TFLM lacks or refuses,
a streaming model with resource variables, fidelity vs LiteRT, the gates, and no TensorFlow on this path."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from tflite_opt.cli import cli

HOUSE_CNN_RESOLVER = [
    "static tflite::MicroMutableOpResolver<7> resolver;",
    "resolver.AddConv2D();",
    "resolver.AddFullyConnected();",
    "resolver.AddMaxPool2D();",
    "resolver.AddPack();",
    "resolver.AddReshape();",
    "resolver.AddShape();",
    "resolver.AddStridedSlice();",
]
FRAME = 8
WINDOW = 4


def _micro(*args: str):
    return CliRunner().invoke(cli, ["micro", *args])


def _tflm_runs(content: bytes, arena_size: int) -> bool:
    """TFLM itself, through its public API: allocate at ``arena_size`` and invoke once on zeros."""
    from tflite_micro.python.tflite_micro import runtime

    try:
        interpreter = runtime.Interpreter.from_bytes(content, arena_size=arena_size)
        details = interpreter.get_input_details(0)
        interpreter.set_input(np.zeros(details["shape"], details["dtype"]), 0)
        interpreter.invoke()
    except RuntimeError:
        return False
    return True


def _file_op_names(content: bytes) -> set[str]:
    """The op set of a file, read with LiteRT's flatbuffer tools (independently of tflite_opt)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    names = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    model = flatbuffer_utils.convert_bytearray_to_object(content)
    return {names[max(code.builtinCode, code.deprecatedBuiltinCode)] for code in model.operatorCodes}


@pytest.fixture(scope="module")
def int8_report(tflite_files, data_dir):
    result = _micro(str(tflite_files["int8"]), "--data", str(data_dir / "test.npz"), "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def streaming_tflite(tmp_path_factory):
    """A streaming int8 model: a tf.Variable holds the last WINDOW frames, assigned on every call.

    Returns (path, frames.npy): the converter keeps the state as resource variables (VAR_HANDLE, READ_VARIABLE,
    ASSIGN_VARIABLE, initialized by CALL_ONCE).
    """
    import tensorflow as tf

    rng = np.random.default_rng(0)

    class Streaming(tf.Module):
        def __init__(self):
            super().__init__()
            self.window = tf.Variable(tf.zeros([1, WINDOW, FRAME]), trainable=False)
            self.kernel = tf.constant(rng.normal(size=(WINDOW * FRAME, 3)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([1, 1, FRAME], tf.float32, name="frame")])
        def __call__(self, frame):
            window = tf.concat([self.window[:, 1:, :], frame], axis=1)
            self.window.assign(window)
            return {"scores": tf.matmul(tf.reshape(window, [1, WINDOW * FRAME]), self.kernel)}

    module = Streaming()
    frames = rng.random((40, 1, FRAME)).astype(np.float32)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.__call__.get_concrete_function()], module)
    converter.experimental_enable_resource_variables = True
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([frame[None]] for frame in frames)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    folder = tmp_path_factory.mktemp("stream")
    path = folder / "stream_int8.tflite"
    path.write_bytes(converter.convert())
    np.save(folder / "frames.npy", frames)
    return path, folder / "frames.npy"


@pytest.fixture(scope="module")
def gelu_tflite(tmp_path_factory):
    """A float model with GELU, which TFLM has no kernel for."""
    import tensorflow as tf

    kernel = tf.constant(np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32, name="x")])
    def gelu_model(x):
        return {"y": tf.nn.gelu(tf.matmul(x, kernel))}

    path = tmp_path_factory.mktemp("gelu") / "gelu.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([gelu_model.get_concrete_function()]).convert())
    return path


# ------------------------------------------------------------------------------------------------- the arena


def test_reported_arena_runs_in_tflm_and_one_kib_less_does_not(int8_report, tflite_files):
    content = tflite_files["int8"].read_bytes()
    arena = int8_report["arena_bytes"]
    assert arena % 1024 == 0 and 4096 <= arena <= 64 * 1024
    assert _tflm_runs(content, arena) is True
    assert _tflm_runs(content, arena - 1024) is False
    # The allocator's own count lies within the last KiB; the search needed few probes from that estimate.
    assert arena - 1024 < int8_report["arena_used_bytes"] <= arena
    assert int8_report["probes"] <= 4
    assert int8_report["flash_bytes"] == tflite_files["int8"].stat().st_size


def test_resolver_lists_exactly_the_models_ops(int8_report, tflite_files):
    assert int8_report["resolver"] == HOUSE_CNN_RESOLVER
    file_ops = _file_op_names(tflite_files["int8"].read_bytes())
    assert set(int8_report["ops"]) == file_ops
    registered = {line.removeprefix("resolver.").removesuffix("();") for line in HOUSE_CNN_RESOLVER[1:]}
    assert registered == {
        "AddConv2D",
        "AddFullyConnected",
        "AddMaxPool2D",
        "AddPack",
        "AddReshape",
        "AddShape",
        "AddStridedSlice",
    }
    assert int8_report["unsupported_ops"] == [] and int8_report["passed"] is True


def test_fidelity_against_litert_on_the_data(int8_report):
    assert int8_report["samples"] == 397
    assert int8_report["agreement"] >= 0.99
    assert int8_report["sqnr_db"] > 25
    # Reference kernels and XNNPACK differ by at most a few output quanta (real units: logits).
    assert 0 <= int8_report["max_abs_diff"] < 0.5
    assert int8_report["accuracy"] > 0.9
    assert abs(int8_report["accuracy"] - int8_report["reference_accuracy"]) <= 0.01
    assert int8_report["float_model"] is False and int8_report["warnings"] == []


def test_arena_limit_below_the_arena_exits_3_with_the_numbers(int8_report, tflite_files):
    arena = int8_report["arena_bytes"]
    result = _micro(str(tflite_files["int8"]), "--arena-limit", str(arena - 1024))
    assert result.exit_code == 3, result.output
    assert (
        f"Gate failed: arena_bytes = {arena:,} bytes exceeds the limit of {arena - 1024:,} bytes (1,024 over)"
        in result.stderr
    )
    assert "EXCEEDED" in result.stdout  # the table is still printed


def test_limits_that_hold_pass_and_units_parse(int8_report, tflite_files):
    arena = int8_report["arena_bytes"]
    result = _micro(
        str(tflite_files["int8"]), "--arena-limit", f"{arena // 1024}KiB", "--flash-limit", "1MiB", "--format", "json"
    )
    assert result.exit_code == 0, result.output
    gates = json.loads(result.stdout)["gates"]
    assert gates == [
        {"metric": "arena_bytes", "op": "<=", "limit": arena, "value": arena, "passed": True},
        {"metric": "flash_bytes", "op": "<=", "limit": 1048576, "value": int8_report["flash_bytes"], "passed": True},
    ]


def test_flash_limit_exits_3(tflite_files):
    result = _micro(str(tflite_files["int8"]), "--flash-limit", "40KB")
    size = tflite_files["int8"].stat().st_size
    assert result.exit_code == 3
    assert f"flash_bytes = {size:,} bytes exceeds the limit of 40,000 bytes ({size - 40000:,} over)" in result.stderr


@pytest.mark.parametrize(
    "text, size",
    [
        ("64KiB", 65536),
        ("256KB", 256000),
        ("1MiB", 1048576),
        ("65536", 65536),
        ("1.5 MiB", 1572864),
        ("2M", 2097152),
        ("512b", 512),
    ],
)
def test_parse_size(text, size):
    from tflite_opt.commands.micro import parse_size

    assert parse_size(text) == size


def test_a_bad_size_is_a_usage_error(tflite_files):
    result = _micro(str(tflite_files["int8"]), "--arena-limit", "64 parsecs")
    assert result.exit_code == 2
    assert "'64 parsecs' is not a size" in result.stderr


def test_float_model_runs_and_is_flagged(tflite_files, int8_report):
    result = _micro(str(tflite_files["fp32"]))
    assert result.exit_code == 0, result.output
    assert "warning: float on a microcontroller: consider int8" in result.stdout
    assert "host (64-bit) arenas run somewhat larger than on 32-bit MCUs" in result.stdout
    assert "static tflite::MicroMutableOpResolver<7> resolver;" in result.stdout
    report = json.loads(_micro(str(tflite_files["fp32"]), "--format", "json").stdout)
    assert report["float_model"] is True and report["mode"] == "fp32"
    # float32 activations take four times the bytes of int8 ones.
    assert report["arena_bytes"] > 1.5 * int8_report["arena_bytes"]
    assert _tflm_runs(tflite_files["fp32"].read_bytes(), report["arena_bytes"])
    assert not _tflm_runs(tflite_files["fp32"].read_bytes(), report["arena_bytes"] - 1024)


def test_inputs_and_outputs_are_matched_by_name(two_io_tflite):
    # TFLM knows tensors by position only; image (8x8x1) and meta (4) must reach the right ones.
    result = _micro(str(two_io_tflite["int8"]), "--data", str(two_io_tflite["data"]), "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["samples"] == 397 and report["agreement"] >= 0.99 and report["sqnr_db"] > 25
    assert "resolver.AddConcatenation();" in report["resolver"]


# ---------------------------------------------------------------------------------- what TFLM cannot run


def test_an_op_tflm_lacks_exits_1_naming_it(gelu_tflite):
    result = _micro(str(gelu_tflite), "--format", "json")
    assert result.exit_code == 1
    assert f"Error: {gelu_tflite} has ops TensorFlow Lite Micro cannot run: GELU (no TFLM kernel)" in result.stderr
    report = json.loads(result.stdout)
    assert report["unsupported_ops"] == ["GELU"] and report["arena_bytes"] is None
    assert report["resolver"] == ["static tflite::MicroMutableOpResolver<1> resolver;", "resolver.AddFullyConnected();"]


def test_an_op_tflm_refuses_exits_1_with_its_reason(tflite_files):
    result = _micro(str(tflite_files["dynamic"]))
    assert result.exit_code == 1
    assert "CONV_2D (TFLM refuses it: Hybrid models are not supported on TFLite Micro.)" in result.stderr
    assert "convert with --mode int8" in result.stderr


def test_a_damaged_file_exits_1(tmp_path, tflite_files):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(tflite_files["int8"].read_bytes()[:3000])
    result = _micro(str(broken))
    assert result.exit_code == 1
    assert "not a valid .tflite file" in result.stderr


# ------------------------------------------------------------------------------------------ a stateful model


def test_streaming_model_with_resource_variables_runs(streaming_tflite):
    path, frames = streaming_tflite
    result = _micro(str(path), "--data", str(frames), "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE"} <= set(report["ops"])
    assert {
        "resolver.AddVarHandle();",
        "resolver.AddReadVariable();",
        "resolver.AddAssignVariable();",
        "resolver.AddCallOnce();",
    } <= set(report["resolver"])
    assert report["resource_variables"] == 1
    assert _tflm_runs(path.read_bytes(), report["arena_bytes"])
    # 40 frames in order: the window state evolves the same way in TFLM and LiteRT.
    assert report["samples"] == 40 and report["agreement"] == 1.0 and report["sqnr_db"] > 30


def test_streaming_state_is_kept_between_invokes(streaming_tflite):
    from tflite_opt.measure.micro_run import MicroSession, load_micro_model

    model = load_micro_model(streaming_tflite[0].read_bytes())
    session = MicroSession(model, 16 * 1024)
    frame = {"frame": np.full((1, 1, FRAME), 100, np.int8)}
    outputs = [session.run(frame)["scores"].tolist() for _ in range(WINDOW + 2)]
    assert outputs[0] != outputs[1]  # same input, different output: the window filled up
    assert outputs[WINDOW] == outputs[WINDOW + 1]  # full window of identical frames: steady


# ---------------------------------------------------------------------------------------- the search itself


@pytest.mark.parametrize("estimate", [100, 5000, 6543, 6544, 9000, 40000, 1 << 20])
def test_find_arena_finds_the_smallest_kib_from_any_estimate(estimate):
    from tflite_opt.measure.micro import find_arena

    tried = []

    def fits(size):
        tried.append(size)
        return size >= 6544

    arena = find_arena(fits, estimate=estimate, floor=2048, passing=1 << 20)
    assert arena == 7168
    assert 7168 in tried and 6144 in tried
    assert len(tried) <= 2 * 10 + 2  # gallop + bisection over 1 MiB in KiB steps


def test_find_arena_stops_at_the_floor():
    from tflite_opt.measure.micro import find_arena

    tried = []
    arena = find_arena(lambda size: tried.append(size) or True, estimate=100, floor=2048, passing=262144)
    assert arena == 2048 and min(tried) == 2048


# ------------------------------------------------------------------------------------------ start-up

SCRIPT = """
import json, runpy, sys
record, sys.argv = sys.argv[1], ["tflite-opt", *sys.argv[2:]]
code = 0
try:
    runpy.run_module("tflite_opt", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
heavy = sorted(n for n in ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization") if n in sys.modules)
with open(record, "w") as handle:
    json.dump({"code": code, "heavy": heavy, "tflm": "tflite_micro" in sys.modules}, handle)
"""


def test_micro_does_not_import_tensorflow(tmp_path, tflite_files, data_dir):
    record = tmp_path / "record.json"
    process = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            str(record),
            "-q",
            "micro",
            str(tflite_files["int8"]),
            "--data",
            str(data_dir / "test.npz"),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(record.read_text()) == {"code": 0, "heavy": [], "tflm": True}, process.stderr
    assert json.loads(process.stdout)["arena_bytes"] > 0

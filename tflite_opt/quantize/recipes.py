"""LiteRT Quantizer recipes for our modes and flags, and ``--recipe`` files in the quantizer's own JSON format.

A recipe is a list of entries ``{"regex", "operation", "algorithm_key", "op_config"}``. For each op the quantizer
takes the *last* entry whose ``regex`` is found in the op's scope (its output tensor names) and whose
``operation`` is the op's name or ``*``, skipping entries whose config its policy does not support for that op.
An entry for ``operation: "*"`` replaces every earlier entry of the same ``regex``.

What we build (``build_recipe``), in this order:

1. the mode: one ``.*``/``*`` entry (dynamic, weight-only or static, with ``--granularity``);
2. ``--algorithm`` other than minmax: the same config with that algorithm for the ops it supports (GPTQ and
   Hadamard: FULLY_CONNECTED/EMBEDDING_LOOKUP; MSE: FC/conv); the other ops keep min-max;
3. block granularity: only FULLY_CONNECTED/EMBEDDING_LOOKUP have int4 block kernels; conv weights stay per-channel;
4. static int8 I/O (``--io-type``): int8 by default; ``float32`` keeps float inputs/outputs; ``uint8``;
5. ``--keep-float NAME``: ``no_quantize`` entries (an op type such as ``MEAN``, or the exact scopes of the ops a
   layer/tensor name belongs to, resolved against the model by the quantizer backend);
6. the ``--recipe`` file's entries, last, so they win.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tflite_opt.errors import ConversionError
from tflite_opt.modes import Algorithm, Granularity, IoType, Mode
from tflite_opt.quantize.options import ConversionOptions

MIN_MAX = "min_max_uniform_quantize"
NO_QUANTIZE = "no_quantize"
ALGORITHM_KEYS = {
    Algorithm.MINMAX: MIN_MAX,
    Algorithm.MSE: "MSE",
    Algorithm.GPTQ: "GPTQ",
    # The decomposed form: plain FULLY_CONNECTED ops that every runtime has (HADAMARD_ROTATION is a custom op).
    Algorithm.HADAMARD: "DECOMPOSED_HADAMARD_ROTATION",
}
# Hadamard blocks of at most 32: the rotation matrices are stored as float32 constants in the file, and the
# quantizer's default (the largest power of two dividing the input width) adds a 1024x1024 matrix (4 MiB) to a
# CNN whose dense layer reads 1024 features. A --recipe can set another "max_hadamard_size".
HADAMARD_MAX_SIZE = 32
GRANULARITY_WORDS = {
    Granularity.CHANNEL: "CHANNELWISE",
    Granularity.TENSOR: "TENSORWISE",
    Granularity.BLOCK32: "BLOCKWISE_32",
    Granularity.BLOCK64: "BLOCKWISE_64",
    Granularity.BLOCK128: "BLOCKWISE_128",
    Granularity.BLOCK256: "BLOCKWISE_256",
}
BLOCKWISE_OPS = ("FULLY_CONNECTED", "EMBEDDING_LOOKUP")
# Ops whose constant input the quantizer quantizes as a weight.
WEIGHT_OPS = (
    "FULLY_CONNECTED",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "CONV_2D_TRANSPOSE",
    "EMBEDDING_LOOKUP",
    "BATCH_MATMUL",
)
WEIGHT_ONLY_MODES = (Mode.INT4_WEIGHTS, Mode.INT8_WEIGHTS)
STATIC_MODES = (Mode.INT8, Mode.INT16X8)
ENTRY_KEYS = ("regex", "operation", "algorithm_key", "op_config")


def check_options(options: ConversionOptions) -> None:
    """Refuse flag combinations the quantizer cannot honour, in one line each.

    Raises:
        ConversionError: e.g. blocks outside int4, Hadamard or GPTQ on static int8.
    """
    mode, granularity, algorithm = Mode(options.mode), Granularity(options.granularity), Algorithm(options.algorithm)
    if granularity.block_size and mode != Mode.INT4:
        raise ConversionError(
            f"--granularity {granularity.value} applies to --mode int4 only: the LiteRT Quantizer has block "
            "kernels for int4 FULLY_CONNECTED/EMBEDDING_LOOKUP weights only; use channel or tensor"
        )
    if algorithm in (Algorithm.HADAMARD, Algorithm.GPTQ) and mode in STATIC_MODES:
        raise ConversionError(
            f"--algorithm {algorithm.value} applies to weight quantization (int4, int4-weights, int8-weights, "
            f"dynamic), not to --mode {mode.value}; use minmax or mse"
        )
    if algorithm == Algorithm.HADAMARD and granularity.block_size:
        raise ConversionError("--algorithm hadamard works per channel or per tensor, not with block granularity")
    if mode in (Mode.FP32, Mode.FLOAT16):
        raise ConversionError(f"--mode {mode.value} is made by the converter backend, not the LiteRT Quantizer")


def needs_calibration(options: ConversionOptions) -> bool:
    """Static modes calibrate activation ranges; GPTQ calibrates its Hessians."""
    return Mode(options.mode) in STATIC_MODES or Algorithm(options.algorithm) == Algorithm.GPTQ


def build_recipe(
    options: ConversionOptions, recipe_file: list[dict] | None = None, keep_float: list[dict] | None = None
) -> list[dict]:
    """The full recipe for ``options`` (see the module docstring for the order), as plain JSON-ready dicts.

    Args:
        options: mode, granularity, algorithm, I/O type.
        recipe_file: the ``--recipe`` entries (:func:`load_recipe_file`).
        keep_float: the ``--keep-float`` entries (resolved against the model).
    """
    check_options(options)
    mode, granularity = Mode(options.mode), Granularity(options.granularity)
    base_granularity = Granularity.CHANNEL if granularity.block_size else granularity
    config = _op_config(mode, base_granularity)
    recipe = [_entry(".*", "*", MIN_MAX, config)]
    algorithm = Algorithm(options.algorithm)
    if algorithm != Algorithm.MINMAX:
        from tflite_opt.compat import quantizer as quantizer_compat

        supported = quantizer_compat.supported_ops(ALGORITHM_KEYS[algorithm])
        algorithm_config = _op_config(mode, base_granularity, hadamard=algorithm == Algorithm.HADAMARD)
        recipe += [
            _entry(".*", op, ALGORITHM_KEYS[algorithm], algorithm_config) for op in WEIGHT_OPS if op in supported
        ]
    if granularity.block_size:
        block_config = _op_config(mode, granularity)
        recipe += [_entry(".*", op, MIN_MAX, block_config) for op in BLOCKWISE_OPS]
    if mode == Mode.INT16X8 or (mode == Mode.INT8 and IoType(options.io_type) == IoType.FLOAT32):
        recipe += [{"regex": ".*", "operation": op, "algorithm_key": NO_QUANTIZE} for op in ("INPUT", "OUTPUT")]
    elif mode == Mode.INT8 and IoType(options.io_type) == IoType.UINT8:
        uint8 = _op_config(mode, base_granularity)
        uint8["activation_tensor_config"].update(symmetric=False, dtype="UINT")
        recipe += [_entry(".*", op, MIN_MAX, uint8) for op in ("INPUT", "OUTPUT")]
    return recipe + list(keep_float or []) + list(recipe_file or [])


def _entry(regex: str, operation: str, algorithm_key: str, op_config: dict) -> dict:
    return {"regex": regex, "operation": operation, "algorithm_key": algorithm_key, "op_config": op_config}


def _op_config(mode: Mode, granularity: Granularity, *, hadamard: bool = False) -> dict:
    bits = 4 if mode in (Mode.INT4, Mode.INT4_WEIGHTS) else 8
    weights: dict[str, Any] = {
        "num_bits": bits,
        "symmetric": True,
        "granularity": GRANULARITY_WORDS[granularity],
        "dtype": "INT",
    }
    if hadamard:
        weights["algorithm_params"] = {"max_hadamard_size": HADAMARD_MAX_SIZE}
    if mode in WEIGHT_ONLY_MODES:
        return {"weight_tensor_config": weights, "compute_precision": "FLOAT", "explicit_dequantize": True}
    config: dict[str, Any] = {
        "weight_tensor_config": weights,
        "compute_precision": "INTEGER",
        "explicit_dequantize": False,
    }
    if mode in STATIC_MODES:
        # int8 activations are asymmetric, int16 symmetric: what LiteRT's integer kernels take.
        activation_bits = 16 if mode == Mode.INT16X8 else 8
        config["activation_tensor_config"] = {
            "num_bits": activation_bits,
            "symmetric": activation_bits == 16,
            "granularity": "TENSORWISE",
            "dtype": "INT",
        }
    return config


def no_quantize_entry(operation: str = "*", scope: str | None = None) -> dict:
    """Keep an op type (``operation``) or one op (its exact ``scope``) in float."""
    regex = ".*" if scope is None else f"^{re.escape(scope)}$"
    return {"regex": regex, "operation": operation, "algorithm_key": NO_QUANTIZE}


def load_recipe_file(path: str | Path) -> list[dict]:
    """Read and check a ``--recipe`` file (a JSON list of recipe entries, the quantizer's format).

    Raises:
        ConversionError: unreadable file, invalid JSON (with line and column), or a malformed entry (named).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConversionError(f"recipe file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConversionError(f"cannot read recipe file {path}: {exc}") from exc
    try:
        recipe = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConversionError(
            f"recipe file {path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from exc
    if isinstance(recipe, dict) and set(ENTRY_KEYS[:3]) <= set(recipe):
        recipe = [recipe]
    if not isinstance(recipe, list) or not recipe:
        raise ConversionError(
            f"recipe file {path} must hold a JSON list of entries like "
            '{"regex": ".*", "operation": "*", "algorithm_key": "no_quantize"}; '
            "recipes keyed by signature (LiteRT-LM) are not supported"
        )
    for number, entry in enumerate(recipe, 1):
        _check_entry(entry, f"entry {number} of recipe file {path}")
    return recipe


def _check_entry(entry: Any, where: str) -> None:
    from tflite_opt.compat import quantizer as quantizer_compat

    if not isinstance(entry, dict):
        raise ConversionError(f"{where} is {type(entry).__name__}, expected an object with {', '.join(ENTRY_KEYS)}")
    missing = [key for key in ENTRY_KEYS[:3] if key not in entry]
    if entry.get("algorithm_key") != NO_QUANTIZE and "op_config" not in entry:
        missing.append("op_config")
    if missing:
        raise ConversionError(f"{where} has no {', '.join(missing)}")
    try:
        re.compile(str(entry["regex"]))
    except re.error as exc:
        raise ConversionError(f"{where}: regex {entry['regex']!r} is invalid: {exc}") from exc
    operations = quantizer_compat.operation_names()
    if entry["operation"] not in operations:
        raise ConversionError(
            f"{where}: unknown operation {entry['operation']!r}; use * or one of "
            f"{', '.join(sorted(op for op in operations if op != '*'))}"
        )
    keys = set(quantizer_compat.algorithm_keys().values())
    if entry["algorithm_key"] not in keys:
        raise ConversionError(
            f"{where}: unknown algorithm_key {entry['algorithm_key']!r}; use one of {', '.join(sorted(keys))}"
        )

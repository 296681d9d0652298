"""LiteRT Quantizer internals (``litert-quantizer`` 0.11): how it names ops, scopes them and resolves a recipe.

The documented API is ``Quantizer`` (load a recipe, ``calibrate``, ``quantize``) and the recipe JSON format; both
are used directly by ``tflite_opt.quantize.quantizer``. Checking a result against its recipe needs three things
the package only has inside: the op name it gives each builtin code, the scope string a recipe regex is matched
against, and the config its ``RecipeManager`` picks for an op (policy checks included). They are reached here, so
that a release that moves them fails in one line naming the versions.
"""

from __future__ import annotations

import importlib
from typing import Any

from tflite_opt.compat import CompatibilityError, require
from tflite_opt.environment import package_version

PACKAGE = "litert-quantizer"
WRITTEN_FOR = "0.11"
NO_QUANTIZE = "no_quantize"


def _module(name: str) -> Any:
    try:
        return importlib.import_module(f"litert_quantizer.{name}")
    except ImportError as exc:
        installed = package_version(PACKAGE) or "not installed"
        raise CompatibilityError(
            f"{PACKAGE} {installed} has no module litert_quantizer.{name}, which this tflite-opt was written for "
            f"({PACKAGE} {WRITTEN_FOR}); install {PACKAGE}=={WRITTEN_FOR}.*"
        ) from exc


def _require(obj: Any, attribute: str) -> Any:
    return require(obj, attribute, package=PACKAGE, written_for=WRITTEN_FOR)


def algorithm_keys() -> dict[str, str]:
    """``AlgorithmName`` member name -> the key recipes use (``"GPTQ"``, ``"min_max_uniform_quantize"`` ...)."""
    names = _require(_module("algorithm_manager"), "AlgorithmName")
    return {member.name: member.value for member in names}


def supported_ops(algorithm_key: str) -> set[str]:
    """The op names (``FULLY_CONNECTED`` ...) an algorithm has a materialize function for."""
    manager = _module("algorithm_manager")
    return {str(getattr(op, "value", op)) for op in _require(manager, "get_supported_ops")(algorithm_key)}


def operation_names() -> set[str]:
    """Every op name a recipe's ``operation`` may hold (``TFLOperationName``), ``*`` included."""
    return {member.value for member in _require(_module("qtyping"), "TFLOperationName")}


def op_name_for_code(code: int) -> str | None:
    """The quantizer's name for a builtin operator code, ``None`` for ops it does not know (it leaves them float)."""
    table = _require(_module("utils.tfl_flatbuffer_utils"), "TFL_OP_CODE_TO_NAME")
    name = table.get(int(code))
    return None if name is None else str(getattr(name, "value", name))


def op_scope(op: Any, tensors: list) -> str:
    """The string a recipe regex is searched in for ``op``: its output tensor names joined by ``;``."""
    return _require(_module("utils.tfl_flatbuffer_utils"), "get_op_scope")(op, tensors)


def recipe_resolver(recipe: list[dict]) -> Any:
    """A ``RecipeManager`` holding ``recipe``; raises ``ValueError``/``KeyError``/``TypeError`` on a bad recipe."""
    manager = _require(_module("recipe_manager"), "RecipeManager")()
    manager.load_quantization_recipe(recipe)
    return manager


def resolve(resolver: Any, op_name: str, scope: str) -> tuple[str, Any]:
    """(algorithm key, ``OpQuantizationConfig``) the recipe gives an op; ``no_quantize`` when it stays float.

    This is the quantizer's own choice: later entries win, and an entry whose config its policy does not support
    for the op is skipped.
    """
    qtyping = _module("qtyping")
    op = _require(qtyping, "TFLOperationName")(op_name)
    key, config = _require(resolver, "get_quantization_configs")(op, scope)
    return str(getattr(key, "value", key)), config


def calibrate_min_max(content: bytes, recipe: list[dict], calibration_data: dict, num_threads: int) -> dict:
    """Activation ranges as the absolute min/max over every sample, as TFLiteConverter records them.

    ``Quantizer.calibrate`` merges samples with a moving average instead, which clips the tails (on the demo CNN
    its static int8 file reached 16.6 dB output SQNR against the converter's 40.7 dB; with min/max both give
    40.7 dB and the same predictions). Its ``Calibrator`` takes the update function; ``Quantizer`` does not pass
    one through.

    Returns:
        tensor name -> {"min", "max"}: what ``Quantizer.quantize`` takes as its calibration result.
    """
    calibrator_module = _module("calibrator")
    update = _require(_module("utils.qsv_utils"), "min_max_update")
    calibrator = _require(calibrator_module, "Calibrator")(
        bytearray(content), num_threads=num_threads, qsv_update_func=update
    )
    _require(calibrator, "calibrate")(calibration_data, recipe_resolver(recipe))
    return _require(calibrator, "get_model_qsvs")()


def side_effect_subgraphs(op: Any) -> list[int]:
    """Subgraphs an op invokes (a StableHLO composite's decomposition); the quantizer skips them when it skips
    the op."""
    return [int(i) for i in _require(_module("utils.tfl_flatbuffer_utils"), "get_op_side_effect_subgraphs")(op)]

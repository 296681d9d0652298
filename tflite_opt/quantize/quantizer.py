"""The LiteRT Quantizer backend: a float ``.tflite`` in, a quantized ``.tflite`` out, checked from the file itself.

``litert_quantizer`` returns a file unchanged, without an error, when it finds nothing it can quantize (old-schema
operator codes, float16 weights, a recipe that matches nothing). So every result is checked here: each weight op
the recipe targets (the quantizer's own choice, policy included, read through ``compat.quantizer``) must have
integer weights in the output, read back from the output flatbuffer. Zero quantized ops, or fewer than targeted,
is a :class:`ConversionError` naming the ops that stayed float. No TensorFlow here.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tflite_opt.errors import ConversionError, first_line
from tflite_opt.modes import Backend, Mode
from tflite_opt.progress import ensure
from tflite_opt.quantize import flatbuffer_edits, recipes
from tflite_opt.quantize.options import ConversionOptions, ConversionResult, calibration_samples
from tflite_opt.verbosity import is_verbose, quiet_native

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.progress import Progress
    from tflite_opt.representative_data import Dataset

INTEGER_TYPES = {9: "int8", 17: "int4", 19: "int2", 7: "int16", 3: "uint8", 20: "uint4"}  # schema TensorType
FLOAT_TYPES = {0, 1, 18}  # float32, float16, bfloat16


@dataclass
class WeightOp:
    """One op of the float model that has a float weight (a constant input of rank >= 2).

    Attributes:
        op: the op name (``CONV_2D``).
        scope: the quantizer's scope string (output tensor names joined by ``;``); recipe regexes search it.
        targeted: whether the recipe gives its weight an integer config.
        reason: why it stays float when not targeted.
    """

    op: str
    scope: str
    targeted: bool
    reason: str = ""

    @property
    def label(self) -> str:
        name = self.scope.split(";")[0]
        return f"{self.op} {name[:60]}"


def quantize_tflite(
    content: bytes,
    signature_key: str,
    options: ConversionOptions,
    representative: "Dataset | None" = None,
    progress: "Progress | None" = None,
) -> ConversionResult:
    """Quantize a float ``.tflite`` (already prepared by :mod:`tflite_opt.quantize.tflite_source`) with ``options``.

    Args:
        content: the float flatbuffer.
        signature_key: the signature calibration samples are fed to (their keys are its input names).
        options: mode, granularity, algorithm, recipe file, I/O type, float fallback.
        representative: calibration samples (static int8/int16x8, GPTQ); validated against the signature already.
        progress: status reporter.

    Raises:
        ConversionError: a bad recipe, nothing (or too little) quantized, or int8 not integer-only.
    """
    progress = ensure(progress)
    mode = Mode(options.mode)
    user_entries = recipes.load_recipe_file(options.recipe) if options.recipe else []
    float_model = flatbuffer_edits.read(content)
    keep_float = keep_float_entries(float_model, options.keep_float)
    recipe = recipes.build_recipe(options, user_entries, keep_float)
    plan = plan_weights(float_model, recipe, recipes.build_recipe(options))
    _check_entries_match(float_model, user_entries, f"--recipe {options.recipe}")
    targets = [w for w in plan if w.targeted]
    if not targets:
        raise ConversionError(_nothing_to_quantize(mode, plan))
    calibration = None
    if recipes.needs_calibration(options):
        calibration = _calibration_data(signature_key, representative, options, progress)
    with progress.task(f"Quantizing ({mode.value}, LiteRT Quantizer)"):
        quantized = _run_quantizer(content, recipe, calibration, min_max=mode in recipes.STATIC_MODES)
    changes = []
    if mode in recipes.STATIC_MODES:
        model = flatbuffer_edits.read(quantized)
        rewired = flatbuffer_edits.feed_shape_ops_from_quantized(model)
        if rewired:
            quantized = flatbuffer_edits.write(model)
            changes.append(f"fed {rewired} SHAPE op(s) the quantized tensor instead of a DEQUANTIZE of it")
    done = quantized_scopes(flatbuffer_edits.read(quantized))
    missing = [w for w in targets if w.scope not in done]
    if missing:
        raise ConversionError(
            f"the LiteRT Quantizer left {len(missing)} of {len(targets)} targeted weight op(s) in float without "
            f"an error: {', '.join(w.label for w in missing[:8])}; the file was not written"
        )
    kept_float = user_entries or options.keep_float or options.allow_float_fallback
    if mode == Mode.INT8 and not kept_float:
        _check_integer_only(quantized)
    return ConversionResult(
        content=quantized,
        backend=Backend.QUANTIZER,
        recipe=recipe,
        quantized_ops=[w.label for w in targets],
        float_ops=[f"{w.label} ({w.reason})" for w in plan if not w.targeted],
        changes=changes,
    )


def plan_weights(model: Any, recipe: list[dict], mode_recipe: list[dict]) -> list[WeightOp]:
    """Every float weight op of ``model`` and whether ``recipe`` targets it (the quantizer's own resolution)."""
    from tflite_opt.compat import quantizer as quantizer_compat

    resolver = _resolver(recipe)
    mode_resolver = _resolver(mode_recipe)
    # Decomposition subgraphs are quantized only along with their composite op: not checked (never a false error).
    invoked = {i for s in model.subgraphs for op in s.operators for i in quantizer_compat.side_effect_subgraphs(op)}
    plan = []
    for subgraph in (s for index, s in enumerate(model.subgraphs) if index not in invoked):
        for op in subgraph.operators:
            weight = _float_weight(model, subgraph, op)
            if weight is None:
                continue
            code = model.operatorCodes[op.opcodeIndex].builtinCode
            op_key = quantizer_compat.op_name_for_code(code)
            name = flatbuffer_edits.op_name(model, op)
            scope = quantizer_compat.op_scope(op, subgraph.tensors)
            if op_key is None:
                plan.append(WeightOp(name, scope, False, "an op the LiteRT Quantizer does not know"))
                continue
            if _targets(resolver, op_key, scope, weight):
                plan.append(WeightOp(name, scope, True))
            elif _targets(mode_resolver, op_key, scope, weight):
                plan.append(WeightOp(name, scope, False, "kept float by --recipe/--keep-float"))
            else:
                plan.append(WeightOp(name, scope, False, "the quantizer has no kernel config for it in this mode"))
    return plan


def _resolver(recipe: list[dict]) -> Any:
    from tflite_opt.compat import quantizer as quantizer_compat

    try:
        return quantizer_compat.recipe_resolver(recipe)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConversionError(f"the quantization recipe is invalid: {first_line(exc)}") from exc


def _targets(resolver: Any, op_key: str, scope: str, weight: Any) -> bool:
    from tflite_opt.compat import quantizer as quantizer_compat

    algorithm, config = quantizer_compat.resolve(resolver, op_key, scope)
    if algorithm == recipes.NO_QUANTIZE or config is None or config.weight_tensor_config is None:
        return False
    if str(getattr(config.weight_tensor_config.dtype, "value", config.weight_tensor_config.dtype)) != "INT":
        return False
    elements = 1
    for dim in weight.shape:
        elements *= int(dim)
    return elements >= int(config.min_weight_elements or 0)


def _float_weight(model: Any, subgraph: Any, op: Any) -> Any:
    for index in op.inputs if op.inputs is not None else []:
        if index < 0:
            continue
        tensor = subgraph.tensors[index]
        if (
            tensor.type in FLOAT_TYPES
            and tensor.shape is not None
            and len(tensor.shape) >= 2
            and flatbuffer_edits.has_data(model, tensor)
        ):
            return tensor
    return None


def quantized_scopes(model: Any) -> set[str]:
    """Scopes of the ops whose weight input is an integer constant, directly or through a DEQUANTIZE."""
    from tflite_opt.compat import quantizer as quantizer_compat

    scopes = set()
    for subgraph in model.subgraphs:
        producer = {out: op for op in subgraph.operators if op.outputs is not None for out in op.outputs}
        for op in subgraph.operators:
            for index in op.inputs if op.inputs is not None else []:
                if index < 0:
                    continue
                tensor = subgraph.tensors[index]
                source = producer.get(index)
                if source is not None and flatbuffer_edits.op_name(model, source) == "DEQUANTIZE":
                    tensor = subgraph.tensors[source.inputs[0]]
                if (
                    tensor.type in INTEGER_TYPES
                    and flatbuffer_edits.has_data(model, tensor)
                    and tensor.shape is not None
                    and len(tensor.shape) >= 2
                ):
                    scopes.add(quantizer_compat.op_scope(op, subgraph.tensors))
                    break
    return scopes


def _check_entries_match(model: Any, entries: list[dict], flag: str) -> None:
    """Every entry's regex (and operation) must match at least one op: a typo is an error, not a no-op."""
    from tflite_opt.compat import quantizer as quantizer_compat

    ops = []
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex].builtinCode
            ops.append((quantizer_compat.op_name_for_code(code), quantizer_compat.op_scope(op, subgraph.tensors)))
        ops += [("INPUT", flatbuffer_edits.tensor_name(subgraph.tensors[i])) for i in subgraph.inputs or []]
        ops += [("OUTPUT", flatbuffer_edits.tensor_name(subgraph.tensors[i])) for i in subgraph.outputs or []]
    for number, entry in enumerate(entries):
        operation, regex = str(entry["operation"]), str(entry["regex"])
        if any((operation == "*" or op_key == operation) and re.search(regex, scope) for op_key, scope in ops):
            continue
        what = f"entry {number + 1} (regex {regex!r}, operation {operation!r})"
        example = next((scope.split(";")[0] for op_key, scope in ops if op_key not in (None, "INPUT", "OUTPUT")), "")
        raise ConversionError(
            f"{flag} {what} matches no op of the model; recipe regexes are searched in op scopes (output tensor "
            f"names) such as {example!r}"
        )


def keep_float_entries(model: Any, names) -> list[dict]:
    """``--keep-float`` names as ``no_quantize`` recipe entries.

    A name is an op type present in the model (``MEAN``), or a layer/tensor name found, as a whole word, in the
    names of an op's outputs or constant inputs (a Keras layer's last op is often named only by its weights:
    ``StatefulPartitionedCall:0`` reads ``model/logits/MatMul``). Each matched op gets an entry for its exact
    scope.

    Raises:
        ConversionError: a name matches nothing; the message lists close names.
    """
    import difflib

    from tflite_opt.compat import quantizer as quantizer_compat

    ops = []
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            names_of_op = [flatbuffer_edits.tensor_name(subgraph.tensors[i]) for i in op.outputs or []]
            names_of_op += [
                flatbuffer_edits.tensor_name(subgraph.tensors[i])
                for i in op.inputs or []
                if i >= 0 and flatbuffer_edits.has_data(model, subgraph.tensors[i])
            ]
            ops.append(
                (
                    flatbuffer_edits.op_name(model, op),
                    quantizer_compat.op_scope(op, subgraph.tensors),
                    [part for n in names_of_op for part in n.split(";")],
                )
            )
    entries = []
    for name in (str(n).strip() for n in names):
        if name in {op_type for op_type, _, _ in ops}:
            entries.append(recipes.no_quantize_entry(operation=name))
            continue
        word = re.compile(rf"(?<![A-Za-z0-9]){re.escape(name)}(?![A-Za-z0-9])")
        scopes = [scope for _, scope, parts in ops if any(word.search(part) for part in parts)]
        if not scopes:
            candidates = sorted({seg for _, _, parts in ops for part in parts for seg in part.split("/")})
            close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
            hint = f"; close names: {', '.join(close)}" if close else ""
            raise ConversionError(f"--keep-float {name!r} matches no op, layer or tensor of the model{hint}")
        entries += [recipes.no_quantize_entry(scope=scope) for scope in dict.fromkeys(scopes)]
    return entries


def _nothing_to_quantize(mode: Mode, plan: list[WeightOp]) -> str:
    if not plan:
        return f"--mode {mode.value} has nothing to quantize: the model has no float weights (constant tensors)"
    reasons = sorted({f"{w.op}: {w.reason}" for w in plan})
    return (
        f"--mode {mode.value} would quantize none of the model's {len(plan)} weight op(s) ({'; '.join(reasons)}); "
        "try another --mode (int8-weights and dynamic cover conv and depthwise weights) or --granularity"
    )


def _calibration_data(
    signature_key: str, representative: "Dataset | None", options: ConversionOptions, progress: "Progress"
) -> dict[str, list[dict]]:
    if representative is None:
        what = (
            f"--mode {Mode(options.mode).value}" if Mode(options.mode) in recipes.STATIC_MODES else "--algorithm gptq"
        )
        raise ConversionError(f"{what} needs representative data to calibrate (--representative-data PATH)")
    samples = calibration_samples(representative, options.num_samples, progress)
    progress.info(f"Calibrating on {len(samples)} samples")
    return {signature_key: list(samples.samples())}


def _run_quantizer(content: bytes, recipe: list[dict], calibration: dict | None, *, min_max: bool = False) -> bytes:
    """Calibrate (static ranges: absolute min/max, as the converter; GPTQ: the quantizer's own) and quantize."""
    from litert_quantizer import quantizer as litert_quantizer

    from tflite_opt.compat import quantizer as quantizer_compat

    threads = os.cpu_count() or 1
    with _quiet():
        try:
            engine = litert_quantizer.Quantizer(bytearray(content), recipe)
            result = None
            if calibration is not None and min_max:
                result = quantizer_compat.calibrate_min_max(content, recipe, calibration, threads)
            elif calibration is not None:
                result = engine.calibrate(calibration, num_threads=threads)
            output = engine.quantize(result, enable_progress_bar=False, enable_progress_report=False)
        except Exception as exc:  # noqa: BLE001 - the quantizer raises ValueError, RuntimeError, KeyError ...
            raise ConversionError(f"the LiteRT Quantizer failed: {first_line(exc)}") from exc
    if output.quantized_model is None:
        raise ConversionError("the LiteRT Quantizer returned no model")
    return bytes(output.quantized_model)


@contextlib.contextmanager
def _quiet():
    """Hide the quantizer's tqdm bars, Python warnings and native log lines (all shown with -v)."""
    if is_verbose():
        yield
        return
    with warnings.catch_warnings(), quiet_native(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _check_integer_only(content: bytes) -> None:
    from tflite_opt.quantize.converter import float_op_names

    float_ops = float_op_names(content)
    if float_ops:
        raise ConversionError(
            f"int8 quantization is not integer-only: op(s) {', '.join(float_ops)} run in float; "
            "pass --allow-float-fallback to keep them in float"
        )

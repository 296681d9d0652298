"""A float ``.tflite`` file as the source of a quantization, read and prepared without TensorFlow.

Float ``.tflite`` files come from many exporters (TFLiteConverter, litert-torch, onnx2tf, JAX, MediaPipe-era
tools). Before the LiteRT Quantizer sees one, three things are put right, each said in ``TfliteSource.changes``:

* **old-schema operator codes** (the op only in ``deprecated_builtin_code``): normalized, else the quantizer
  sees only ADDs and returns the file unchanged. The output keeps the normalized form, which every current
  runtime reads.
* **no SignatureDef**: one is added for subgraph 0 from its input/output tensors, names kept, so calibration
  data, evaluation and reports can name the tensors (the same names ``evaluate`` uses for such a file).
* **float16 weights** (``float16 constant -> DEQUANTIZE``, the converter's float16 mode): folded to float32
  constants first. float16 -> float32 is exact, so the quantizer starts from exactly the weights the file runs
  with; refusing would only send the user back to find an fp32 export that may not exist.

An already-quantized file (dynamic, int8, int16x8, int4 ...) is refused, naming its mode: quantizing it again
would stack a second rounding on the first, and the quantizer would keep its quantized tensors as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tflite_opt.errors import ModelLoadError
from tflite_opt.quantize import flatbuffer_edits
from tflite_opt.specs import TensorSpec

# Integer weight dtypes that only a quantizer writes (inspection names them but has no mode word for them yet).
_LOW_BIT_WEIGHTS = ("int2", "int4", "uint4")


@dataclass
class TfliteSource:
    """A float ``.tflite`` ready for the quantizer.

    Attributes:
        path: the file given.
        content: the flatbuffer the quantizer gets (normalized as described in the module docstring).
        signature_key: the signature whose inputs calibration data must name.
        inputs: that signature's inputs.
        outputs: that signature's outputs.
        changes: what was done to the file before quantizing, one short sentence each.
    """

    path: Path
    content: bytes
    signature_key: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    changes: list[str] = field(default_factory=list)


def load_tflite_source(path: str | Path, *, signature: str | None = None) -> TfliteSource:
    """Read a float ``.tflite`` file and prepare it for the quantizer.

    Raises:
        EvaluationError: the file is missing, empty or not a valid ``.tflite``.
        ModelLoadError: the file is already quantized, or the signature does not exist.
    """
    from tflite_opt.measure import runtime

    path = Path(path)
    content = runtime.read_model_bytes(path)
    prepared, changes = prepare_float_model(content, source=str(path))
    info = runtime.load_signature(prepared, signature=signature, source=str(path))
    return TfliteSource(
        path=path,
        content=prepared,
        signature_key=info.key or flatbuffer_edits.DEFAULT_SIGNATURE,
        inputs=info.input_specs,
        outputs=info.output_specs,
        changes=changes,
    )


def prepare_float_model(content: bytes, *, source: str = "model") -> tuple[bytes, list[str]]:
    """Check that ``content`` is a float model and put it in the form the quantizer reads.

    Returns:
        (the prepared flatbuffer, what was changed). Unchanged bytes when nothing needed doing.

    Raises:
        EvaluationError: not a valid ``.tflite``.
        ModelLoadError: already quantized.
    """
    from tflite_opt.measure import runtime

    runtime.interpreter_from_bytes(content, source=source)  # the flatbuffer verifier: damaged files stop here
    model = flatbuffer_edits.read(content)
    mode = quantized_mode(model, content)
    if mode is not None:
        raise ModelLoadError(
            f"{source} is already quantized (mode looks like {mode}); the quantizer needs a float model "
            "(float32 weights, or float16 weights): pass the float .tflite it was made from, or the Keras/"
            "SavedModel source"
        )
    changes = []
    codes = flatbuffer_edits.normalize_operator_codes(model)
    if codes:
        changes.append(f"normalized {codes} old-schema operator code(s) (deprecated_builtin_code)")
    folded = flatbuffer_edits.fold_float16_weights(model)
    if folded:
        changes.append(f"dequantized {folded} float16 weight tensor(s) to float32 before quantizing")
    if flatbuffer_edits.add_missing_signature(model):
        changes.append(
            f"added signature '{flatbuffer_edits.DEFAULT_SIGNATURE}' from subgraph 0's inputs/outputs (tensor names)"
        )
    if not changes:
        return bytes(content), []
    prepared = flatbuffer_edits.write(model)
    runtime.interpreter_from_bytes(prepared, source=f"{source} (prepared for the quantizer)")
    return prepared, changes


def quantized_mode(model: Any, content: bytes) -> str | None:
    """The mode an already-quantized model looks like, or ``None`` for a float (fp32/float16) model.

    A model is quantized when any tensor carries quantization scales (the quantizer's own test) or its weights
    are stored in an integer type below 8 bits.
    """
    from tflite_opt.measure.inspection import analyze

    scaled = any(
        tensor.quantization is not None and tensor.quantization.scale is not None and len(tensor.quantization.scale) > 0
        for subgraph in model.subgraphs
        for tensor in subgraph.tensors
    )
    details = analyze(content)
    low_bit = [dtype for dtype in _LOW_BIT_WEIGHTS if dtype in details["weight_tensors"]]
    if not scaled and not low_bit:
        return None
    if low_bit:
        return low_bit[0]
    mode = details["mode"]
    if mode in (None, "fp32", "float16"):
        # Weight-only files run in float: their integer weights sit behind DEQUANTIZE ops.
        return "int8-weights" if "int8" in details["weight_tensors"] else "partly quantized"
    return mode

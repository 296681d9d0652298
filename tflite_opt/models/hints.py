"""What to tell someone who gives a Keras file or a SavedModel where a ``.tflite`` is needed (``inspect``,
``evaluate``): what the file is and the command that makes a ``.tflite`` of it. No TensorFlow import."""

from __future__ import annotations

from pathlib import Path

from tflite_opt.errors import ModelLoadError
from tflite_opt.models.loading import ModelKind, detect_kind

_KIND_NAMES = {
    ModelKind.KERAS3: "a Keras 3 model",
    ModelKind.TF_KERAS: "a tf_keras (Keras 2) model",
    ModelKind.SAVED_MODEL: "a SavedModel directory",
}


def not_tflite_message(path: str | Path) -> str | None:
    """``"m.keras is a Keras 3 model; convert it first: tflite-opt convert m.keras -o m.tflite"`` for a Keras file
    or SavedModel, else ``None`` (a ``.tflite``, or something that is no model at all: the interpreter's own
    message says what is wrong with it)."""
    try:
        kind = detect_kind(path)
    except ModelLoadError:
        return None
    if kind == ModelKind.TFLITE:
        return None
    shown = str(path).rstrip("/") or str(path)
    target = Path(shown).with_suffix(".tflite").name if Path(shown).suffix else f"{Path(shown).name}.tflite"
    return f"{shown} is {_KIND_NAMES[kind]}; convert it first: tflite-opt convert {shown} -o {target}"

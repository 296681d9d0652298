"""The unsafe-layer scan of a Keras file, run before Keras deserializes anything. It fails closed.

Refused unless ``--trust-model``: layers that run arbitrary Python when loaded (``Lambda``), layers that load
external files (``TFSMLayer``; lookup and text layers whose vocabulary is a file path), custom objects (a
``registered_name`` or ``module`` outside Keras itself), and any file whose model config cannot be read or does
not have the structure of a Keras model config — a scan that cannot read the config proves nothing.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from tflite_opt.errors import ModelLoadError

CODE_LAYERS = ("Lambda",)
FILE_LAYERS = ("TFSMLayer",)
VOCABULARY_LAYERS = ("StringLookup", "IntegerLookup", "TextVectorization")
BUILTIN_MODULE_ROOTS = ("keras", "tf_keras")
TRUST_HINT = "pass --trust-model if you trust this file"


def read_config(path: Path) -> Any:
    """The model config of a ``.keras`` archive (``config.json``) or an ``.h5`` file (``model_config``).

    Raises:
        ModelLoadError: the config is missing or is not JSON (the scan cannot run).
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                raw = archive.read("config.json")
        else:
            import h5py

            with h5py.File(path, "r") as handle:
                if "model_config" not in handle.attrs:
                    raise ModelLoadError(f"{path} has no model_config to scan for unsafe layers; {TRUST_HINT}")
                raw = handle.attrs["model_config"]
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except ModelLoadError:
        raise
    except json.JSONDecodeError as exc:
        raise ModelLoadError(
            f"cannot scan {path} for unsafe layers: its model config is not valid JSON (line {exc.lineno}, column "
            f"{exc.colno}); {TRUST_HINT}"
        ) from exc
    except (KeyError, OSError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot scan {path} for unsafe layers: {exc}; {TRUST_HINT}") from exc


def unsafe_layers(config: Any, source: str = "the model") -> list[str]:
    """Every layer/object in ``config`` that is refused without ``--trust-model``, as ``name (reason)``.

    Raises:
        ModelLoadError: ``config`` does not look like a Keras model config.
    """
    if (
        not isinstance(config, dict)
        or not isinstance(config.get("class_name"), str)
        or not isinstance(config.get("config"), (dict, list))
    ):
        raise ModelLoadError(
            f"cannot scan {source} for unsafe layers: its model config has an unexpected structure; {TRUST_HINT}"
        )
    found: list[str] = []
    _walk(config, found)
    return found


def _walk(node: Any, found: list[str]) -> None:
    if isinstance(node, list):
        for value in node:
            _walk(value, found)
        return
    if not isinstance(node, dict):
        return
    reason = _reason(node)
    if reason:
        inner = node.get("config") if isinstance(node.get("config"), dict) else {}
        found.append(f"{inner.get('name', node.get('class_name'))} ({reason})")
    for value in node.values():
        _walk(value, found)


def _reason(node: dict) -> str | None:
    class_name = node.get("class_name")
    if not isinstance(class_name, str):
        return None
    if class_name in CODE_LAYERS:
        return class_name  # runs Python code when loaded
    if class_name in FILE_LAYERS:
        return f"{class_name}: loads external files"
    inner = node.get("config") if isinstance(node.get("config"), dict) else {}
    if class_name in VOCABULARY_LAYERS and isinstance(inner.get("vocabulary"), str):
        return f"{class_name}: reads its vocabulary from a file"
    module = node.get("module")
    registered = node.get("registered_name")
    if isinstance(module, str) and module.split(".")[0] not in BUILTIN_MODULE_ROOTS:
        return f"{class_name}: custom object from {module}"
    if isinstance(registered, str) and ">" in registered:
        return f"{class_name}: custom object {registered}"
    return None


def check_safe(path: Path, trust_model: bool) -> None:
    """Refuse ``path`` unless its config can be read and holds nothing unsafe (``trust_model`` skips the scan).

    Raises:
        ModelLoadError: naming the unsafe layers, or why the config cannot be scanned.
    """
    if trust_model:
        return
    unsafe = unsafe_layers(read_config(path), source=str(path))
    if unsafe:
        raise ModelLoadError(f"{path} contains layer(s) that are unsafe to load: {', '.join(unsafe)}; {TRUST_HINT}")

"""Model loading: SavedModel directories, Keras 3 ``.keras``, tf_keras ``.keras``/``.h5``.

Which Keras wrote a file is detected without importing TensorFlow (the archive's ``metadata.json`` or the HDF5
``keras_version`` attribute), then the file is loaded with that Keras. Every model is exported once to a
SavedModel (``LoadedModel.saved_model_dir``) so that conversion has one path for all kinds, and tensors keep the
names of the model's serving signature.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tflite_opt.errors import ModelLoadError, first_line
from tflite_opt.specs import TensorSpec

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.progress import Progress

DEFAULT_SIGNATURE = "serving_default"


class ModelKind(str, Enum):
    SAVED_MODEL = "savedmodel"
    KERAS3 = "keras3"
    TF_KERAS = "tf_keras"
    TFLITE = "tflite"


def detect_kind(path: str | Path) -> ModelKind:
    """Tell what kind of model ``path`` is, without importing TensorFlow.

    Raises:
        ModelLoadError: missing path, empty file, or a file that is none of the supported kinds.
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model path {path} does not exist")
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            return ModelKind.SAVED_MODEL
        raise ModelLoadError(f"{path} is a folder without saved_model.pb; expected a SavedModel directory")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"model file {path} is empty")
    with open(path, "rb") as handle:
        head = handle.read(8)
    suffix = path.suffix.lower()
    if suffix == ".tflite" or head[4:8] == b"TFL3":
        return ModelKind.TFLITE
    if head.startswith(b"PK"):
        return _keras_archive_kind(path)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return _h5_kind(path)
    raise ModelLoadError(
        f"{path} is not a model tflite-opt can read (expected a SavedModel directory, a .keras archive, "
        "or a Keras .h5 file)"
    )


def _keras_archive_kind(path: Path) -> ModelKind:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "metadata.json" not in names or "config.json" not in names:
                raise ModelLoadError(f"{path} is a zip archive but not a Keras model (no metadata.json/config.json)")
            metadata = json.loads(archive.read("metadata.json"))
    except (zipfile.BadZipFile, json.JSONDecodeError, OSError) as exc:
        raise ModelLoadError(f"{path} is a damaged .keras archive: {exc}") from exc
    version = str(metadata.get("keras_version", ""))
    return ModelKind.KERAS3 if version.startswith("3.") else ModelKind.TF_KERAS


def _h5_kind(path: Path) -> ModelKind:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            version = handle.attrs.get("keras_version", "")
            has_config = "model_config" in handle.attrs
    except OSError as exc:
        raise ModelLoadError(f"{path} is a damaged HDF5 file: {exc}") from exc
    if not has_config:
        raise ModelLoadError(f"{path} holds weights only (no model_config); save the whole model, not weights")
    version = version.decode() if isinstance(version, bytes) else str(version)
    return ModelKind.KERAS3 if version.startswith("3.") else ModelKind.TF_KERAS


@dataclass
class LoadedModel:
    """A model ready for conversion and inference.

    Attributes:
        path: what the user passed.
        kind: the detected kind.
        keras_model: the Keras 3 or tf_keras model object (``None`` for a SavedModel).
        signature_key: the serving signature used for conversion.
        inputs: the model's inputs, by signature name.
    """

    path: Path
    kind: ModelKind
    keras_model: Any = None
    signature_key: str = DEFAULT_SIGNATURE
    inputs: list[TensorSpec] = field(default_factory=list)
    _saved_model_dir: Path | None = None
    _outputs: list[TensorSpec] | None = None
    _signature_fn: Any = None
    _from_file: bool = False  # keras_model is exactly what ``path`` holds (the export may be cached)

    @property
    def saved_model_dir(self) -> Path:
        """A SavedModel of this model (exported once, on first use, into a temp folder removed at exit, or taken
        from the opt-in export cache: :mod:`tflite_opt.models.export_cache`)."""
        if self._saved_model_dir is None:
            source = self.path if self._from_file else None
            self._saved_model_dir = export_saved_model(self.keras_model, self.kind, source=source)
        return self._saved_model_dir

    @property
    def outputs(self) -> list[TensorSpec]:
        if self._outputs is None:
            fn = self.signature_function()
            self._outputs = [
                TensorSpec(name, _shape(spec.shape), spec.dtype.name)
                for name, spec in sorted(fn.structured_outputs.items())
            ]
        return self._outputs

    @property
    def is_keras(self) -> bool:
        return self.kind in (ModelKind.KERAS3, ModelKind.TF_KERAS)

    def signature_function(self):
        if self._signature_fn is None:
            tf = _tf(self.kind)
            loaded = tf.saved_model.load(str(self.saved_model_dir))
            self._signature_fn = loaded.signatures[self.signature_key]
            self._signature_fn.tflite_opt_owner = loaded  # keep variables alive
        return self._signature_fn

    def predict(self, inputs: Mapping[str, np.ndarray], batch_size: int = 256) -> dict[str, np.ndarray]:
        """Run the model in TensorFlow on named inputs; returns named outputs (the reference for fidelity)."""
        tf = _tf(self.kind)
        fn = self.signature_function()
        n = len(next(iter(inputs.values())))
        chunks: dict[str, list[np.ndarray]] = {}
        for start in range(0, n, batch_size):
            feed = {k: tf.constant(v[start : start + batch_size]) for k, v in inputs.items()}
            for name, value in fn(**feed).items():
                chunks.setdefault(name, []).append(value.numpy())
        return {name: np.concatenate(parts) for name, parts in chunks.items()}


def _shape(shape) -> tuple[int | None, ...]:
    return tuple(None if d is None else int(d) for d in shape)


def _tf(kind: ModelKind):
    from tflite_opt.models import tf_runtime

    return tf_runtime.import_tensorflow(legacy_keras=kind == ModelKind.TF_KERAS)


def load_model(
    path: str | Path,
    *,
    signature: str | None = None,
    trust_model: bool = False,
    input_shapes: Mapping[str, Sequence[int | None]] | None = None,
    progress: "Progress | None" = None,
) -> LoadedModel:
    """Load a SavedModel directory or a Keras file (Keras 3 or tf_keras, detected).

    Args:
        path: the model.
        signature: SavedModel signature key; required when the SavedModel has several.
        trust_model: allow layers that run arbitrary Python on load (Lambda). Off by default (safe mode).
        input_shapes: fix input shapes by name (e.g. a dynamic height/width), batch axis included.
        progress: status reporter.

    Raises:
        ModelLoadError: with what went wrong and how to fix it.
    """
    path = Path(path)
    kind = detect_kind(path)
    if kind == ModelKind.TFLITE:
        raise ModelLoadError(
            f"{path} is already a .tflite file; this command takes a SavedModel or Keras model "
            "(use 'tflite-opt evaluate' or 'inspect' for .tflite files)"
        )
    if progress is not None:
        progress.info(f"Loading {kind.value} model {path}")
    if kind == ModelKind.SAVED_MODEL:
        model = _load_saved_model(path, signature)
    else:
        if signature not in (None, DEFAULT_SIGNATURE):
            raise ModelLoadError("--signature applies to SavedModel directories only")
        model = _load_keras(path, kind, trust_model)
    if input_shapes:
        model = with_input_shapes(model, input_shapes)
    return model


def _load_saved_model(path: Path, signature: str | None) -> LoadedModel:
    tf = _tf(ModelKind.SAVED_MODEL)
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # noqa: BLE001 - TF raises many types for a bad SavedModel
        raise ModelLoadError(f"cannot load SavedModel {path}: {first_line(exc)}") from exc
    keys = sorted(loaded.signatures.keys())
    if not keys:
        raise ModelLoadError(f"SavedModel {path} has no signatures; re-export it with a serving signature")
    if signature is None:
        if len(keys) > 1 and DEFAULT_SIGNATURE not in keys:
            raise ModelLoadError(
                f"SavedModel {path} has {len(keys)} signatures ({', '.join(keys)}); choose one with --signature"
            )
        if len(keys) > 1 and _distinct_signatures(loaded, keys):
            raise ModelLoadError(
                f"SavedModel {path} has {len(keys)} signatures ({', '.join(keys)}); choose one with --signature"
            )
        signature = DEFAULT_SIGNATURE if DEFAULT_SIGNATURE in keys else keys[0]
    elif signature not in keys:
        raise ModelLoadError(f"SavedModel {path} has no signature {signature!r}; it has {', '.join(keys)}")
    fn = loaded.signatures[signature]
    fn.tflite_opt_owner = loaded
    _, kwargs = fn.structured_input_signature
    inputs = [TensorSpec(name, _shape(spec.shape), spec.dtype.name) for name, spec in sorted(kwargs.items())]
    if not inputs:
        raise ModelLoadError(f"signature {signature!r} of {path} takes no named inputs")
    return LoadedModel(
        path=path,
        kind=ModelKind.SAVED_MODEL,
        signature_key=signature,
        inputs=inputs,
        _saved_model_dir=path,
        _signature_fn=fn,
    )


def _distinct_signatures(loaded, keys: list[str]) -> bool:
    """Keras 3 exports both 'serve' and 'serving_default' for the same function: that is not ambiguous."""

    def describe(key):
        fn = loaded.signatures[key]
        _, kwargs = fn.structured_input_signature
        ins = sorted((k, tuple(v.shape.as_list()), v.dtype.name) for k, v in kwargs.items())
        outs = sorted((k, tuple(v.shape.as_list())) for k, v in fn.structured_outputs.items())
        return ins, outs

    reference = describe(DEFAULT_SIGNATURE)
    return any(describe(key) != reference for key in keys if key != DEFAULT_SIGNATURE)


def _load_keras(path: Path, kind: ModelKind, trust_model: bool) -> LoadedModel:
    from tflite_opt.models.safety import check_safe

    check_safe(path, trust_model)
    from tflite_opt.models import tf_runtime

    if kind == ModelKind.KERAS3:
        keras = tf_runtime.import_keras3()
        load = keras.saving.load_model
    else:
        keras = tf_runtime.import_tf_keras()
        load = keras.models.load_model
    kwargs = {"safe_mode": not trust_model} if path.suffix.lower() == ".keras" else {}
    try:
        try:
            model = load(str(path), **kwargs)
        except (TypeError, ValueError) as exc:
            if "compile" not in str(exc).lower() and "optimizer" not in str(exc).lower():
                raise
            # A model whose training configuration cannot be restored still converts.
            model = load(str(path), compile=False, **kwargs)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
        message = first_line(exc)
        if "safe_mode" in message or "unsafe" in message.lower():
            raise ModelLoadError(
                f"{path} needs unsafe deserialization (e.g. a Lambda layer); pass --trust-model if you trust it"
            ) from exc
        raise ModelLoadError(f"cannot load {kind.value} model {path}: {message}") from exc
    return LoadedModel(path=path, kind=kind, keras_model=model, inputs=keras_input_specs(model, kind), _from_file=True)


def keras_input_specs(model, kind: ModelKind) -> list[TensorSpec]:
    """The inputs of a Keras model, named as its exported serving signature will name them."""
    try:
        tensors = list(model.inputs)
    except (AttributeError, ValueError) as exc:
        raise ModelLoadError(
            f"model {getattr(model, 'name', '?')} has no defined inputs (a subclassed model that was never "
            "called?); save a Functional or Sequential model, or a SavedModel"
        ) from exc
    if kind == ModelKind.TF_KERAS:
        names = list(model.input_names)
    else:
        names = [t.name for t in tensors]
    specs = []
    for name, tensor in zip(names, tensors):
        dtype = tensor.dtype if isinstance(tensor.dtype, str) else tensor.dtype.name
        specs.append(TensorSpec(name, _shape(tensor.shape), str(dtype)))
    return sorted(specs, key=lambda s: s.name)


_scratch_root: Path | None = None


def scratch_dir(prefix: str) -> Path:
    """A new empty folder for intermediate files (exported SavedModels), under one process-wide temporary root
    that is removed, with everything in it, when the process exits."""
    global _scratch_root
    if _scratch_root is None:
        _scratch_root = Path(tempfile.mkdtemp(prefix="tflite_opt_"))
        atexit.register(shutil.rmtree, _scratch_root, True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}_", dir=_scratch_root))


def export_saved_model(keras_model, kind: ModelKind, *, source: Path | None = None) -> Path:
    """Export a Keras 3 or tf_keras model to a temporary SavedModel (removed at exit).

    ``source``: the file ``keras_model`` was loaded from, unchanged; its export is then taken from (or put into)
    the opt-in export cache (:mod:`tflite_opt.models.export_cache`) when that is on.
    """
    if source is not None:
        from tflite_opt.models.export_cache import cached_export

        cached = cached_export(source, kind.value, lambda target: _export_to(keras_model, kind, target))
        if cached is not None:
            return cached
    target = scratch_dir("export") / "model"
    _export_to(keras_model, kind, target)
    return target


def _export_to(keras_model, kind: ModelKind, target: Path) -> None:
    tf = _tf(kind)
    try:
        if kind == ModelKind.KERAS3 or is_keras3_model(keras_model):
            keras_model.export(str(target), format="tf_saved_model", verbose=False)
        else:
            tf.saved_model.save(keras_model, str(target))
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"cannot export {getattr(keras_model, 'name', 'the model')} for conversion: {first_line(exc)}"
        ) from exc


def is_keras3_model(model) -> bool:
    """Whether ``model`` is a Keras 3 model (a user's subclass counts: its bases live in ``keras``)."""
    return any(cls.__module__.split(".")[0] == "keras" for cls in type(model).__mro__)


def with_input_shapes(model: LoadedModel, input_shapes: Mapping[str, Sequence[int | None]]) -> LoadedModel:
    """Re-export the model with fixed input shapes (``--input-shape NAME=D0,D1,...``), names kept."""
    tf = _tf(model.kind)
    specs = {spec.name: spec for spec in model.inputs}
    unknown = sorted(set(input_shapes) - set(specs))
    if unknown:
        raise ModelLoadError(
            f"--input-shape names {', '.join(unknown)}, but the model's inputs are {', '.join(sorted(specs))}"
        )
    new_specs = []
    for name, spec in specs.items():
        shape = tuple(input_shapes.get(name, spec.shape))
        if len(shape) != len(spec.shape):
            raise ModelLoadError(
                f"--input-shape {name} has {len(shape)} dimensions but the input has {len(spec.shape)} {spec.shape}"
            )
        for want, have in zip(shape, spec.shape):
            if have is not None and want is not None and want != have:
                raise ModelLoadError(
                    f"--input-shape {name}={shape} conflicts with the model's fixed shape {spec.shape}"
                )
        new_specs.append(TensorSpec(name, shape, spec.dtype))
    fn = model.signature_function()
    tensor_specs = {s.name: tf.TensorSpec(s.shape, s.dtype, name=s.name) for s in new_specs}

    module = tf.Module()
    module.source = fn.tflite_opt_owner  # keeps the original variables reachable from the new SavedModel
    module.serve = _keyword_function(tf, fn, tensor_specs)
    folder = scratch_dir("shape")
    tf.saved_model.save(module, str(folder / "model"), signatures={DEFAULT_SIGNATURE: module.serve})
    reloaded = _load_saved_model(folder / "model", DEFAULT_SIGNATURE)
    reloaded.path = model.path
    return reloaded


def _keyword_function(tf, fn, tensor_specs):
    names = sorted(tensor_specs)
    bad = [n for n in names if not n.isidentifier()]
    if bad:
        raise ModelLoadError(f"--input-shape cannot re-sign inputs whose names are not identifiers: {bad}")
    args = ", ".join(names)
    namespace: dict[str, Any] = {"fn": fn}
    # Builds `def serve(a, b): return fn(a=a, b=b)` so the signature keeps the input names.
    exec(f"def serve({args}):\n    return fn({', '.join(f'{n}={n}' for n in names)})", namespace)  # noqa: S102
    return tf.function(namespace["serve"], input_signature=[tensor_specs[n] for n in names]).get_concrete_function()

"""The options a ``[[variant]]`` may set: every :class:`ConversionOptions` field, read from the dataclass itself,
plus the options of each training kind (``prune``, ``qat``, ``cluster``, ``distill``).

Conversion keys are not listed by hand: each field's annotation says how a TOML value is checked and turned into
the option (an Enum → one of its values, ``Path`` → a file that must exist, ``Sequence[str]`` → a list of
strings, ``bool``/``int``/``float``/``str`` as they are). A field another backend or transform adds to
``ConversionOptions`` is a pipeline key at once.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tflite_opt.modes import Mode
from tflite_opt.quantize.options import ConversionOptions

TRAINING_KINDS = ("prune", "qat", "cluster", "distill")


@dataclass(frozen=True)
class OptionKind:
    """How one option is read from TOML: ``kind`` for :meth:`TableReader.value`, and how to build the value.

    Attributes:
        kind: ``str``, ``bool``, ``int``, ``float``, ``str_list``, ``choice``, ``path`` or ``any``.
        choices: the allowed values of a ``choice``.
        enum: the Enum a ``choice`` becomes.
        default: the field's default, in its TOML (JSON-able) form.
        minimum, maximum, open_minimum: range of a number.
        as_string: a ``path`` kept as a string (annotation ``str``) rather than a ``Path``.
    """

    kind: str
    choices: tuple[str, ...] = ()
    enum: type | None = None
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    open_minimum: bool = False
    as_string: bool = False


def _resolve_hint(field: dataclasses.Field) -> Any:
    hint = field.type
    if isinstance(hint, str):
        module = sys.modules.get(ConversionOptions.__module__)
        try:
            hint = eval(hint, dict(vars(module)) if module else {})  # noqa: S307 - our own dataclass's annotation
        except Exception:  # noqa: BLE001 - a name only imported for type checking: fall back to the default
            return None
    return hint


def _plain_default(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain_default(v) for v in value]
    return value


def _kind_of(hint: Any, default: Any) -> OptionKind:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else None
        origin = typing.get_origin(hint)
    plain = _plain_default(default)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return OptionKind("choice", tuple(str(m.value) for m in hint), enum=hint, default=plain)
    if hint is bool:
        return OptionKind("bool", default=plain)
    if hint is int:
        return OptionKind("int", default=plain, minimum=0)
    if hint is float:
        return OptionKind("float", default=plain)
    if isinstance(hint, type) and issubclass(hint, Path):
        return OptionKind("path", default=plain)
    if origin in (list, tuple, collections.abc.Sequence, typing.Sequence):
        return OptionKind("str_list", default=plain)
    if hint is str:
        return OptionKind("str", default=plain)
    if isinstance(default, bool):
        return OptionKind("bool", default=plain)
    if isinstance(default, int | float):
        return OptionKind("float" if isinstance(default, float) else "int", default=plain)
    return OptionKind("any", default=plain)


def conversion_option_kinds() -> dict[str, OptionKind]:
    """Every :class:`ConversionOptions` field but ``mode``, with how a pipeline value is read into it."""
    kinds = {}
    for field in dataclasses.fields(ConversionOptions):
        if field.name == "mode":
            continue
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = None
        kinds[field.name] = _kind_of(_resolve_hint(field), default)
        if field.name == "num_samples":
            kinds[field.name] = dataclasses.replace(kinds[field.name], minimum=1)
    return kinds


def build_conversion_options(mode: str, values: dict[str, Any]) -> ConversionOptions:
    """``ConversionOptions`` from a variant's resolved (JSON-able) conversion values."""
    kinds = conversion_option_kinds()
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        kind = kinds[name]
        if value is None:
            kwargs[name] = None
        elif kind.enum is not None:
            kwargs[name] = kind.enum(value)
        elif kind.kind == "path" and not kind.as_string:
            kwargs[name] = Path(value)
        elif kind.kind == "str_list":
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return ConversionOptions(mode=Mode(mode), **kwargs)


def training_option_kinds(kind: str) -> dict[str, OptionKind]:
    """The options of one training kind, with defaults (fine-tuning settings first, then the kind's own)."""
    from tflite_opt.training.clustering import CentroidInit
    from tflite_opt.training.fit import LOSS_NAMES
    from tflite_opt.training.pruning import SCHEDULE_NAMES

    learning_rate, epochs = {"prune": 1e-3, "qat": 1e-4, "cluster": 1e-4}.get(kind), 2
    if kind == "distill":
        from tflite_opt.training import distillation

        learning_rate, epochs = distillation.DEFAULT_LEARNING_RATE, distillation.DEFAULT_EPOCHS
    common = {
        "epochs": OptionKind("int", default=epochs, minimum=1),
        "batch_size": OptionKind("int", default=32, minimum=1),
        "learning_rate": OptionKind("float", default=learning_rate, minimum=0, open_minimum=True),
        "val_split": OptionKind("float", default=0.1, minimum=0, maximum=0.95),
        "seed": OptionKind("int", default=0),
        "loss": OptionKind("choice", tuple(LOSS_NAMES), default="auto"),
    }
    if kind != "distill":
        common["skip_layers"] = OptionKind("str_list", default=[])
    if kind == "prune":
        own = {
            "sparsity": OptionKind("float", default=0.5, minimum=0, maximum=0.99, open_minimum=True),
            "schedule": OptionKind("choice", tuple(SCHEDULE_NAMES), default="constant"),
            "structure": OptionKind("choice", ("2:4",), default=None),
        }
    elif kind == "qat":
        own = {"preserve_sparsity": OptionKind("bool", default=False)}
    elif kind == "cluster":
        own = {
            "clusters": OptionKind("int", default=16, minimum=2),
            "init": OptionKind("choice", tuple(c.value for c in CentroidInit), default="kmeans++"),
            "preserve_sparsity": OptionKind("bool", default=False),
        }
    else:
        own = {
            "student": OptionKind("path"),
            "temperature": OptionKind("float", default=distillation.DEFAULT_TEMPERATURE, minimum=0, open_minimum=True),
            "alpha": OptionKind("float", default=distillation.DEFAULT_ALPHA, minimum=0, maximum=1),
        }
    return {**common, **own}


def default_variant_name(kind: str, mode: str, training: dict[str, Any]) -> str:
    """The name ``compare`` gives the same row: ``int8``, ``qat_int8``, ``pruned_50``, ``clustered_16``."""
    if kind == "convert":
        return mode
    if kind == "qat":
        return f"qat_{mode}"
    if kind == "prune":
        return f"pruned_{int(round(training['sparsity'] * 100))}"
    if kind == "cluster":
        return f"clustered_{training['clusters']}"
    return f"distilled_{mode}"

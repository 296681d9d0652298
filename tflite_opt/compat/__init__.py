"""Every private TensorFlow, Keras, tfmot and LiteRT attribute tflite-opt relies on, in one place.

``litert`` (LiteRT only, used by the TensorFlow-free ``measure`` layer) and ``tensorflow`` (TensorFlow, tf_keras,
Keras 3 and tfmot internals) each name the versions they were written for. When an attribute is missing, the
error says so in one line, with the installed and the expected versions, instead of an ``AttributeError`` deep
in a conversion.
"""

from __future__ import annotations

from typing import Any

from tflite_opt.environment import package_version
from tflite_opt.errors import TfliteOptError


class CompatibilityError(TfliteOptError):
    """An installed TensorFlow/LiteRT lacks a private attribute this tflite-opt release was written against."""


def require(obj: Any, attribute: str, *, package: str, written_for: str) -> Any:
    """``getattr(obj, attribute)``, or a :class:`CompatibilityError` naming installed vs expected versions."""
    try:
        return getattr(obj, attribute)
    except AttributeError:
        installed = package_version(package) or "not installed"
        raise CompatibilityError(
            f"{package} {installed} has no {type(obj).__name__}.{attribute}, which this tflite-opt was written "
            f"for ({package} {written_for}); install {package}=={written_for}.* or upgrade tflite-opt"
        ) from None

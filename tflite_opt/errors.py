"""The library's exception hierarchy. Commands turn these into one clear line on stderr (exit 1)."""


class TfliteOptError(Exception):
    """Base class: something the user can fix went wrong. The message says what and how."""


class ModelLoadError(TfliteOptError):
    """The model file or directory cannot be read, or is of an unsupported kind."""


class DataError(TfliteOptError):
    """Representative, evaluation or training data is missing, malformed or does not fit the model."""


class ConversionError(TfliteOptError):
    """TFLiteConverter failed, or produced something that violates what was asked (e.g. not integer-only)."""


class EvaluationError(TfliteOptError):
    """A .tflite file cannot be loaded or run by the LiteRT interpreter."""


class TrainingError(TfliteOptError):
    """Fine-tuning (pruning, QAT, clustering, distillation) cannot start or failed."""


class ClusterConfigError(TfliteOptError):
    """``TF_CONFIG`` (the cluster of ``--distribute multi-worker``) is missing or malformed; commands exit 2."""


class StrictWarning(TfliteOptError):
    """A warning under ``--strict``: CI asked for warnings to fail the run."""


class OutputPathError(TfliteOptError):
    """The output path is unusable (e.g. it is the input, or its folder cannot be written)."""


FIRST_LINE_LIMIT = 300


def first_line(exc: BaseException | str, limit: int = FIRST_LINE_LIMIT) -> str:
    """The first non-empty line of an exception's message (its type name when empty), cut at ``limit`` characters.

    Underlying libraries (the converter, the interpreter, Keras) raise multi-line C++ or graph dumps; a user gets
    one line of it.
    """
    text = str(exc).strip()
    if not text:
        return type(exc).__name__ if isinstance(exc, BaseException) else ""
    return text.splitlines()[0].strip()[:limit]

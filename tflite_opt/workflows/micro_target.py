"""``evaluate --target micro`` and ``compare --target micro`` (SPEC §2, §9): every variant also runs in TFLite Micro.

After the host measurements, each variant that was measured is run in the ``tflite-micro`` interpreter
(:func:`tflite_opt.measure.micro.measure_micro`, arena search only, no fidelity pass): its smallest arena goes into
the report's ``arena_bytes`` and the table gets ``arena`` and ``flash`` columns
(:mod:`tflite_opt.reporting.micro_columns`). Then the gates are checked again, so ``--gate "arena_bytes<=65536"``
sees the arenas.

Every variant is measured, float ones too: TFLM runs float kernels, so an fp32 arena is a real number (and the
baseline int8 is compared with); such variants get the note "float on a microcontroller: consider int8". A
variant TFLM cannot run (an op it lacks, a hybrid or float16 op it refuses) is *not* a failed variant: its arena
is ``null``, the cell says ``n/a`` and the note under the table says why; an ``arena_bytes`` gate on it is
unknown, hence failed (exit 3), with that reason. A missing ``tflite-micro`` package stops the command.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tflite_opt.compat import CompatibilityError
from tflite_opt.errors import TfliteOptError
from tflite_opt.progress import Progress, ensure

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.reporting.report import Report
    from tflite_opt.representative_data import Dataset

TARGETS = ("host", "micro")
ARENA_SAMPLES = 1  # the arena search invokes on the first sample


def measure_arenas(
    report: "Report",
    *,
    data: "str | os.PathLike | Dataset | None",
    gates: Sequence = (),
    contents: Mapping[str, bytes] | None = None,
    signature: str | None = None,
    preprocess: str = "unit",
    progress: Progress | None = None,
) -> None:
    """Run every measured variant of ``report`` in TFLM: ``arena_bytes`` and ``micro_note`` set, gates re-checked.

    Args:
        report: the host report (evaluate's or compare's), changed in place.
        data: the evaluation data (path, ``random`` or Dataset); the arena search invokes on its first sample
            (zeros when ``None``).
        gates: the parsed gates the report was built with; they are checked again with the arenas.
        contents: variant name -> the file's bytes, for variants not (only) on disk; the others are read from
            their ``path``.
        signature, preprocess: as for the host measurement.
        progress: where progress goes.

    Raises:
        CompatibilityError: tflite-micro is missing or not the version this was written for.
    """
    from tflite_opt.reporting.gates import check_gates

    progress = ensure(progress)
    contents = contents or {}
    for variant in report.variants:
        if variant.ok:
            content = contents.get(variant.name)
            if content is None:
                content = Path(variant.path).read_bytes()
            variant.arena_bytes, variant.micro_note = _measure_one(
                content, variant.name, data, signature, preprocess, progress
            )
    report.gates = check_gates(gates, report.variants, report.reference)


def _measure_one(content: bytes, name: str, data, signature, preprocess, progress) -> tuple[int | None, str | None]:
    """(arena, note) of one file: the note says why there is no arena, or flags a float model."""
    from tflite_opt.measure.micro import measure_micro, unsupported_reason

    try:
        result = measure_micro(
            content,
            path=name,
            data=data,
            signature=signature,
            preprocess=preprocess,
            num_samples=ARENA_SAMPLES,
            allow_random=True,
            fidelity=False,
            progress=progress,
        )
    except CompatibilityError:
        raise
    except TfliteOptError as exc:
        return None, f"TFLite Micro cannot run it: {exc}"
    if not result.runs:
        return None, unsupported_reason(result)
    return result.arena_bytes, result.warnings[0] if result.float_model else None

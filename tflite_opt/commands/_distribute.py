"""``--distribute multi-worker`` in the fine-tuning commands (prune, qat, cluster, distill).

``TF_CONFIG`` is checked before TensorFlow is imported (exit 2), the cluster is joined with a timeout (a worker
that never comes would otherwise leave the others waiting forever), and the outputs of every worker but the chief
go to a private temporary folder that is removed when the command ends: every worker runs the same steps (saving
included, as TensorFlow's multi-worker guide asks), only the chief's files exist afterwards.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tflite_opt.errors import ClusterConfigError
from tflite_opt.training import cluster, distributed  # no TensorFlow at import time
from tflite_opt.training.fit import Distribute

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.training.cluster import ClusterRole

_TEMP_KEY = "tflite_opt.worker_temp"


class ClusterConfigUsageError(click.ClickException):
    """A missing or malformed ``TF_CONFIG``: one line, exit 2 (like a usage error, without the usage text)."""

    exit_code = 2


def timeout_option(func):
    """``--distribute-timeout SECONDS``."""
    return click.option(
        "--distribute-timeout",
        "distribute_timeout",
        type=click.FloatRange(min=0),
        default=distributed.DEFAULT_TIMEOUT_SECONDS,
        show_default=True,
        metavar="SECONDS",
        help="multi-worker: fail (one line) when the workers have not all joined, or a step has waited for "
        "them, this long; 0 waits forever.",
    )(func)


def start(distribute: str, timeout: float, progress) -> "ClusterRole | None":
    """Check ``TF_CONFIG`` and join the cluster (``--distribute multi-worker``), before TensorFlow runs anything.

    Returns:
        This process's role in the cluster, or ``None`` for a single-process run.

    Raises:
        ClusterConfigUsageError: ``TF_CONFIG`` is missing or malformed (exit 2).
        click.UsageError: ``--distribute-timeout`` without ``--distribute multi-worker``.
    """
    ctx = click.get_current_context(silent=True)
    if distribute != Distribute.MULTI_WORKER.value:
        if ctx is not None and ctx.get_parameter_source("distribute_timeout") == click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError("--distribute-timeout applies to --distribute multi-worker only")
        if cluster.tf_config_is_set():
            progress.warn(
                f"TF_CONFIG is set, but --distribute is {distribute}: this process trains alone; pass "
                "--distribute multi-worker to train on its cluster"
            )
        return None
    try:
        role = cluster.role_from_environment()
    except ClusterConfigError as exc:
        raise ClusterConfigUsageError(str(exc)) from exc
    from tflite_opt.verbosity import silence_native_stderr

    # gRPC and TensorFlow's coordination service log from background threads until the process ends.
    silence_native_stderr()
    progress.info(
        f"Joining the cluster of TF_CONFIG as {role.describe()}; the chief ({role.chief_name}) writes the outputs"
    )
    with progress.task(f"Waiting for all {role.workers} workers"):
        distributed.start_multi_worker(timeout, guard=lambda: _last_resort(timeout))
    progress.info(f"All {role.workers} workers joined")
    return role


@contextlib.contextmanager
def _last_resort(timeout: float):
    """End the process (exit 1, with a dump of where it waited) if TensorFlow's own rendezvous outlives
    ``timeout``: it waits in native code that no Python exception reaches. ``rendezvous.wait_for_cluster`` has
    checked the workers just before, so only a worker that dies in between gets here."""
    if not timeout:
        yield
        return
    import faulthandler

    faulthandler.dump_traceback_later(timeout, exit=True, file=sys.stderr)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def discards(role: "ClusterRole | None") -> bool:
    """Whether this process's outputs are thrown away (a worker that is not the chief)."""
    return role is not None and not role.is_chief


def write_path(path: str | os.PathLike, role: "ClusterRole | None") -> Path:
    """Where this process writes ``path``: the path itself, or (not the chief) a file in a private temporary
    folder that is removed when the command ends."""
    if not discards(role):
        return Path(path)
    ctx = click.get_current_context()
    if _TEMP_KEY not in ctx.meta:
        import shutil
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix=f"tflite-opt-{role.task_type}{role.task_index}-"))
        ctx.meta[_TEMP_KEY] = [folder, 0]
        ctx.call_on_close(lambda: shutil.rmtree(folder, ignore_errors=True))
    place = ctx.meta[_TEMP_KEY]
    place[1] += 1
    return place[0] / f"{place[1]}-{Path(path).name}"


def discarded_note(role: "ClusterRole") -> str:
    return f"{role.name} is not the chief: nothing written here; the chief ({role.chief_name}) writes the outputs"

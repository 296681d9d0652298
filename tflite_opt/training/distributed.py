"""``--distribute multi-worker``: the cluster from ``TF_CONFIG`` and TensorFlow's ``MultiWorkerMirroredStrategy``.

``TF_CONFIG`` is read and checked without TensorFlow (``training.cluster``), so that a missing or malformed one is
named before seconds of imports. ``start_multi_worker`` then creates the strategy; TensorFlow allows that
only before anything else runs (collective ops are configured when its eager context starts), so commands call it
before loading a model, and ``training.fit.make_strategy`` hands back the same strategy afterwards (one per
process). Nothing home-made: sharding, all-reduce and failure detection are TensorFlow's own.

* The global batch is split across the replicas of all workers (``tf.data`` auto-sharding by data, see
  ``training.fit.batches``): every optimizer step sees ``--batch-size`` samples, as on one worker.
* The chief (task type ``chief``, else worker 0) writes the outputs; the commands send the others' to a temporary
  folder that is removed (every worker saves, as TensorFlow's multi-worker guide asks).
* A worker that never starts is named after ``--distribute-timeout`` (``rendezvous``: TensorFlow itself would wait
  forever). One that dies later is noticed by TensorFlow's coordination service (missed heartbeats) or by the
  collectives' timeout (``CommunicationOptions(timeout_seconds=...)``); ``failure_text`` turns either into one line.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import Any

from tflite_opt.errors import ClusterConfigError, TrainingError, first_line
from tflite_opt.training.cluster import role_from_environment

DEFAULT_TIMEOUT_SECONDS = 600.0

_STARTED: dict[str, Any] = {}  # the one MultiWorkerMirroredStrategy of this process


def start_multi_worker(timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS, *, guard: Callable[[], Any] | None = None):
    """Create this process's ``MultiWorkerMirroredStrategy`` (cluster from ``TF_CONFIG``) once every worker has
    started (``rendezvous.wait_for_cluster``). Call before TensorFlow runs anything else; later calls return the
    same strategy.

    Args:
        timeout_seconds: how long to wait for the other workers to start, and how long one collective (an
            all-reduce, a broadcast) may wait for them before it fails with ``DeadlineExceededError``; ``0``
            waits forever.
        guard: a context manager factory wrapped around TensorFlow's own rendezvous (which no Python code can
            interrupt): the command's last-resort timeout.

    Raises:
        ClusterConfigError: ``TF_CONFIG`` is missing or malformed.
        TrainingError: a worker did not start in time, or TensorFlow already ran something in this process, or
            the strategy cannot start.
    """
    if "strategy" in _STARTED:
        return _STARTED["strategy"]
    from tflite_opt.models import tf_runtime
    from tflite_opt.training.rendezvous import wait_for_cluster

    role = role_from_environment()  # the one-line TF_CONFIG errors, rather than TensorFlow's
    tf = tf_runtime.import_tensorflow(legacy_keras=True)
    wait_for_cluster(role, timeout_seconds)
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_seconds or None)
    try:
        with (guard or contextlib.nullcontext)():
            strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except RuntimeError as exc:
        if "program startup" in str(exc):
            raise TrainingError(
                "--distribute multi-worker must start before TensorFlow runs anything in the process (call "
                "training.distributed.start_multi_worker before loading a model)"
            ) from exc
        raise TrainingError(f"cannot start MultiWorkerMirroredStrategy: {first_line(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - TensorFlow raises many types from the gRPC server start
        raise TrainingError(f"cannot start MultiWorkerMirroredStrategy: {first_line(exc)}") from exc
    _STARTED["strategy"] = strategy
    return strategy


def started_strategy():
    """The strategy ``start_multi_worker`` made, or ``None``."""
    return _STARTED.get("strategy")


_TASK = re.compile(r"/job:(\w+)/replica:\d+/task:(\d+)")
_CLUSTER_ERRORS = ("UnavailableError", "DeadlineExceededError", "CancelledError", "AbortedError", "InternalError")


def failure_text(exc: BaseException) -> str | None:
    """One line for a training failure caused by the cluster (a worker died or stopped answering), else ``None``.

    TensorFlow reports these as ``UnavailableError`` (missed heartbeats, collectives aborted) or
    ``DeadlineExceededError`` (a collective outlived its timeout), with a multi-line message.
    """
    if started_strategy() is None or type(exc).__name__ not in _CLUSTER_ERRORS:
        return None
    message = str(getattr(exc, "message", "") or exc)
    lowered = message.lower()
    if "heartbeat" in lowered or "unhealthy" in lowered or "is down" in lowered:
        # "... The following tasks are unhealthy (stopped sending heartbeats):\n/job:worker/replica:0/task:1 ..."
        marker = re.search(r"(unhealthy|is down)(.*)", message, re.DOTALL)
        scope = marker.group(2) if marker else message
        try:
            me = role_from_environment().name
        except ClusterConfigError:
            me = ""
        tasks = sorted({f"{job} {index}" for job, index in _TASK.findall(scope)} - {me})
        who = ", ".join(tasks) if tasks else "a worker"
        return f"{who} stopped (no heartbeats): the other workers stop too; restart all of them together"
    if type(exc).__name__ == "DeadlineExceededError" or "timed out" in lowered or "deadline" in lowered:
        return (
            "a collective waited longer than --distribute-timeout for the other workers (one is stuck or gone); "
            "restart all of them together, or raise --distribute-timeout"
        )
    return f"the cluster failed ({type(exc).__name__}: {first_line(message)}); restart all workers together"

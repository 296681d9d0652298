"""The cluster of ``--distribute multi-worker``: ``TF_CONFIG`` read and checked without TensorFlow.

A missing or malformed ``TF_CONFIG`` is named (``ClusterConfigError``, exit 2) before seconds of imports, and the
role it gives this process decides who writes the outputs: the task of type ``chief``, else worker 0.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from tflite_opt.errors import ClusterConfigError

TF_CONFIG = "TF_CONFIG"
TRAINING_JOBS = ("chief", "worker")
EXAMPLE = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'


@dataclass(frozen=True)
class ClusterRole:
    """This process's place in the cluster of ``TF_CONFIG``.

    Attributes:
        task_type: ``chief`` or ``worker``.
        task_index: the index of this task within its type.
        cluster: job name -> ``host:port`` addresses (``chief`` and/or ``worker``).
    """

    task_type: str
    task_index: int
    cluster: dict[str, tuple[str, ...]]

    @property
    def workers(self) -> int:
        """Training processes in the cluster (the chief included)."""
        return sum(len(self.cluster.get(job, ())) for job in TRAINING_JOBS)

    @property
    def is_chief(self) -> bool:
        """The task that writes the outputs: the ``chief``, or worker 0 when the cluster has no chief."""
        if self.task_type == "chief":
            return True
        return "chief" not in self.cluster and self.task_index == 0

    @property
    def chief_name(self) -> str:
        return "chief 0" if "chief" in self.cluster else "worker 0"

    @property
    def name(self) -> str:
        return f"{self.task_type} {self.task_index}"

    @property
    def address(self) -> str:
        return self.cluster[self.task_type][self.task_index]

    def peers(self) -> list[tuple[str, str]]:
        """(name, address) of every other training task."""
        return [
            (f"{job} {index}", address)
            for job in TRAINING_JOBS
            for index, address in enumerate(self.cluster.get(job, ()))
            if (job, index) != (self.task_type, self.task_index)
        ]

    def describe(self) -> str:
        """``worker 1 of 2 (127.0.0.1:23457)``."""
        return f"{self.name} of {self.workers} ({self.address})"


def _problem(message: str, *, example: bool = False) -> ClusterConfigError:
    """``TF_CONFIG <message>``, with an example of a whole ``TF_CONFIG`` when its structure is wrong."""
    hint = f"; --distribute multi-worker needs e.g. {TF_CONFIG}='{EXAMPLE}'" if example else ""
    return ClusterConfigError(f"{TF_CONFIG} {message}{hint}")


def parse_tf_config(text: str | None) -> ClusterRole:
    """The cluster and this task from the text of ``TF_CONFIG`` (no TensorFlow involved).

    Raises:
        ClusterConfigError: unset or empty, not JSON, no cluster, an address that is not ``host:port``, a job
            MultiWorkerMirroredStrategy does not run, an unknown task type, a task index out of range.
    """
    if text is None or not text.strip():
        raise _problem("is not set", example=True)
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _problem(f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", example=True) from exc
    if not isinstance(config, dict):
        raise _problem(f"must be a JSON object, not {type(config).__name__}", example=True)
    cluster = _cluster(config.get("cluster"))
    task = config.get("task")
    if not isinstance(task, dict):
        raise _problem('has no "task" object (this worker\'s {"type": ..., "index": ...})', example=True)
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in TRAINING_JOBS:
        raise _problem(
            f'task type {task_type!r} is not a training task: MultiWorkerMirroredStrategy runs "chief" and "worker" '
            "tasks"
        )
    if task_type not in cluster:
        raise _problem(f'task type "{task_type}" has no "{task_type}" list in the cluster')
    if isinstance(index, bool) or not isinstance(index, int):
        raise _problem(f"task index {index!r} is not a whole number")
    count = len(cluster[task_type])
    if not 0 <= index < count:
        raise _problem(
            f'task index {index} is out of range: the cluster has {count} "{task_type}" task(s), index 0 to {count - 1}'
        )
    return ClusterRole(task_type=task_type, task_index=index, cluster=cluster)


def _cluster(cluster: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(cluster, dict) or not cluster:
        raise _problem('has no "cluster" object (job name -> list of "host:port")', example=True)
    jobs: dict[str, tuple[str, ...]] = {}
    for job, addresses in cluster.items():
        if job not in TRAINING_JOBS:
            raise _problem(
                f'cluster has a "{job}" job: MultiWorkerMirroredStrategy runs "chief" and "worker" tasks only '
                '(no "ps" or "evaluator")'
            )
        if not isinstance(addresses, list) or not addresses:
            raise _problem(f'cluster "{job}" must be a non-empty list of "host:port" addresses')
        for address in addresses:
            _check_address(job, address)
        jobs[job] = tuple(addresses)
    if len(jobs.get("chief", ())) > 1:
        raise _problem(f'cluster has {len(jobs["chief"])} "chief" addresses; there can be one')
    every = [address for addresses in jobs.values() for address in addresses]
    duplicated = sorted({address for address in every if every.count(address) > 1})
    if duplicated:
        raise _problem(f"cluster lists {', '.join(duplicated)} more than once; each task needs its own port")
    return jobs


def _check_address(job: str, address: Any) -> None:
    host, sep, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _problem(f'cluster "{job}" address {address!r} is not "host:port" (a port from 1 to 65535)')


def role_from_environment() -> ClusterRole:
    """This process's role from the ``TF_CONFIG`` environment variable."""
    return parse_tf_config(os.environ.get(TF_CONFIG))


def tf_config_is_set() -> bool:
    return bool(os.environ.get(TF_CONFIG, "").strip())

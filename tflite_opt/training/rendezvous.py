"""Check that every worker of ``TF_CONFIG`` has started, before TensorFlow's own rendezvous.

TensorFlow waits for the cluster inside native code that holds Python's interpreter lock, with no timeout: a
worker that never comes leaves the others waiting forever, out of reach of any Python thread or signal handler.
So each worker first listens on its own ``TF_CONFIG`` port and greets every other one (``HELLO``, with a digest
of the cluster, so that workers started with different clusters are told apart); once it has reached every peer
and heard from every peer, it closes the port (which TensorFlow's server then takes) and creates the strategy.

No pair can be left behind: a worker finishes only after each peer has connected to it, so no peer ever needs to
connect to it again. The check is plain TCP; the training itself runs on TensorFlow's collectives.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
import time
from typing import TYPE_CHECKING

from tflite_opt.errors import TrainingError

if TYPE_CHECKING:  # pragma: no cover
    from tflite_opt.training.cluster import ClusterRole

HELLO = b"tflite-opt-worker"
_POLL_SECONDS = 0.2
_CONNECT_SECONDS = 1.0


def cluster_digest(role: "ClusterRole") -> str:
    """A short digest of the cluster (jobs and addresses), the same on every worker of one ``TF_CONFIG``."""
    text = json.dumps({job: list(addresses) for job, addresses in sorted(role.cluster.items())})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _greeting(role: "ClusterRole") -> bytes:
    return b" ".join([HELLO, role.task_type.encode(), str(role.task_index).encode(), cluster_digest(role).encode()])


class _Listener:
    """Accepts greetings on this worker's port and records who sent them (and whether their cluster differs)."""

    def __init__(self, role: "ClusterRole") -> None:
        self.heard: set[str] = set()
        self.mismatched: set[str] = set()
        self._digest = cluster_digest(role).encode()
        _, _, port = role.address.rpartition(":")
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind(("", int(port)))
        except OSError as exc:
            self._socket.close()
            raise TrainingError(
                f"cannot listen on port {port} of {role.name} ({role.address}) from TF_CONFIG: {exc.strerror}; "
                "another program (or another worker) uses it: give each worker a free port"
            ) from exc
        self._socket.listen(16)
        self._socket.settimeout(_POLL_SECONDS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="tflite-opt-rendezvous", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with connection:
                connection.settimeout(_CONNECT_SECONDS)
                try:
                    words = connection.recv(256).split()
                except OSError:
                    continue
            if len(words) == 4 and words[0] == HELLO:
                name = f"{words[1].decode(errors='replace')} {words[2].decode(errors='replace')}"
                (self.heard if words[3] == self._digest else self.mismatched).add(name)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.close()


def _greet(address: str, greeting: bytes) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=_CONNECT_SECONDS) as connection:
            connection.sendall(greeting)
    except OSError:
        return False
    return True


def wait_for_cluster(role: "ClusterRole", timeout_seconds: float) -> None:
    """Return once every other worker of the cluster has started and greeted this one (and this one them).

    Args:
        role: this worker and the cluster.
        timeout_seconds: how long to wait for the others; ``0`` waits forever.

    Raises:
        TrainingError: this worker's port is taken, a worker has a different cluster in its ``TF_CONFIG``, or
            the cluster did not form in time (naming the workers that are missing).
    """
    peers = dict(role.peers())
    if not peers:
        return
    greeting = _greeting(role)
    deadline = time.monotonic() + timeout_seconds if timeout_seconds else None
    reached: set[str] = set()
    listener = _Listener(role)
    with contextlib.closing(listener):
        while True:
            reached.update(name for name, address in peers.items() if name not in reached and _greet(address, greeting))
            if listener.mismatched:
                raise TrainingError(
                    f"{', '.join(sorted(listener.mismatched))} has a different cluster in its TF_CONFIG; give every "
                    'worker the same "cluster" (only "task" differs)'
                )
            if len(reached) == len(peers) and listener.heard >= set(peers):
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TrainingError(_late(peers, reached, listener.heard, role, timeout_seconds))
            time.sleep(_POLL_SECONDS)


def _late(
    peers: dict[str, str], reached: set[str], heard: set[str], role: "ClusterRole", timeout_seconds: float
) -> str:
    absent = [f"{name} ({address})" for name, address in peers.items() if name not in reached]
    deaf = [name for name in peers if name in reached and name not in heard]
    if absent:
        why = f"{', '.join(absent)} did not start"
    else:
        why = f"{', '.join(deaf)} cannot reach {role.name} at {role.address} (a firewall, or the wrong host name?)"
    return (
        f"the cluster of TF_CONFIG did not form within {timeout_seconds:g} s (--distribute-timeout): {why}; start "
        "every worker with the same cluster, or raise --distribute-timeout"
    )

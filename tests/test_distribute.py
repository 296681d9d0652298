"""``--distribute multi-worker``: TF_CONFIG checks (exit 2, before TensorFlow), the pre-TensorFlow rendezvous, and
real clusters of worker processes on 127.0.0.1 (the chief writes, the other writes nothing, the result matches a
single-process run with the same global batch and seed; a worker that never starts or dies ends the others)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures_training import run_cli, tflite_accuracy
from tflite_opt.errors import ClusterConfigError, TrainingError
from tflite_opt.training.cluster import parse_tf_config
from tflite_opt.training.rendezvous import wait_for_cluster

# Generous: two cores shared with other jobs, three TensorFlow processes at once.
CLUSTER_SECONDS = 300
PRUNE = ["--epochs", "1", "--learning-rate", "0.01", "--batch-size", "32", "--seed", "0", "--no-baseline"]


def tf_config(cluster: dict, task_type: str = "worker", index: int = 0) -> str:
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


def free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def workers(count: int) -> dict:
    return {"worker": [f"127.0.0.1:{port}" for port in free_ports(count)]}


# ------------------------------------------------------------------------------------------- TF_CONFIG parsing


def test_worker_zero_is_the_chief_without_a_chief_task():
    cluster = {"worker": ["a:1", "b:2"]}
    first, second = (parse_tf_config(tf_config(cluster, index=i)) for i in (0, 1))
    assert (first.is_chief, second.is_chief) == (True, False)
    assert first.workers == 2 and second.describe() == "worker 1 of 2 (b:2)"
    assert second.peers() == [("worker 0", "a:1")]


def test_the_chief_task_is_the_chief_and_worker_zero_is_not():
    cluster = {"chief": ["c:1"], "worker": ["a:1", "b:2"]}
    chief = parse_tf_config(tf_config(cluster, "chief"))
    worker0 = parse_tf_config(tf_config(cluster, "worker", 0))
    assert chief.is_chief and not worker0.is_chief
    assert chief.workers == 3 and worker0.chief_name == "chief 0"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "TF_CONFIG is not set"),
        ("  ", "TF_CONFIG is not set"),
        ("{bad", "TF_CONFIG is not valid JSON"),
        ("[1, 2]", "TF_CONFIG must be a JSON object, not list"),
        ('{"task": {"type": "worker", "index": 0}}', 'TF_CONFIG has no "cluster" object'),
        ('{"cluster": {"worker": ["a:1"]}}', 'TF_CONFIG has no "task" object'),
        (tf_config({"worker": ["a:1", "b:2"]}, index=2), "TF_CONFIG task index 2 is out of range"),
        (tf_config({"worker": ["a:1"]}, index=-1), "TF_CONFIG task index -1 is out of range"),
        (tf_config({"worker": ["a:1"]}, "evaluator"), "TF_CONFIG task type 'evaluator' is not a training task"),
        (tf_config({"worker": ["a:1"]}, "chief"), 'TF_CONFIG task type "chief" has no "chief" list'),
        (tf_config({"worker": ["a:1"], "ps": ["p:1"]}), 'TF_CONFIG cluster has a "ps" job'),
        (tf_config({"worker": ["a"]}), 'TF_CONFIG cluster "worker" address \'a\' is not "host:port"'),
        (tf_config({"worker": ["a:99999"]}), 'TF_CONFIG cluster "worker" address \'a:99999\' is not "host:port"'),
        (tf_config({"worker": ["a:1", "a:1"]}), "TF_CONFIG cluster lists a:1 more than once"),
        (tf_config({"worker": []}), 'TF_CONFIG cluster "worker" must be a non-empty list'),
        (
            json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": "0"}}),
            "TF_CONFIG task index '0' is not a",
        ),
    ],
)
def test_malformed_tf_config_is_named(text, expected):
    with pytest.raises(ClusterConfigError, match="^" + re.escape(expected)):
        parse_tf_config(text)


# ---------------------------------------------------------------------------------------- the rendezvous


def test_rendezvous_names_the_worker_that_did_not_start():
    cluster = workers(2)
    role = parse_tf_config(tf_config(cluster, index=0))
    started = time.monotonic()
    with pytest.raises(TrainingError) as caught:
        wait_for_cluster(role, 1.0)
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert message.startswith("the cluster of TF_CONFIG did not form within 1 s (--distribute-timeout)")
    assert f"worker 1 ({cluster['worker'][1]}) did not start" in message


def test_rendezvous_completes_for_every_worker_and_frees_the_ports():
    cluster = workers(3)
    roles = [parse_tf_config(tf_config(cluster, index=i)) for i in range(3)]
    errors: list[BaseException] = []

    def join(role):
        try:
            wait_for_cluster(role, 30.0)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=join, args=(role,)) for role in roles]
    for thread in threads:
        thread.start()
        time.sleep(0.3)  # they start at different times
    for thread in threads:
        thread.join(40)
    assert errors == [] and not any(t.is_alive() for t in threads)
    for address in cluster["worker"]:  # TensorFlow's server can take the port next
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", int(address.rpartition(":")[2])))


def test_rendezvous_refuses_a_worker_with_another_cluster():
    cluster = workers(2)
    role0 = parse_tf_config(tf_config(cluster, index=0))
    other = {"worker": [*cluster["worker"]], "chief": ["127.0.0.1:1"]}  # worker 1 sees a different cluster
    role1 = parse_tf_config(tf_config(other, index=1))

    def other_worker():
        with contextlib.suppress(TrainingError):
            wait_for_cluster(role1, 3.0)

    thread = threading.Thread(target=other_worker)
    thread.start()
    try:
        with pytest.raises(TrainingError, match="^worker 1 has a different cluster in its TF_CONFIG"):
            wait_for_cluster(role0, 10.0)
    finally:
        thread.join(10)


# ------------------------------------------------------------------------------------------- CLI errors


@pytest.fixture()
def no_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, 'Error: TF_CONFIG is not set; --distribute multi-worker needs e.g. TF_CONFIG=\'{"cluster"'),
        ("{not json", "Error: TF_CONFIG is not valid JSON (Expecting property name"),
        (tf_config({"worker": ["127.0.0.1:1"]}, index=1), "Error: TF_CONFIG task index 1 is out of range"),
        (tf_config({"worker": ["127.0.0.1:1"]}, "ps"), "Error: TF_CONFIG task type 'ps' is not a training task"),
    ],
)
@pytest.mark.parametrize("command", ["prune", "qat", "cluster", "distill"])
def test_tf_config_errors_exit_2_with_one_line(command, value, expected, monkeypatch, tmp_path, no_tf_config):
    if value is not None:
        monkeypatch.setenv("TF_CONFIG", value)
    model = tmp_path / "model.h5"  # never read: TF_CONFIG is checked first
    if command == "distill":
        args = ["distill", "--teacher", model, "--student", model, "--train-data", tmp_path / "train.npz"]
    else:
        args = [command, model, "--train-data", tmp_path / "train.npz", *(["--clusters", "8"] * (command == "cluster"))]
    result = run_cli(*args, "-o", tmp_path / "out.tflite", "--distribute", "multi-worker")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(expected) and result.stderr.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_tf_config_error_comes_before_tensorflow_is_imported(tmp_path, no_tf_config):
    script = (
        "import sys\nfrom tflite_opt.cli import cli\n"
        "try:\n    cli(['prune', 'm.h5', '--train-data', 't.npz', '-o', 'o.tflite', '--distribute', 'multi-worker'])\n"
        "finally:\n    print('tensorflow' in sys.modules)\n"
    )
    env = {**os.environ, "TF_CONFIG": "{bad"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 2 and result.stdout.strip() == "False", result.stderr
    assert result.stderr.startswith("Error: TF_CONFIG is not valid JSON")


def test_distribute_timeout_needs_multi_worker(tmp_path, no_tf_config):
    result = run_cli("prune", tmp_path / "m.h5", "--train-data", "t.npz", "-o", tmp_path / "o.tflite",
                     "--distribute-timeout", "5")  # fmt: skip
    assert result.exit_code == 2
    assert "--distribute-timeout applies to --distribute multi-worker only" in result.stderr


def test_tf_config_without_multi_worker_warns(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config({"worker": ["127.0.0.1:1"]}))
    result = run_cli("--strict", "prune", tmp_path / "m.h5", "--train-data", "t.npz", "-o", tmp_path / "o.tflite")
    assert result.exit_code == 1
    assert "TF_CONFIG is set, but --distribute is default: this process trains alone" in result.stderr


# ------------------------------------------------------------------------------------------ real clusters


@pytest.fixture(scope="module")
def tiny_training(tmp_path_factory, digits) -> Path:
    """An untrained tf_keras model (``tiny.h5``) and digits split into ``train``/``val``/``test`` .npz files: one
    epoch moves its accuracy from chance to well above it, so a wrong sharding or batch would show."""
    import tf_keras

    folder = tmp_path_factory.mktemp("distribute")
    train_x, train_y, test_x, test_y = digits
    np.savez(folder / "train.npz", x=train_x[:512], y=train_y[:512])
    np.savez(folder / "val.npz", x=train_x[512:768], y=train_y[512:768])
    np.savez(folder / "test.npz", x=test_x, y=test_y)
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(
        [
            tf_keras.Input((8, 8, 1), name="image"),
            tf_keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
            tf_keras.layers.Flatten(name="flatten"),
            tf_keras.layers.Dense(10, name="logits"),
        ]
    )
    model.compile(loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.save(folder / "tiny.h5")
    return folder


def launch(args, *, folder: Path, name: str, config: str | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "TF_USE_LEGACY_KERAS")}
    env["CUDA_VISIBLE_DEVICES"] = "-1"  # workers on one machine must not share a GPU
    if config is not None:
        env["TF_CONFIG"] = config
    return subprocess.Popen(
        [sys.executable, "-m", "tflite_opt", *map(str, args)],
        stdout=(folder / f"{name}.out").open("w"),
        stderr=(folder / f"{name}.err").open("w"),
        env=env,
        cwd=folder,
    )


@contextlib.contextmanager
def processes():
    """Started processes, all killed (SIGKILL: TensorFlow ignores SIGTERM while it waits) at the end."""
    started: list[subprocess.Popen] = []
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait(30)


def wait_all(started: list[subprocess.Popen], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    codes = []
    for process in started:
        try:
            codes.append(process.wait(max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            pytest.fail(f"a worker still runs after {seconds} s")
    return codes


def tail(folder: Path, name: str) -> str:
    return (folder / f"{name}.err").read_text()[-2000:]


@pytest.mark.slow
def test_two_workers_match_one_process_and_only_the_chief_writes(tiny_training):
    folder = tiny_training
    cluster = workers(2)
    for name in ("single", "chief", "other"):
        (folder / name).mkdir()
    common = ["prune", "tiny.h5", "--train-data", "train.npz", "--val-data", "val.npz", *PRUNE, "--format", "json"]
    with processes() as started:
        started.append(launch([*common, "-o", "single/out.tflite"], folder=folder, name="single", config=None))
        for index, name in enumerate(("chief", "other")):
            args = [*common, "-o", f"{name}/out.tflite", "--distribute", "multi-worker"]
            started.append(launch(args, folder=folder, name=name, config=tf_config(cluster, index=index)))
        codes = wait_all(started, CLUSTER_SECONDS)
    assert codes == [0, 0, 0], "\n".join(tail(folder, n) for n in ("single", "chief", "other"))
    single, chief, other = (json.loads((folder / f"{n}.out").read_text()) for n in ("single", "chief", "other"))

    assert [f["path"] for f in chief["files"]] == ["chief/out.tflite"] and other["files"] == []
    assert list((folder / "other").iterdir()) == []
    assert "worker 1 is not the chief: nothing written here" in tail(folder, "other")
    assert (chief["history"]["strategy"], chief["history"]["replicas"]) == ("MultiWorkerMirroredStrategy", 2)
    assert single["history"]["strategy"] == "default"

    # The same global batches in the same order: the same steps, up to the order of float sums.
    assert chief["history"]["epochs"][0]["loss"] == pytest.approx(single["history"]["epochs"][0]["loss"], rel=1e-3)
    assert other["history"]["epochs"] == chief["history"]["epochs"]
    test = np.load(folder / "test.npz")
    accuracy = {n: tflite_accuracy(folder / n / "out.tflite", test["x"], test["y"]) for n in ("single", "chief")}
    assert accuracy["single"] > 0.5  # trained from chance (0.1): a meaningful comparison
    assert abs(accuracy["chief"] - accuracy["single"]) <= 0.01, accuracy
    assert abs(chief["history"]["final_val_accuracy"] - single["history"]["final_val_accuracy"]) <= 0.01


def test_a_worker_that_never_starts_ends_the_other_with_one_line(tiny_training, tmp_path):
    cluster = workers(2)
    args = ["prune", tiny_training / "tiny.h5", "--train-data", tiny_training / "train.npz", *PRUNE,
            "-o", tmp_path / "out.tflite", "--distribute", "multi-worker", "--distribute-timeout", "3"]  # fmt: skip
    with processes() as started:
        started.append(launch(args, folder=tmp_path, name="lonely", config=tf_config(cluster, index=0)))
        (code,) = wait_all(started, CLUSTER_SECONDS)
    lines = (tmp_path / "lonely.err").read_text().splitlines()
    assert code == 1, lines
    assert lines[-1] == (
        f"Error: the cluster of TF_CONFIG did not form within 3 s (--distribute-timeout): worker 1 "
        f"({cluster['worker'][1]}) did not start; start every worker with the same cluster, or raise "
        "--distribute-timeout"
    )
    assert not (tmp_path / "out.tflite").exists()


@pytest.mark.slow
def test_a_worker_that_dies_ends_the_other_with_one_line(tiny_training, tmp_path):
    cluster = workers(2)
    common = ["prune", tiny_training / "tiny.h5", "--train-data", tiny_training / "train.npz", "--epochs", "500",
              "--no-baseline", "--distribute", "multi-worker"]  # fmt: skip
    with processes() as started:
        for index in (0, 1):
            args = [*common, "-o", tmp_path / f"out{index}.tflite"]
            started.append(launch(args, folder=tmp_path, name=f"w{index}", config=tf_config(cluster, index=index)))
        deadline = time.monotonic() + CLUSTER_SECONDS
        while "Pruning:" not in (tmp_path / "w1.err").read_text():
            assert time.monotonic() < deadline and started[1].poll() is None, tail(tmp_path, "w1")
            time.sleep(0.5)
        started[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        code = started[0].wait(CLUSTER_SECONDS)
        waited = time.monotonic() - killed
    lines = (tmp_path / "w0.err").read_text().splitlines()
    assert code == 1, lines
    assert lines[-1].startswith("Error: Pruning failed: worker 1 stopped (no heartbeats)"), lines
    assert waited < 120
    assert not (tmp_path / "out0.tflite").exists()

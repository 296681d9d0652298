"""Running the real CLI in child processes for the fault tests: started with a deadline, watched by polling what
they write, and always killed at the end (the machine is shared)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import tflite_opt

REPO = Path(tflite_opt.__file__).resolve().parents[1]
DEADLINE_S = 180.0


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.pop("GITHUB_STEP_SUMMARY", None)
    return env


@contextlib.contextmanager
def cli_process(*args: str | os.PathLike, cwd: Path) -> Iterator[subprocess.Popen]:
    """``python -m tflite_opt ARGS`` in ``cwd``; killed (and reaped) when the block ends, however it ends."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tflite_opt", *map(str, args)],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.communicate(timeout=30)


def run_cli(*args: str | os.PathLike, cwd: Path, timeout: float = DEADLINE_S) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tflite_opt", *map(str, args)],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_until(process: subprocess.Popen, condition: Callable[[], bool], what: str, timeout: float = DEADLINE_S):
    """Poll ``condition`` every few milliseconds while ``process`` runs; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process.poll() is not None:
            raise AssertionError(
                f"the process ended (exit {process.returncode}) before {what}: {process.stderr.read()}"
            )
        time.sleep(0.003)
    raise AssertionError(f"timed out waiting for {what}")


def finish(process: subprocess.Popen, timeout: float = 60) -> tuple[int, str]:
    """(exit code, stderr) of a process that was told to stop."""
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr


def dead_pid() -> int:
    """The id of a process that has already exited (for temporaries 'left by a killed run')."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)

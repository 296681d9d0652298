"""Latency: ``tflite-opt evaluate`` vs the wheel's ``benchmark_litert_model.py`` on the same file (SPEC §5: within 10%).

Both run as subprocesses with the same threads, warm-up and timed runs, on random inputs (``evaluate`` without
``--data`` feeds uniform noise like the benchmark tool). Each pair is repeated ``--repeat`` times, interleaved so
that background load hits both alike, and the median of the per-repeat medians is compared. The benchmark tool
prints milliseconds with 2 decimals, so files faster than ~0.1 ms cannot be compared to 10%: those rows say so.

    python benchmarks/bench_latency.py [--runs 200] [--warmup 10] [--repeat 5] [--threads 1 2] [--model F ...]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._models import load_note, model_files, table  # noqa: E402


def benchmark_tool() -> Path:
    import ai_edge_litert

    return Path(ai_edge_litert.__file__).parent / "tools" / "benchmark_litert_model.py"


def theirs(path: Path, threads: int, runs: int, warmup: int) -> float:
    process = subprocess.run(
        [
            sys.executable,
            str(benchmark_tool()),
            f"--model={path}",
            f"--num_threads={threads}",
            f"--num_runs={runs}",
            f"--warmup_runs={warmup}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"Inference \(median\):\s+([0-9.]+) ms", process.stdout)
    if not match:
        raise SystemExit(f"cannot parse benchmark_litert_model.py output:\n{process.stdout}\n{process.stderr}")
    return float(match.group(1))


def ours(path: Path, threads: int, runs: int, warmup: int) -> float:
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "tflite_opt",
            "-q",
            "evaluate",
            str(path),
            f"--threads={threads}",
            f"--runs={runs}",
            f"--warmup={warmup}",
            "--format=json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(process.stdout)["variants"][0]["latency_ms"]["median"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", action="append", type=Path, help="benchmark these files instead")
    args = parser.parse_args()

    files = args.model or [*model_files("mobilenet_v2").values(), *model_files("digits_cnn").values()]
    rows = []
    for path in files:
        for threads in args.threads:
            our_medians, their_medians = [], []
            for _ in range(args.repeat):
                our_medians.append(ours(path, threads, args.runs, args.warmup))
                their_medians.append(theirs(path, threads, args.runs, args.warmup))
            mine, reference = statistics.median(our_medians), statistics.median(their_medians)
            if reference < 0.1:
                verdict = "n/a (below the tool's 0.01 ms print resolution)"
                ratio = "—"
            else:
                ratio = f"{mine / reference:.3f}"
                verdict = "ok (within 10%)" if abs(mine / reference - 1) <= 0.10 else "OUTSIDE 10%"
            rows.append([path.name, str(threads), f"{mine:.4f}", f"{reference:.2f}", ratio, verdict])
    print(f"latency median in ms, {args.runs} runs after {args.warmup} warm-up, median of {args.repeat} repeats")
    print(load_note())
    print(table(["file", "threads", "tflite-opt", "benchmark_litert_model", "ratio", "verdict"], rows))


if __name__ == "__main__":
    main()

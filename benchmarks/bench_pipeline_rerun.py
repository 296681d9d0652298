"""Pipeline rerun (SPEC §5): an unchanged ``tflite-opt run`` takes at most 10% of the first run's wall time and
writes byte-identical files.

On the demo data (``tflite-opt demo``'s CNN and digits), a pipeline of five post-training variants (fp32, dynamic,
float16, int8, int16x8) and one training variant (prune 50%) runs three times as a whole process each: first with
an empty cache, then unchanged, then with one variant's option edited (only that variant is remade). Each wall
time includes the Python start-up. The script prints the times, the ratio, and whether every ``.tflite`` of the
rerun is byte-identical to the first run's.

    python benchmarks/bench_pipeline_rerun.py [--workdir DIR] [--epochs 12]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._models import load_note, table  # noqa: E402

PIPELINE = """
[model]
path = "demo/model.keras"

[data]
eval = "demo/test.npz"
calibration = "demo/calib.npz"
train = "demo/train.npz"

[evaluation]
runs = 50
warmup = 5

[[variant]]
name = "fp32"

[[variant]]
name = "dynamic"

[[variant]]
name = "float16"

[[variant]]
name = "int8"
{int8_option}

[[variant]]
name = "int16x8"

[[variant]]
kind = "prune"
sparsity = 0.5
epochs = 2

[gates]
max_accuracy_drop = 0.05

[output]
dir = "out"
"""


def tflite_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tflite"))}


def timed_run(pipeline: Path) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("GITHUB_STEP_SUMMARY", None)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "tflite_opt", "run", str(pipeline), "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 3):
        raise SystemExit(f"tflite-opt run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    status = next((line for line in done.stderr.splitlines() if "cached:" in line or "built:" in line), "")
    return elapsed, status.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="Keep the files here (default: a temporary folder).")
    parser.add_argument("--epochs", type=int, default=12, help="Demo CNN training epochs.")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    workdir.mkdir(parents=True, exist_ok=True)
    demo = workdir / "demo"
    if not (demo / "model.keras").exists():
        from tflite_opt.workflows.demo import prepare_demo

        prepare_demo(demo, epochs=args.epochs)
    pipeline = workdir / "pipeline.toml"
    pipeline.write_text(PIPELINE.format(int8_option=""))
    cache = workdir / ".tflite-opt-cache"
    if cache.exists():
        import shutil

        shutil.rmtree(cache)

    first, first_status = timed_run(pipeline)
    first_files = tflite_hashes(workdir / "out")
    rerun, rerun_status = timed_run(pipeline)
    identical = tflite_hashes(workdir / "out") == first_files
    pipeline.write_text(PIPELINE.format(int8_option='io_type = "float32"'))
    edited, edited_status = timed_run(pipeline)

    print(
        table(
            ["run", "wall time", "vs first", "variants"],
            [
                ["first (empty cache)", f"{first:.2f} s", "100%", first_status],
                ["unchanged rerun", f"{rerun:.2f} s", f"{rerun / first:.1%}", rerun_status],
                ["one variant edited", f"{edited:.2f} s", f"{edited / first:.1%}", edited_status],
            ],
        )
    )
    print(f"\nrerun / first = {rerun / first:.3f} (SPEC §5: <= 0.10) -> {'PASS' if rerun / first <= 0.10 else 'FAIL'}")
    print(f"rerun .tflite files byte-identical to the first run's: {identical} ({len(first_files)} files)")
    print(load_note())
    print(f"files in {workdir}")


if __name__ == "__main__":
    main()

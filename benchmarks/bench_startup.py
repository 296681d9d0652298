"""Start-up: wall time of ``--help``, ``evaluate --help``, ``inspect`` and ``evaluate``, and whether TensorFlow got in.

Each command runs ``--repeat`` times in a fresh interpreter (median wall time); a second, instrumented run records
which heavy modules ended up in ``sys.modules``. ``python -c "import tensorflow"`` is the yardstick: the ratio
column says how many of our commands fit in one TensorFlow import.

    python benchmarks/bench_startup.py [--repeat 5] [--model FILE.tflite]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._models import digits_data, load_note, model_files, table  # noqa: E402

HEAVY = ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization")
RECORD = """
import json, runpy, sys
record, sys.argv = sys.argv[1], ["tflite-opt", *sys.argv[2:]]
try:
    runpy.run_module("tflite_opt", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
json.dump(sorted(n for n in %r if n in sys.modules), open(record, "w"))
""" % (HEAVY,)


def wall(command: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def heavy_modules(args: list[str]) -> list[str]:
    with tempfile.TemporaryDirectory() as folder:
        record = Path(folder) / "modules.json"
        subprocess.run([sys.executable, "-c", RECORD, str(record), *args], capture_output=True, check=False)
        return json.loads(record.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--model", type=Path, help="a .tflite file for inspect/evaluate (default: the digits CNN)")
    args = parser.parse_args()

    model = args.model or model_files("digits_cnn")["int8"]
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "test.npz"
        x, y = digits_data()
        import numpy as np

        np.savez(data, x=x[:1000], y=y[:1000])
        cases = {
            "tflite-opt --help": ["--help"],
            "tflite-opt evaluate --help": ["evaluate", "--help"],
            "tflite-opt inspect FILE": ["inspect", str(model)],
            "tflite-opt evaluate FILE --data D (1000 samples)": ["-q", "evaluate", str(model), "--data", str(data)],
        }
        baseline = wall([sys.executable, "-c", "import tensorflow"], args.repeat)
        rows = []
        for label, cli_args in cases.items():
            seconds = wall([sys.executable, "-m", "tflite_opt", *cli_args], args.repeat)
            heavy = heavy_modules(cli_args)
            rows.append([label, f"{seconds:.3f}", f"{baseline / seconds:.1f}x", ", ".join(heavy) or "no"])
    rows.append(["python -c 'import tensorflow' (yardstick)", f"{baseline:.3f}", "1.0x", "yes"])
    print(f"start-up wall time in seconds, median of {args.repeat}")
    print(load_note())
    print(table(["command", "seconds", "vs import tensorflow", "TensorFlow/Keras imported"], rows))


if __name__ == "__main__":
    main()

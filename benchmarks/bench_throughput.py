"""Evaluation throughput: tflite-opt's evaluate path vs the TFLite tutorials' per-sample loop (SPEC §5: >= 2x).

The baseline is the loop of the TensorFlow Lite post-training-quantization tutorials: one interpreter,
``set_tensor`` / ``invoke`` / ``get_tensor`` per sample (quantizing the input for int8-I/O files). Ours is
``evaluation.evaluate_variants`` on the same file and samples (with latency off: ``runs=0``) — which also
hashes, gzips and inspects the file, so the comparison is conservative. Best of ``--repeat`` runs each.

    python benchmarks/bench_throughput.py [--repeat 3] [--samples 1000] [--model FILE.tflite ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._models import digits_data, load_note, model_files, table  # noqa: E402


def tutorial_loop(path: Path, samples: np.ndarray) -> np.ndarray:
    """The tutorials' evaluation loop, verbatim in spirit."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    input_details = interpreter.get_input_details()[0]
    output_details = interpreter.get_output_details()[0]
    predictions = np.zeros(len(samples), dtype=np.int64)
    for i, sample in enumerate(samples):
        if input_details["dtype"] in (np.int8, np.uint8):
            scale, zero_point = input_details["quantization"]
            sample = sample / scale + zero_point
        sample = np.expand_dims(sample, axis=0).astype(input_details["dtype"])
        interpreter.set_tensor(input_details["index"], sample)
        interpreter.invoke()
        output = interpreter.get_tensor(output_details["index"])[0]
        predictions[i] = output.argmax()
    return predictions


def ours(path: Path, samples: np.ndarray, labels: np.ndarray | None) -> float | None:
    from tflite_opt.measure.evaluation import EvaluationOptions, VariantSource, evaluate_variants
    from tflite_opt.representative_data import Dataset

    run = evaluate_variants(
        [VariantSource(path.stem, str(path))],
        Dataset(inputs={"image" if "digits" in path.stem else _input_name(path): samples}, labels=labels),
        options=EvaluationOptions(runs=0),
    )
    variant = run.variants[0]
    if variant.error:
        raise SystemExit(f"evaluation failed: {variant.error}")
    return variant.accuracy


def inference_only(path: Path, samples: np.ndarray) -> np.ndarray:
    """Our inference loop alone (batched, one interpreter per core) plus top-1: what the tutorial loop does."""
    from tflite_opt.measure.evaluation import run_dataset, top1
    from tflite_opt.representative_data import Dataset

    content = path.read_bytes()
    outputs = run_dataset(content, Dataset(inputs={_input_name(path): samples}))
    return top1(next(iter(outputs.values())))


def _input_name(path: Path) -> str:
    from tflite_opt.measure.runtime import load_signature

    return load_signature(path.read_bytes()).inputs[0].name


def best_time(function, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1000, help="samples for MobileNetV2 / --model files")
    parser.add_argument("--model", action="append", type=Path, help="benchmark these files instead (random inputs)")
    args = parser.parse_args()

    cases = []
    if args.model:
        for path in args.model:
            cases.append((path, None, None))
    else:
        x, y = digits_data()
        for path in model_files("digits_cnn").values():
            cases.append((path, x, y))
        mobile = np.random.default_rng(0).random((args.samples, 96, 96, 3), dtype=np.float32)
        for path in model_files("mobilenet_v2").values():
            cases.append((path, mobile, None))

    rows = []
    for path, samples, labels in cases:
        if samples is None:
            from tflite_opt.measure.runtime import load_signature

            spec = load_signature(path.read_bytes()).data_specs[0]
            shape = [args.samples] + [d or 1 for d in spec.shape[1:]]
            samples = np.random.default_rng(0).random(shape, dtype=np.float32)
        times = {"loop": [], "inference": [], "evaluate": []}
        # Interleaved repeats: other load on the machine hits all three alike.
        for _ in range(args.repeat):
            times["loop"].append(best_time(lambda: tutorial_loop(path, samples), 1))
            times["inference"].append(best_time(lambda: inference_only(path, samples), 1))
            times["evaluate"].append(best_time(lambda: ours(path, samples, labels), 1))
        baseline, inference, fast = (min(times[k]) for k in ("loop", "inference", "evaluate"))
        # The two paths must agree on what they measure, or the speed-up means nothing.
        if labels is not None:
            expected = float(np.mean(tutorial_loop(path, samples) == labels))
            got = ours(path, samples, labels)
            assert abs(expected - got) <= 2 / len(labels), (expected, got)
        n = len(samples)
        rows.append(
            [
                path.name,
                str(n),
                f"{n / baseline:,.0f}",
                f"{n / inference:,.0f}",
                f"{n / fast:,.0f}",
                f"{baseline / inference:.2f}x",
                f"{baseline / fast:.2f}x",
            ]
        )
    print(f"evaluation throughput in samples/s, {os.cpu_count()} CPU cores, best of {args.repeat}")
    print(load_note())
    print("  inference = our batched multi-interpreter loop + top-1 (what the tutorial loop does);")
    print("  evaluate  = the whole evaluate path (also sha256, gzip size, flatbuffer inspection, metrics)")
    print(
        table(["file", "samples", "tutorial loop", "inference", "evaluate", "ratio inference", "ratio evaluate"], rows)
    )


if __name__ == "__main__":
    main()

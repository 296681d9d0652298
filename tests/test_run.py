"""``tflite-opt run``: the pipeline file, the content-addressed cache, reruns, concurrency, errors with lines."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from click.testing import CliRunner

from tflite_opt.cli import cli

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ["fp32", "dynamic", "int8", "pruned_50"]


def run(*args, env=None):
    return CliRunner().invoke(cli, [*map(str, args)], env=env)


def pipeline_text(model, data_dir, *, int8_extra="", gates='gate = ["int8:accuracy_delta>=-0.05"]', variants=None):
    """A pipeline over the house CNN: three conversions and one pruning run, cheap settings."""
    default = f"""
[[variant]]
name = "fp32"

[[variant]]
mode = "dynamic"

[[variant]]
name = "int8"
mode = "int8"
{int8_extra}

[[variant]]
kind = "prune"
sparsity = 0.5
epochs = 1
batch_size = 64
"""
    return f"""# test pipeline
[model]
path = "{model}"

[data]
eval = "{data_dir / "test.npz"}"
calibration = "{data_dir / "calib.npz"}"
train = "{data_dir / "train.npz"}"

[evaluation]
runs = 3
warmup = 1
{variants if variants is not None else default}
[gates]
{gates}

[output]
dir = "out"
formats = ["json", "markdown", "csv"]
"""


def write_pipeline(folder: Path, text: str, name: str = "pipeline.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def run_in_subprocess(*args, check_tensorflow=False):
    """The CLI in a fresh process; with ``check_tensorflow``, prints whether TensorFlow got imported."""
    code = (
        "import sys\nfrom tflite_opt.cli import main\n"
        f"sys.argv = ['tflite-opt', *{[str(a) for a in args]!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\nelse:\n    code = 0\n"
        + ("print('TENSORFLOW', 'tensorflow' in sys.modules)\n" if check_tensorflow else "")
        + "sys.exit(code)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("GITHUB_STEP_SUMMARY", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def tflite_hashes(folder: Path) -> dict[str, str]:
    return {p.stem: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tflite"))}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, keras3_cnn_path, data_dir):
    """One full run (three conversions and a pruning), then its outputs as they were right after it."""
    folder = tmp_path_factory.mktemp("pipeline")
    pipeline = write_pipeline(folder, pipeline_text(keras3_cnn_path, data_dir))
    result = run("run", pipeline)
    out = folder / "out"
    return {
        "result": result,
        "pipeline": pipeline,
        "folder": folder,
        "out": out,
        "cache": folder / ".tflite-opt-cache",
        "hashes": tflite_hashes(out),
        "report": json.loads((out / "report.json").read_text()),
    }


def test_first_run_makes_every_variant_and_writes_the_reports(first_run):
    result, out, report = first_run["result"], first_run["out"], first_run["report"]
    assert result.exit_code == 0, result.output
    assert "built: fp32, dynamic, int8, pruned_50" in result.stderr
    assert [v["name"] for v in report["variants"]] == VARIANTS
    assert [v["mode"] for v in report["variants"]] == ["fp32", "dynamic", "int8", "prune"]
    assert report["pipeline"] == hashlib.sha256(first_run["pipeline"].read_bytes()).hexdigest()
    assert [v["cached"] for v in report["variants"]] == [False] * 4
    assert report["reference"] == "fp32" and report["passed"] is True
    assert report["gates"][0]["variant"] == "int8" and report["gates"][0]["passed"] is True
    by_name = {v["name"]: v for v in report["variants"]}
    assert by_name["int8"]["size_ratio"] < 0.35
    assert by_name["pruned_50"]["sparsity"] >= 0.45
    from ai_edge_litert.interpreter import Interpreter

    for name in VARIANTS:
        path = out / f"{name}.tflite"
        assert by_name[name]["path"] == str(path)
        assert by_name[name]["sha256"] == first_run["hashes"][name]
        assert by_name[name]["accuracy"] > 0.85
        Interpreter(model_content=path.read_bytes()).allocate_tensors()
    assert {p.name for p in out.iterdir()} == {f"{n}.tflite" for n in VARIANTS} | {
        "report.json",
        "report.md",
        "report.csv",
        "report.html",
    }
    assert "| int8" in (out / "report.md").read_text()
    assert (out / "report.csv").read_text().splitlines()[0].startswith("name,mode,path,sha256")


def test_unchanged_rerun_copies_everything_without_importing_tensorflow(first_run):
    """SPEC §5: the rerun neither imports TensorFlow nor loads the model, and writes the same files."""
    report_before = (first_run["out"] / "report.json").read_text()
    done = run_in_subprocess("run", first_run["pipeline"], check_tensorflow=True)
    assert done.returncode == 0, done.stderr
    assert "TENSORFLOW False" in done.stdout
    assert "cached: fp32, dynamic, int8, pruned_50; measurements reused: fp32, dynamic, int8, pruned_50" in done.stderr
    assert tflite_hashes(first_run["out"]) == first_run["hashes"]
    after = json.loads((first_run["out"] / "report.json").read_text())
    assert [v["cached"] for v in after["variants"]] == [True] * 4
    before = json.loads(report_before)
    for old, new in zip(before["variants"], after["variants"]):  # the measurements are the cached ones
        assert {k: v for k, v in old.items() if k != "cached"} == {k: v for k, v in new.items() if k != "cached"}


def test_editing_one_variant_reruns_only_that_variant(first_run, keras3_cnn_path, data_dir, tmp_path):
    pipeline = write_pipeline(tmp_path, pipeline_text(keras3_cnn_path, data_dir, int8_extra='io_type = "float32"'))
    result = run("run", pipeline, "--cache-dir", first_run["cache"])
    assert result.exit_code == 0, result.output
    assert "cached: fp32, dynamic, pruned_50; built: int8" in result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [v["cached"] for v in report["variants"]] == [True, True, False, True]
    hashes = tflite_hashes(tmp_path / "out")
    assert hashes["int8"] != first_run["hashes"]["int8"]
    assert {k: v for k, v in hashes.items() if k != "int8"} == {
        k: v for k, v in first_run["hashes"].items() if k != "int8"
    }
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tmp_path / "out" / "int8.tflite"))
    assert interpreter.get_input_details()[0]["dtype"].__name__ == "float32"


def test_dry_run_shows_what_is_cached_and_what_will_run(first_run, keras3_cnn_path, data_dir, tmp_path):
    pipeline = write_pipeline(tmp_path, pipeline_text(keras3_cnn_path, data_dir, int8_extra="num_samples = 50"))
    result = run("run", pipeline, "--cache-dir", first_run["cache"], "--dry-run")
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[2].strip(): line for line in result.stdout.splitlines() if line.count("│") > 5}
    assert "will run" in rows["int8"] and "cached" not in rows["int8"]
    for name in ("fp32", "dynamic", "pruned_50"):
        assert rows[name].count("cached") == 2  # the file and its measurements
    assert "3 of 4 files cached, 1 will be made" in result.stdout
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_truncated_cache_entry_is_discarded_and_recomputed(first_run, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(first_run["cache"], cache)
    artifacts = sorted((cache / "artifacts").glob("*/*/model.tflite"))
    fp32 = next(p for p in artifacts if hashlib.sha256(p.read_bytes()).hexdigest() == first_run["hashes"]["fp32"])
    fp32.write_bytes(fp32.read_bytes()[:1000])  # truncated
    pipeline = write_pipeline(tmp_path / "p", first_run["pipeline"].read_text())
    result = run("run", pipeline, "--cache-dir", cache)
    assert result.exit_code == 0, result.output
    assert "is damaged (model.tflite is truncated or corrupt: sha256 mismatch); discarded, recomputing" in result.stderr
    assert "cached: dynamic, int8, pruned_50; built: fp32" in result.stderr
    # Recomputed, the conversion is byte-identical (across processes too: see the README), and the entry is whole.
    assert tflite_hashes(tmp_path / "p" / "out") == first_run["hashes"]
    assert hashlib.sha256(fp32.read_bytes()).hexdigest() == first_run["hashes"]["fp32"]


def test_two_concurrent_runs_on_one_cache_finish_with_correct_files(first_run, tmp_path):
    """Both runs copy the files and measure them at once, writing the same cache entries side by side."""
    cache = tmp_path / "shared-cache"
    shutil.copytree(first_run["cache"], cache, ignore=shutil.ignore_patterns("evaluations", "renders"))
    pipelines = [write_pipeline(tmp_path / name, first_run["pipeline"].read_text()) for name in ("a", "b")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tflite_opt", "run", str(p), "--cache-dir", str(cache)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in pipelines
    ]
    outcomes = [p.communicate(timeout=600) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outcomes
    for _, err in outcomes:
        assert "damaged" not in err
        assert "cached: fp32, dynamic, int8, pruned_50" in err
    # Usually both measure side by side; when one run stores its measurements before the other looks, the other
    # may reuse them (a race the cache allows). At least one of them measured.
    assert sum("measurements reused" not in err for _, err in outcomes) >= 1, outcomes
    for name in ("a", "b"):
        assert tflite_hashes(tmp_path / name / "out") == first_run["hashes"]
        report = json.loads((tmp_path / name / "out" / "report.json").read_text())
        assert [v["sha256"] for v in report["variants"]] == [first_run["hashes"][n] for n in VARIANTS]
    from tflite_opt.progress import NullProgress
    from tflite_opt.workflows.cache import Cache

    progress = NullProgress()
    store = Cache(cache, progress)
    manifests = sorted((cache / "evaluations").glob("*/*/manifest.json"))
    assert len(manifests) == 4
    for manifest in manifests:
        assert store.get("evaluations", manifest.parent.name) is not None
    assert progress.warnings == []
    assert not [p for p in cache.rglob("*.tmp")]  # no staging folder left behind


_CACHE_STRESS = """
import hashlib, sys
from tflite_opt.progress import NullProgress
from tflite_opt.workflows.cache import Cache

progress = NullProgress()
cache = Cache(sys.argv[1], progress)
for i in range(120):
    key = hashlib.sha256(str(i % 6).encode()).hexdigest()
    data = str(i % 6).encode() * 200_000
    cache.put("ns", key, {"blob": data})
    entry = cache.get("ns", key)
    assert entry is None or entry.files["blob"] == data, i
    if i % 5 == 0:
        cache.discard("ns", key)
assert progress.warnings == [], progress.warnings
print("ok")
"""


def test_two_processes_hammering_one_cache_never_see_a_broken_entry(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _CACHE_STRESS, str(tmp_path / "c")],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outcomes = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outcomes
    assert [out.strip() for out, _ in outcomes] == ["ok", "ok"]
    assert not [p for p in (tmp_path / "c").rglob("*.tmp")] and not [p for p in (tmp_path / "c").rglob("*.trash")]


def test_failing_gate_exits_3_and_writes_junit_with_one_failure(first_run, keras3_cnn_path, data_dir, tmp_path):
    gates = 'gate = ["int8:accuracy_delta>=-0.05", "int8:size_ratio<=0.01"]'
    pipeline = write_pipeline(tmp_path, pipeline_text(keras3_cnn_path, data_dir, gates=gates))
    summary = tmp_path / "summary.md"
    summary.write_text("# before\n")
    result = run(
        "-q",
        "run",
        pipeline,
        "--cache-dir",
        first_run["cache"],
        "--junit",
        tmp_path / "gates.xml",
        env={"GITHUB_STEP_SUMMARY": str(summary)},
    )
    assert result.exit_code == 3, result.output
    assert "Gate failed: int8: size_ratio <= 0.01" in result.stderr
    suites = ElementTree.parse(tmp_path / "gates.xml").getroot()
    assert (suites.get("tests"), suites.get("failures")) == ("2", "1")
    (suite,) = suites.findall("testsuite")
    assert suite.get("name") == "tflite-opt run pipeline.toml: cnn"
    failing = [case for case in suite.findall("testcase") if case.find("failure") is not None]
    assert [case.get("name") for case in failing] == ["int8: size_ratio <= 0.01"]
    assert failing[0].get("classname") == "int8"
    ratio = json.loads((tmp_path / "out" / "report.json").read_text())["variants"][2]["size_ratio"]
    assert failing[0].find("failure").get("message") == f"value {ratio:.6g}"
    text = summary.read_text()
    assert text.startswith("# before\n## tflite-opt run pipeline.toml") and "| int8" in text
    assert (tmp_path / "out" / "report.html").exists()  # everything was still written


# ------------------------------------------------------------------------------------------ invalid pipelines


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('mode = "int8"', 'mdoe = "int8"'), "line 22: unknown key 'mdoe' in [[variant]] 'int8'; did you mean 'mode'?"),
        (
            ("runs = 3", 'runs = "three"'),
            "line 11: 'runs' in [evaluation] must be a whole number, got 'three' (a string)",
        ),
        (("epochs = 1", "epochs = 0"), "line 28: 'epochs' in [[variant]] #4 must be >= 1, got 0"),
        (("[output]", "[outputs]"), "line 34: unknown key 'outputs' in the pipeline; did you mean 'output'?"),
        (
            ('name = "fp32"', 'name = "fp32"\nkeep_float = "conv1"\nio_type = "int4"'),
            "line 17: 'io_type' in [[variant]] 'fp32' must be one of 'float32', 'int8', 'uint8', got 'int4' (a string)",
        ),
        (
            ("int8:accuracy_delta>=-0.05", "int9:accuracy_delta>=-0.05"),
            "line 32: [gates] gate 'int9:accuracy_delta>=-0.05' names variant 'int9'",
        ),
    ],
)
def test_invalid_pipeline_exits_1_naming_the_key_and_its_line(keras3_cnn_path, data_dir, tmp_path, edit, message):
    text = pipeline_text(keras3_cnn_path, data_dir)
    assert edit[0] in text
    pipeline = write_pipeline(tmp_path, text.replace(edit[0], edit[1], 1))
    result = run("run", pipeline)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"Error: pipeline.toml, {message}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_data_file_exits_1_naming_it(keras3_cnn_path, data_dir, tmp_path):
    text = pipeline_text(keras3_cnn_path, data_dir).replace(str(data_dir / "calib.npz"), "missing/calib.npz")
    result = run("run", write_pipeline(tmp_path, text))
    assert result.exit_code == 1
    assert (
        result.stderr
        == f"Error: pipeline.toml, line 7: [data] calibration: {tmp_path / 'missing/calib.npz'} does not exist\n"
    )


def test_a_training_variant_without_training_data_is_refused(keras3_cnn_path, data_dir, tmp_path):
    text = pipeline_text(keras3_cnn_path, data_dir).replace(f'train = "{data_dir / "train.npz"}"\n', "")
    result = run("run", write_pipeline(tmp_path, text))
    assert result.exit_code == 1
    assert "variant 'pruned_50' (prune) needs training data: set [data] train" in result.stderr


# ------------------------------------------------------------------------------------------------ library parts


def test_key_lines_index_arrays_of_tables_and_nested_tables():
    from tflite_opt.workflows.toml_lines import key_lines

    text = (
        '[[model]]\npath = "a"\n[model.data]\neval = "x"\n\n[[model]]\npath = "b"\n'
        '[[variant]]\nname = "q"  # c\n"quoted.key" = 1\ninline = { a = 1 }\ndoc = """\nx = 1\n"""\nafter = 2\n'
    )
    lines = key_lines(text)
    assert lines[("model", 0, "path")] == 2
    assert lines[("model", 0, "data", "eval")] == 4
    assert lines[("model", 1, "path")] == 7
    assert lines[("variant", 0, "name")] == 9
    assert lines[("variant", 0, "quoted.key")] == 10
    assert ("variant", 0, "x") not in lines  # inside a multi-line string
    assert lines[("variant", 0, "after")] == 15


def test_cache_verifies_entries_and_the_first_writer_wins(tmp_path):
    from tflite_opt.progress import NullProgress
    from tflite_opt.workflows.cache import Cache, path_sha256

    progress = NullProgress()
    cache = Cache(tmp_path / "c", progress)
    cache.put("ns", "ab" * 32, {"f.bin": b"first"}, {"note": 1})
    cache.put("ns", "ab" * 32, {"f.bin": b"second"})
    entry = cache.get("ns", "ab" * 32)
    assert entry.files == {"f.bin": b"first"} and entry.meta == {"note": 1}
    (tmp_path / "c" / "ns" / "ab" / ("ab" * 32) / "f.bin").write_bytes(b"firs")
    assert cache.peek("ns", "ab" * 32) is None and progress.warnings == []  # peek discards nothing
    assert cache.get("ns", "ab" * 32) is None
    assert progress.warnings == [
        f"cache entry ns/{'ab' * 6} is damaged (f.bin is truncated or corrupt: sha256 mismatch); discarded, recomputing"
    ]
    assert not (tmp_path / "c" / "ns" / "ab" / ("ab" * 32)).exists()
    # A folder is hashed file by file: a renamed file changes the digest.
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "a").write_bytes(b"1")
    before = path_sha256(tree)
    (tree / "sub" / "a").rename(tree / "sub" / "b")
    assert path_sha256(tree) != before


def test_target_micro_records_the_tensor_arena(first_run, keras3_cnn_path, data_dir, tmp_path):
    """The int8 file comes from the cache; its TFLite Micro arena is measured once, then cached with the rest."""
    from tflite_opt.workflows.cache import Cache
    from tflite_opt.workflows.pipeline import run_pipeline
    from tflite_opt.workflows.pipeline_file import load_pipeline

    variants = '[[variant]]\nname = "fp32"\n\n[[variant]]\nname = "int8"\nmode = "int8"\ntarget = "micro"\n'
    pipeline = write_pipeline(tmp_path, pipeline_text(keras3_cnn_path, data_dir, variants=variants))
    cache = Cache(first_run["cache"])
    first = run_pipeline(load_pipeline(pipeline), cache).runs[0]
    int8 = first.report.variant("int8")
    assert first.status == {"fp32": "cached", "int8": "cached"} and first.measured_from_cache == ["fp32"]
    assert int8.error is None and 1024 < int8.arena_bytes < 1 << 20
    again = run_pipeline(load_pipeline(pipeline), cache).runs[0]
    assert (
        again.measured_from_cache == ["fp32", "int8"] and again.report.variant("int8").arena_bytes == int8.arena_bytes
    )
    assert first.report.variant("fp32").arena_bytes is None


def test_the_example_pipeline_is_valid(tmp_path):
    from tflite_opt.workflows.pipeline_file import load_pipeline

    example = ROOT / "examples" / "pipeline.toml"
    (tmp_path / "demo").mkdir()
    for name in ("model.keras", "test.npz", "calib.npz", "train.npz"):
        (tmp_path / "demo" / name).write_bytes(b"x")  # the loader only checks that the files exist
    shutil.copy(example, tmp_path / "pipeline.toml")
    spec = load_pipeline(tmp_path / "pipeline.toml")
    assert [v.name for v in spec.variants] == ["fp32", "dynamic", "float16", "int8", "int8_float_io", "pruned_50"]
    assert spec.evaluation.reference == "fp32" and spec.output.dir == tmp_path / "out"
    assert [g.text for g in spec.gates] == [
        "--max-accuracy-drop 0.02",
        "int8:accuracy_delta>=-0.01",
        "int8:size_ratio<=0.3",
    ]

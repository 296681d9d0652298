"""``tflite-opt distill``: distillation beats training on labels alone, int8 students are integer-only, mixed
Keras versions, unlabelled data, probability teachers, MirroredStrategy, and every bad input with its exit code."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from tflite_opt.cli import cli

NAMES = ("teacher", "scratch", "distilled")


def run(*args):
    return CliRunner().invoke(cli, [*map(str, args)])


def percent(cell: str) -> float | None:
    return None if cell == "—" else float(cell.rstrip("%")) / 100


def table(stdout: str) -> dict[str, dict]:
    """Rows of the comparison table: name -> parameters, size, accuracy and agreement (fractions or None)."""
    rows = {}
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│┃|]", line) if cell.strip()]
        if len(cells) == 6 and cells[0] in NAMES:
            rows[cells[0]] = {
                "parameters": int(cells[1].replace(",", "")),
                "size": cells[2],
                "accuracy": percent(cells[3]),
                "agreement": percent(cells[4]),
                "latency": cells[5],
            }
    return rows


def io_dtypes(path):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=path.read_bytes()).get_signature_runner()
    ins = [d["dtype"].__name__ for d in runner.get_input_details().values()]
    outs = [d["dtype"].__name__ for d in runner.get_output_details().values()]
    return ins, outs


@pytest.mark.slow
def test_distilled_student_beats_scratch_and_ships_integer_only(
    keras3_cnn_path, keras3_student_path, distill_data, tmp_path
):
    from tflite_opt import models
    from tflite_opt.quantize import conversion

    keras_out, tflite_out, report = tmp_path / "student.keras", tmp_path / "student_int8.tflite", tmp_path / "r.json"
    result = run(
        "distill",
        "--teacher",
        keras3_cnn_path,
        "--student",
        keras3_student_path,
        "--train-data",
        distill_data / "few_labels.npz",
        "--transfer-data",
        distill_data / "transfer.npy",
        "--val-data",
        distill_data / "test.npz",
        "--baseline",
        "--mode",
        "int8",
        "--seed",
        0,
        "-o",
        keras_out,
        "-o",
        tflite_out,
        "--report",
        report,
        "--runs",
        5,
    )
    assert result.exit_code == 0, result.output

    rows = table(result.stdout)
    assert set(rows) == {"teacher", "scratch", "distilled"}, result.stdout
    teacher, scratch, distilled = rows["teacher"], rows["scratch"], rows["distilled"]
    assert teacher["parameters"] >= 4 * distilled["parameters"]
    assert scratch["parameters"] == distilled["parameters"]

    variants = {v["name"]: v for v in json.loads(report.read_text())["variants"]}
    assert variants.keys() == {"teacher", "scratch", "distilled"}
    assert all(v["error"] is None and v["latency_ms"]["runs"] == 5 for v in variants.values())
    # The same numbers in the table and the report (table: 2 decimals of a percent).
    for name, row in rows.items():
        assert abs(row["accuracy"] - variants[name]["accuracy"]) < 5e-5
    # Soft targets on the unlabelled transfer set beat 50 labels alone, by a margin (about +14 points for seeds 0-3).
    assert distilled["accuracy"] >= scratch["accuracy"] + 0.05, result.stdout
    assert variants["distilled"]["agreement"] > variants["scratch"]["agreement"]
    assert teacher["accuracy"] > distilled["accuracy"]

    # Per-epoch progress on stderr: loss and validation accuracy of both runs; the last line matches the table's
    # Keras-side number closely (the table measures the int8 file).
    epochs = re.findall(r"epoch (\d+)/10: loss ([\d.]+), val accuracy ([\d.]+)", result.stderr)
    assert len(epochs) == 20
    assert abs(float(epochs[9][2]) - distilled["accuracy"]) < 0.05

    # int8: integer-only, int8 I/O, and the evaluate command measures the same accuracy as the table.
    content = tflite_out.read_bytes()
    assert conversion.float_op_names(content) == []
    assert io_dtypes(tflite_out) == (["int8"], ["int8"])
    assert variants["distilled"]["size_bytes"] == len(content)
    evaluated = run("evaluate", tflite_out, "--data", distill_data / "test.npz", "--format", "json", "--runs", 3)
    assert evaluated.exit_code == 0, evaluated.output
    measured = json.loads(evaluated.stdout)["variants"][0]
    assert measured["accuracy"] == pytest.approx(variants["distilled"]["accuracy"])
    assert measured["mode"] == "int8"

    # The .keras output is a Keras 3 model with the student's parameters; the input file is untouched.
    saved = models.load_model(keras_out)
    assert saved.kind.value == "keras3"
    assert saved.keras_model.count_params() == distilled["parameters"]
    untrained = models.load_model(keras3_student_path).keras_model.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(untrained, saved.keras_model.get_weights()))


def test_tf_keras_teacher_and_student_learn_from_unlabelled_data(
    tf_keras_cnn_h5, tf_keras_student_path, distill_data, tmp_path
):
    from ai_edge_litert.interpreter import Interpreter

    from tflite_opt import models

    keras_out, tflite_out = tmp_path / "student.h5", tmp_path / "student.tflite"
    result = run(
        "distill",
        "--teacher",
        tf_keras_cnn_h5,
        "--student",
        tf_keras_student_path,
        "--train-data",
        distill_data / "unlabelled.npy",
        "--alpha",
        0,
        "--epochs",
        2,
        "--runs",
        0,
        "-o",
        keras_out,
        "-o",
        tflite_out,
    )
    assert result.exit_code == 0, result.output
    assert "epoch 2/2: loss" in result.stderr
    saved = models.load_model(keras_out)
    assert saved.kind.value == "tf_keras"
    rows = table(result.stdout)
    assert rows["teacher"]["parameters"] >= 4 * rows["distilled"]["parameters"]
    # Unlabelled validation split: no accuracy, but the agreement with the teacher is measured.
    assert rows["distilled"]["accuracy"] is None and rows["teacher"]["agreement"] == 1.0
    assert 0 < rows["distilled"]["agreement"] <= 1
    runner = Interpreter(model_content=tflite_out.read_bytes()).get_signature_runner()
    (name,) = runner.get_input_details()
    images = np.load(distill_data / "unlabelled.npy")[:4]
    (logits,) = runner(**{name: images}).values()
    assert logits.shape == (4, 10) and logits.dtype == np.float32
    expected = saved.keras_model.predict(images, verbose=0)
    np.testing.assert_allclose(logits, expected, atol=1e-4)


def test_savedmodel_probability_teacher_under_mirrored_strategy(
    softmax_teacher_savedmodel, keras3_cnn_path, keras3_student_path, distill_data, tmp_path
):
    out = tmp_path / "student.keras"
    result = run(
        "distill",
        "--teacher",
        softmax_teacher_savedmodel,
        "--student",
        keras3_student_path,
        "--train-data",
        distill_data / "few_labels.npz",
        "--val-split",
        0.2,
        "--epochs",
        1,
        "--distribute",
        "mirrored",
        "--runs",
        0,
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    assert "teacher outputs probabilities" in result.stderr
    assert re.search(r"MirroredStrategy x1", result.stderr)
    assert out.stat().st_size > 0
    # 10 of the 50 labelled samples were held out.
    assert "10 validation samples" in result.stdout
    # The SavedModel's parameters are counted from its variables: the same as the Keras teacher's.
    from tflite_opt import models

    keras_teacher = models.load_model(keras3_cnn_path).keras_model
    assert table(result.stdout)["teacher"]["parameters"] == keras_teacher.count_params()


def test_probability_teacher_gives_the_same_soft_targets_as_its_logits(
    keras3_cnn_path, softmax_teacher_path, keras3_student_path, digits
):
    from tflite_opt import models
    from tflite_opt.representative_data import Dataset
    from tflite_opt.training import distillation

    student = models.load_model(keras3_student_path)
    samples = Dataset({"image": digits[2][:64]}, source="test")
    soft = {}
    for path in (keras3_cnn_path, softmax_teacher_path):
        teacher = models.load_model(path)
        pair = distillation.check_pair(teacher, student)
        logits, kind = distillation.teacher_logits(teacher, samples, pair)
        soft[kind] = np.exp(distillation._log_softmax(logits.astype(np.float64) / 4.0))
    assert set(soft) == {"logits", "probabilities"}
    np.testing.assert_allclose(soft["probabilities"], soft["logits"], atol=1e-5)


def test_loss_matches_the_formula():
    from tflite_opt.training import distillation

    rng = np.random.default_rng(0)
    teacher, student = rng.normal(0, 3, (6, 5)), rng.normal(0, 3, (6, 5))
    labels = np.array([0, 4, -1, 2, -1, 1])
    for alpha, temperature in ((0.1, 4.0), (0.0, 2.5), (1.0, 1.0), (0.5, 1.0)):
        loss = distillation.make_loss(alpha=alpha, temperature=temperature)
        packed = np.concatenate([labels[:, None], teacher], axis=1).astype(np.float32)
        got = loss(packed, student.astype(np.float32)).numpy()
        want = distillation.distillation_loss_numpy(labels, teacher, student, alpha=alpha, temperature=temperature)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # alpha = 1 is plain cross-entropy; a student equal to its teacher has no soft-target loss.
    ce = -distillation._log_softmax(student)[[0, 1, 3, 5], [0, 4, 2, 1]]
    full = distillation.distillation_loss_numpy(labels, teacher, student, alpha=1.0, temperature=4.0)
    np.testing.assert_allclose(full[[0, 1, 3, 5]], ce)
    assert np.allclose(full[[2, 4]], 0)
    same = distillation.distillation_loss_numpy(np.full(6, -1), teacher, teacher, alpha=0.0, temperature=4.0)
    assert np.allclose(same, 0, atol=1e-12)
    # Probability outputs are detected and become logits with the same softmax.
    probabilities = np.exp(distillation._log_softmax(teacher))
    logits, kind = distillation.to_logits(probabilities)
    assert kind == "probabilities"
    np.testing.assert_allclose(distillation._log_softmax(logits), distillation._log_softmax(teacher), atol=1e-4)
    assert distillation.to_logits(teacher)[1] == "logits"


def test_mismatched_output_sizes_name_both_shapes(keras3_cnn_path, five_class_student_path, distill_data, tmp_path):
    out = tmp_path / "student.keras"
    result = run(
        "-q",
        "distill",
        "--teacher",
        keras3_cnn_path,
        "--student",
        five_class_student_path,
        "--train-data",
        distill_data / "few_labels.npz",
        "-o",
        out,
    )
    assert result.exit_code == 1
    assert "teacher outputs (None, 10) but student outputs (None, 5)" in result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()


def test_unlabelled_data_needs_alpha_zero(keras3_cnn_path, keras3_student_path, distill_data, tmp_path):
    out = tmp_path / "student.keras"
    result = run(
        "-q",
        "distill",
        "--teacher",
        keras3_cnn_path,
        "--student",
        keras3_student_path,
        "--train-data",
        distill_data / "unlabelled.npy",
        "-o",
        out,
    )
    assert result.exit_code == 1
    assert "unlabelled.npy has no labels" in result.stderr and "--alpha 0" in result.stderr
    assert not out.exists()
    baseline = run(
        "-q",
        "distill",
        "--teacher",
        keras3_cnn_path,
        "--student",
        keras3_student_path,
        "--train-data",
        distill_data / "unlabelled.npy",
        "--alpha",
        0,
        "--baseline",
        "-o",
        out,
    )
    assert baseline.exit_code == 1
    assert "--baseline trains a student on labels alone" in baseline.stderr


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        (("a.keras", "b.keras"), "are both Keras files"),
        (("a.tflite", "b.tflite"), "are both .tflite files"),
        (("a.onnx",), "the suffix says what to write"),
    ],
)
def test_output_scheme_is_checked_before_any_work(outputs, message, keras3_student_path, tmp_path):
    args = [arg for out in outputs for arg in ("-o", tmp_path / out)]
    result = run(
        "distill", "--teacher", keras3_student_path, "--student", keras3_student_path, "--train-data", "x.npz", *args
    )
    assert result.exit_code == 2
    assert message in result.stderr


def test_inputs_are_never_overwritten(keras3_cnn_path, keras3_student_path, distill_data):
    before = keras3_student_path.read_bytes()
    result = run(
        "-q",
        "distill",
        "--teacher",
        keras3_cnn_path,
        "--student",
        keras3_student_path,
        "--train-data",
        distill_data / "few_labels.npz",
        "-o",
        keras3_student_path,
    )
    assert result.exit_code == 1
    assert "would overwrite the input" in result.stderr
    assert keras3_student_path.read_bytes() == before


def test_help_shows_example_and_does_not_import_tensorflow():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from tflite_opt.cli import cli\n"
        "result = CliRunner().invoke(cli, ['distill', '--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(result.output)\n"
        "print('TF_LOADED' if 'tensorflow' in sys.modules else 'TF_NOT_LOADED')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "TF_NOT_LOADED" in done.stdout
    assert "Distill a teacher model into a small student" in done.stdout
    assert "tflite-opt distill --teacher big.keras" in done.stdout

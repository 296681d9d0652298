"""Distillation fixtures: untrained students (Keras 3, tf_keras, a 5-class misfit), a softmax teacher, and data
with few labels plus an unlabelled transfer set (session-scoped: built once)."""

from __future__ import annotations

import numpy as np
import pytest

# Few labels and many unlabelled samples: where a teacher's soft targets help most, so the distilled student
# beats the one trained on the labels alone by a wide, seed-stable margin (checked while writing the tests, int8
# files on the digits test split with the command's defaults: 85-87% vs 71-72% for --seed 0-3; with other
# labelled subsets and student initializations +8 to +19 points).
LABELLED_SAMPLES = 50


def build_student(keras, num_classes: int = 10, name: str = "student"):
    """A tiny CNN for 8x8x1 digits: ~1.4k parameters, ~28x fewer than the house CNN (the teacher)."""
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


@pytest.fixture(scope="session")
def keras3_student_path(tmp_path_factory):
    """An untrained Keras 3 student (seeded initial weights)."""
    import keras

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("student_k3") / "student.keras"
    build_student(keras).save(path)
    return path


@pytest.fixture(scope="session")
def tf_keras_student_path(tmp_path_factory):
    """An untrained tf_keras (Keras 2) student saved as .h5."""
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("student_k2") / "student.h5"
    build_student(tf_keras).save(path)
    return path


@pytest.fixture(scope="session")
def five_class_student_path(tmp_path_factory):
    """A Keras 3 student that predicts 5 classes: cannot learn from a 10-class teacher."""
    import keras

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("student_5") / "student5.keras"
    build_student(keras, num_classes=5, name="student5").save(path)
    return path


@pytest.fixture(scope="session")
def softmax_teacher_path(tmp_path_factory, keras3_cnn_path):
    """The trained Keras 3 CNN with a Softmax layer appended: it outputs probabilities, not logits."""
    import keras

    cnn = keras.saving.load_model(keras3_cnn_path)
    outputs = keras.layers.Softmax(name="probabilities")(cnn.output)
    model = keras.Model(cnn.input, outputs, name="softmax_teacher")
    path = tmp_path_factory.mktemp("softmax_teacher") / "teacher_softmax.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def softmax_teacher_savedmodel(tmp_path_factory, softmax_teacher_path):
    """The softmax teacher exported as a SavedModel (no Keras object behind it when loaded)."""
    import keras

    model = keras.saving.load_model(softmax_teacher_path)
    path = tmp_path_factory.mktemp("softmax_teacher_sm") / "teacher"
    model.export(str(path), format="tf_saved_model", verbose=False)
    return path


@pytest.fixture(scope="session")
def distill_data(tmp_path_factory, digits):
    """``few_labels.npz`` (x, y: LABELLED_SAMPLES samples), ``transfer.npy`` (the other training samples, no
    labels), ``unlabelled.npy`` (300 samples) and ``test.npz`` (x, y) in one folder."""
    folder = tmp_path_factory.mktemp("distill_data")
    train_x, train_y, test_x, test_y = digits
    order = np.random.default_rng(0).permutation(len(train_x))
    labelled, rest = order[:LABELLED_SAMPLES], order[LABELLED_SAMPLES:]
    np.savez(folder / "few_labels.npz", x=train_x[labelled], y=train_y[labelled])
    np.save(folder / "transfer.npy", train_x[rest])
    np.save(folder / "unlabelled.npy", train_x[rest[:300]])
    np.savez(folder / "test.npz", x=test_x, y=test_y)
    return folder

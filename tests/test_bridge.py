"""The Keras 3 -> tf_keras bridge and the fine-tuning library underneath prune/qat/cluster."""

from __future__ import annotations

import numpy as np
import pytest

from tests.fixtures_training import build_keras3_subclassed
from tflite_opt.errors import DataError, TrainingError


def keras3():
    from tflite_opt.models import tf_runtime

    tf_runtime.import_tfmot()  # tf_keras first, as the commands do
    return tf_runtime.import_keras3()


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def test_bridged_cnn_reproduces_the_keras3_model(keras3_cnn_path, digits):
    from tflite_opt.models import load_model
    from tflite_opt.training.bridge import to_tf_keras

    keras3()
    source = load_model(keras3_cnn_path).keras_model
    _, _, test_x, _ = digits
    bridged, report = to_tf_keras(source, {"image": test_x[:32]})
    assert type(bridged).__module__.startswith("tf_keras")
    assert report.max_abs_diff <= 1e-5 and report.samples == 32 and report.layers == 8
    # Independently of the bridge's own check: every test sample, outputs and weights.
    assert max_diff(source.predict(test_x, verbose=0), bridged.predict(test_x, verbose=0)) <= 1e-5
    assert [layer.name for layer in bridged.layers] == [layer.name for layer in source.layers]
    for name in ("conv1", "bn1", "conv2", "dense1", "logits"):
        for theirs, ours in zip(source.get_layer(name).get_weights(), bridged.get_layer(name).get_weights()):
            assert np.array_equal(theirs, ours), name
    assert bridged.input_names == ["image"]


def test_bridge_keeps_multi_input_shared_nested_and_recurrent_wiring():
    from tflite_opt.training.bridge import to_tf_keras

    keras = keras3()
    keras.utils.set_random_seed(3)
    a = keras.Input((10,), name="a")
    b = keras.Input((5,), name="b")
    shared = keras.layers.Dense(8, name="shared", kernel_regularizer=keras.regularizers.L2(0.01))
    inner = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(4, activation="tanh"), keras.layers.LayerNormalization()], name="inner"
    )
    h = keras.layers.Concatenate(name="cat")([shared(a), shared(keras.layers.Dense(10, name="pre_b")(b))])
    h = inner(h)
    seq = keras.layers.Reshape((4, 1), name="to_seq")(h)
    out = keras.layers.Dense(3, activation="softmax", name="probs")(keras.layers.LSTM(6, name="lstm")(seq))
    model = keras.Model({"a": a, "b": b}, out)
    rng = np.random.default_rng(0)
    feed = {"a": rng.random((20, 10), np.float32), "b": rng.random((20, 5), np.float32)}
    bridged, report = to_tf_keras(model, feed)
    assert report.max_abs_diff <= 1e-5
    assert sorted(bridged.input_names) == ["a", "b"]
    assert max_diff(model.predict(feed, verbose=0), bridged.predict(feed, verbose=0)) <= 1e-5
    assert bridged.get_layer("shared").kernel_regularizer.l2 == pytest.approx(0.01)


def test_custom_layer_is_named():
    from tflite_opt.training.bridge import to_tf_keras

    keras = keras3()

    class TimesThree(keras.layers.Layer):
        def call(self, inputs):
            return inputs * 3.0

    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(TimesThree(name="triple")(inputs)))
    with pytest.raises(TrainingError, match=r"layer 'triple' \(.*TimesThree\) has no tf_keras twin"):
        to_tf_keras(model)


def test_raw_keras_ops_call_is_named():
    from tflite_opt.training.bridge import to_tf_keras

    keras = keras3()
    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.ops.add(keras.layers.Dense(4, name="d")(inputs), inputs))
    with pytest.raises(TrainingError, match=r"operation 'add' \(Add, a raw keras.ops call\)"):
        to_tf_keras(model)


def test_subclassed_model_is_named():
    from tflite_opt.training.bridge import check_bridgeable, is_keras3_model

    keras3()
    model = build_keras3_subclassed()
    assert is_keras3_model(model)
    with pytest.raises(TrainingError, match=r"model 'digits_net' is a subclassed model \(class DigitsNet\)"):
        check_bridgeable(model)


def test_keras3_only_option_with_an_effect_is_refused():
    from tflite_opt.training.bridge import to_tf_keras

    keras = keras3()
    inputs = keras.Input((8,), name="x")
    dense = keras.layers.Dense(4, name="adapted")
    model = keras.Model(inputs, dense(inputs))
    dense.enable_lora(2)
    with pytest.raises(TrainingError, match=r"layer 'adapted' \(Dense\) sets lora_rank=2"):
        to_tf_keras(model)


def test_bridge_check_catches_a_wrong_rebuild(monkeypatch, keras3_cnn_path, digits):
    from tflite_opt.models import load_model
    from tflite_opt.training import bridge

    keras3()
    source = load_model(keras3_cnn_path).keras_model
    monkeypatch.setattr(bridge, "_copy_weights", lambda src, dst: None)  # fresh random weights instead
    with pytest.raises(TrainingError, match=r"does not reproduce the Keras 3 model: outputs differ by"):
        bridge.to_tf_keras(source, {"image": digits[2][:32]})


# ------------------------------------------------------------------------------------------ fine-tuning library


def tf_keras_classifier(activation: str | None, units: int = 3):
    from tflite_opt.models import tf_runtime

    tf_keras = tf_runtime.import_tf_keras()
    inputs = tf_keras.Input((4,), name="x")
    return tf_keras.Model(inputs, tf_keras.layers.Dense(units, activation=activation, name="out")(inputs))


@pytest.mark.parametrize(
    "activation, units, binary, from_logits",
    [(None, 3, False, True), ("softmax", 3, False, False), ("sigmoid", 1, True, False), (None, 1, True, True)],
)
def test_loss_follows_the_output_activation(activation, units, binary, from_logits):
    from tflite_opt.training.fit import choose_loss

    model = tf_keras_classifier(activation, units)
    spec = choose_loss(model, model, units, "auto")
    assert (spec.binary, spec.from_logits, spec.source) == (binary, from_logits, "detected")


def test_compiled_loss_wins_and_the_flag_wins_over_it():
    from tflite_opt.models import tf_runtime
    from tflite_opt.training.fit import choose_loss

    tf_keras = tf_runtime.import_tf_keras()
    model = tf_keras_classifier("softmax")
    model.compile(loss=tf_keras.losses.CategoricalCrossentropy(from_logits=True))
    compiled = choose_loss(model, model, 3, "auto")
    assert (compiled.binary, compiled.from_logits, compiled.source) == (False, True, "compiled")
    flagged = choose_loss(model, model, 3, "sparse-ce-probabilities")
    assert (flagged.from_logits, flagged.source) == (False, "flag")


def test_prune_model_leaves_the_callers_model_alone_and_checks_data_first(tf_keras_cnn_h5, digits):
    from tflite_opt.models import load_model
    from tflite_opt.representative_data import Dataset
    from tflite_opt.training.fit import FitConfig
    from tflite_opt.training.pruning import prune_model

    keras3()
    source = load_model(tf_keras_cnn_h5).keras_model
    before = [w.copy() for w in source.get_weights()]
    train_x, train_y, _, _ = digits
    bad = Dataset({"image": train_x[:64]}, np.full(64, 12), source="bad.npz")
    with pytest.raises(DataError, match=r"label 12 of sample 0 in bad.npz is outside the model's 10 classes"):
        prune_model(source, bad, sparsity=0.5)
    result = prune_model(
        source,
        Dataset({"image": train_x[:256]}, train_y[:256], source="train"),
        sparsity=0.5,
        skip_layers=["logits"],
        config=FitConfig(epochs=1, val_split=0.0),
    )
    assert all(np.array_equal(a, b) for a, b in zip(before, source.get_weights()))
    rows = {row.layer: row for row in result.per_layer}
    assert not rows["logits"].optimized and rows["logits"].zeros == 0 and result.skipped == ["logits"]
    assert rows["dense1"].optimized and rows["dense1"].sparsity == pytest.approx(0.5, abs=0.01)
    assert result.history.val_samples == 0 and result.history.final_val_accuracy is None

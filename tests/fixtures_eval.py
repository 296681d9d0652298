""".tflite files for the evaluation/inspection tests, converted once per session straight with TFLiteConverter.

These do not go through ``tflite_opt.quantize.conversion`` on purpose: the evaluation engine is tested against files made
the way the TensorFlow Lite guides make them. ``with_custom_op`` turns one op of such a file into a custom op.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.shared_fixtures import build_once

CUSTOM_OP = "TfliteOptTestOp"


def with_custom_op(source, target):
    """``source`` with its last op (the logits FULLY_CONNECTED) turned into a CUSTOM op ``TfliteOptTestOp``."""
    from ai_edge_litert.schema_py_generated import BuiltinOperator, OperatorCodeT

    from tflite_opt.quantize import flatbuffer_edits

    model = flatbuffer_edits.read(source.read_bytes())
    code = OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = BuiltinOperator.CUSTOM
    code.customCode, code.version = CUSTOM_OP.encode(), 1
    model.operatorCodes.append(code)
    op = model.subgraphs[0].operators[-1]
    op.opcodeIndex = len(model.operatorCodes) - 1
    op.builtinOptionsType, op.builtinOptions = 0, None
    target.write_bytes(flatbuffer_edits.write(model))
    return target


def _converter_for(keras_model, mode: str, calibration: np.ndarray):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)

    def representative():
        for i in range(len(calibration)):
            yield [calibration[i : i + 1]]

    if mode == "fp32":
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode in ("int8", "int8_float_io"):
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if mode == "int8":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    elif mode == "int16x8":
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
    return converter


@pytest.fixture(scope="session")
def tflite_files(tmp_path_factory, keras3_cnn_path, digits):
    """The house CNN as ``{mode: path}``: fp32, dynamic, float16, int8 (int8 I/O), int8_float_io, fixed_batch.

    ``fixed_batch`` is the fp32 model behind a fixed input shape (1, 8, 8, 1): it cannot be batched.
    """

    def build(folder):
        import keras
        import tensorflow as tf

        model = keras.saving.load_model(keras3_cnn_path)
        train_x = digits[0]
        paths = {}
        for mode in ("fp32", "dynamic", "float16", "int8", "int8_float_io"):
            path = folder / f"cnn_{mode}.tflite"
            path.write_bytes(_converter_for(model, mode, train_x[:100]).convert())
            paths[mode] = path

        image = keras.Input(batch_shape=(1, 8, 8, 1), name="image")
        fixed = keras.Model(image, model(image))
        path = folder / "cnn_fixed_batch.tflite"
        path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(fixed).convert())
        paths["fixed_batch"] = path
        return paths

    return build_once(tmp_path_factory, "tflite", build)


@pytest.fixture(scope="session")
def no_signature_tflite(tmp_path_factory, tflite_files):
    """The fp32 file with its signature table stripped: tensors are then known by tensor name only."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(tflite_files["fp32"].read_bytes())
    model.signatureDefs = []
    path = tmp_path_factory.mktemp("nosig") / "cnn_nosig.tflite"
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    return path


@pytest.fixture(scope="session")
def two_io_tflite(tmp_path_factory, two_io_savedmodel, digits):
    """The two-input/two-output SavedModel as fp32 and int8 (int8 I/O) files, plus labelled data.

    Returns:
        dict with ``fp32``, ``int8`` (paths) and ``data`` (a .npz with ``image``, ``meta`` and labels ``y``).
    """

    def build(folder):
        import tensorflow as tf

        calibration = np.load(two_io_savedmodel.parent / "calib.npz")
        fp32 = folder / "two_fp32.tflite"
        fp32.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(two_io_savedmodel)).convert())

        def representative():
            for i in range(len(calibration["image"])):
                yield {"image": calibration["image"][i : i + 1], "meta": calibration["meta"][i : i + 1]}

        converter = tf.lite.TFLiteConverter.from_saved_model(str(two_io_savedmodel))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        int8 = folder / "two_int8.tflite"
        int8.write_bytes(converter.convert())

        _, _, test_x, test_y = digits
        meta = np.random.default_rng(1).random((len(test_x), 4)).astype(np.float32)
        data = folder / "two_test.npz"
        np.savez(data, image=test_x, meta=meta, y=test_y)
        return {"fp32": fp32, "int8": int8, "data": data}

    return build_once(tmp_path_factory, "two_io_tflite", build)

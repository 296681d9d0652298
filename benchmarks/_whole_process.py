"""The TFLite tutorials' evaluation loop as a whole process: load the data, one interpreter, one sample per invoke.

``bench_throughput.py --whole-process`` times this script against ``tflite-opt evaluate`` on the same file and data,
each as its own process (start-up, imports and data loading included). It prints the accuracy, which the benchmark
checks against ours.

    python benchmarks/_whole_process.py MODEL.tflite DATA.npz
"""

import sys

import numpy as np
from ai_edge_litert.interpreter import Interpreter


def tutorial_predictions(model_path: str, images: np.ndarray) -> np.ndarray:
    """The tutorials' loop: one interpreter, one sample per invoke; the top-1 class of each sample."""
    interpreter = Interpreter(model_path=model_path)
    interpreter.allocate_tensors()
    input_details = interpreter.get_input_details()[0]
    output_details = interpreter.get_output_details()[0]
    predictions = np.zeros(len(images), dtype=np.int64)
    for i, image in enumerate(images):
        if input_details["dtype"] in (np.int8, np.uint8):
            scale, zero_point = input_details["quantization"]
            image = image / scale + zero_point
        image = np.expand_dims(image, axis=0).astype(input_details["dtype"])
        interpreter.set_tensor(input_details["index"], image)
        interpreter.invoke()
        output = interpreter.get_tensor(output_details["index"])[0]
        predictions[i] = output.argmax()
    return predictions


def main(model_path: str, data_path: str) -> None:
    data = np.load(data_path)
    images, labels = data["x"], data["y"]
    print(float(np.mean(tutorial_predictions(model_path, images) == labels)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

"""Running one ``.tflite`` in the TensorFlow Lite Micro interpreter: probes at a given arena size, and the outputs
of TFLM next to LiteRT's on a dataset.

TFLM knows tensors by position only (subgraph 0's inputs and outputs, in file order); the model's signature
names come from LiteRT, which also verifies the flatbuffer before TFLM (which does not verify it) reads it.
Samples go in one invoke at a time, in order, on both sides: that is how a microcontroller runs a streaming
model, and resource variables (state) then evolve the same way in both interpreters. No TensorFlow here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from tflite_opt.compat import micro as tflm
from tflite_opt.errors import EvaluationError
from tflite_opt.measure.runtime import (
    ModelRunner,
    SignatureInfo,
    TensorBinding,
    dequantize,
    describe_signature,
    interpreter_from_bytes,
    prepare_inputs,
)
from tflite_opt.representative_data import Dataset
from tflite_opt.verbosity import is_verbose


@dataclass
class Probe:
    """One attempt to allocate and run the model at ``arena_size`` bytes.

    Attributes:
        arena_size: the arena tried.
        ok: allocation and one invoke succeeded.
        log: what TFLM wrote meanwhile (why it failed; the allocation summary when it worked).
        error: the exception's text when it failed.
    """

    arena_size: int
    ok: bool
    log: str
    error: str | None = None


@dataclass
class MicroModel:
    """A model as TFLM sees it: its bytes, its signature (for names and quantization), and TFLM's positions.

    Attributes:
        content: the ``.tflite`` bytes (kept alive as long as any TFLM interpreter over them).
        source: the model's name in messages.
        signature: LiteRT's description of subgraph 0's signature.
        input_positions: signature input name -> TFLM input index.
        output_positions: signature output name -> TFLM output index.
        batch: samples per invoke (the stored batch axis; TFLM cannot resize).
        resource_variables: distinct resource variables, which TFLM allocates room for up front.
    """

    content: bytes
    source: str
    signature: SignatureInfo
    input_positions: dict[str, int]
    output_positions: dict[str, int]
    batch: int
    resource_variables: int


def load_micro_model(content: bytes, *, signature: str | None = None, source: str = "model") -> MicroModel:
    """Describe a model for TFLM (the LiteRT interpreter verifies the file first).

    Raises:
        EvaluationError: the file is not a valid ``.tflite`` model, or the signature is not subgraph 0's.
    """
    interpreter = interpreter_from_bytes(content, xnnpack=False, source=source)
    info = describe_signature(interpreter, signature)
    if info.subgraph_index != 0:
        raise EvaluationError(
            f"signature {info.key!r} of {source} runs subgraph {info.subgraph_index}, but TFLM runs subgraph 0 "
            "only; pass --signature with the signature of subgraph 0"
        )
    inputs = [int(d["index"]) for d in interpreter.get_input_details()]
    outputs = [int(d["index"]) for d in interpreter.get_output_details()]
    return MicroModel(
        content=bytes(content),
        source=source,
        signature=info,
        input_positions={b.name: inputs.index(b.index) for b in info.inputs if b.index in inputs},
        output_positions={b.name: outputs.index(b.index) for b in info.outputs if b.index in outputs},
        batch=1 if info.batch_resizable else info.fixed_batch,
        resource_variables=tflm.count_resource_variables(content),
    )


def zero_inputs(model: MicroModel) -> dict[str, np.ndarray]:
    """Stored-dtype inputs of zeros (what the arena search runs on without data)."""
    return {
        b.name: np.zeros((model.batch,) + tuple(max(int(d), 1) for d in b.shape_signature[1:]), b.spec.dtype)
        for b in model.signature.inputs
    }


def first_inputs(model: MicroModel, dataset: Dataset | None) -> dict[str, np.ndarray]:
    """The first invoke's worth of samples in stored dtypes (zeros without data)."""
    if dataset is None or len(dataset) == 0:
        return zero_inputs(model)
    chunk = {name: array[: model.batch] for name, array in dataset.inputs.items()}
    return prepare_inputs(model.signature, chunk, model.batch, source=model.source)


class MicroSession:
    """One TFLM interpreter at one arena size (allocated on creation)."""

    def __init__(self, model: MicroModel, arena_size: int) -> None:
        self.model = model
        self.arena_size = int(arena_size)
        self.wrapper = tflm.interpreter_wrapper(model.content, self.arena_size, model.resource_variables)

    def run(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Set the inputs (stored dtypes), invoke once, return the outputs (stored dtypes) by name."""
        for name, position in self.model.input_positions.items():
            self.wrapper.SetInputTensor(np.ascontiguousarray(arrays[name]), position)
        self.wrapper.Invoke()
        return {
            name: np.array(self.wrapper.GetOutputTensor(position))
            for name, position in self.model.output_positions.items()
        }

    def print_allocations(self) -> None:
        self.wrapper.PrintAllocations()


def probe(model: MicroModel, arena_size: int, inputs: Mapping[str, np.ndarray]) -> Probe:
    """Allocate at ``arena_size`` and invoke once on ``inputs``; what TFLM logged is kept, never shown."""
    error = None
    with tflm.captured_native_output(echo=is_verbose()) as log:
        try:
            session = MicroSession(model, arena_size)
            session.run(inputs)
            session.print_allocations()
        except (RuntimeError, ValueError, MemoryError) as exc:
            error = str(exc) or type(exc).__name__
    return Probe(arena_size, error is None, log.text, error)


@dataclass
class SideBySide:
    """Outputs of TFLM and LiteRT on the same samples, in real units, by output name."""

    micro: dict[str, np.ndarray]
    litert: dict[str, np.ndarray]


def run_side_by_side(
    model: MicroModel,
    arena_size: int,
    dataset: Dataset,
    *,
    on_batch: Callable[[int], None] | None = None,
) -> SideBySide:
    """Run every sample through TFLM (at ``arena_size``) and LiteRT (XNNPACK, the default), in order.

    Raises:
        EvaluationError: TFLM or LiteRT failed on a sample.
    """
    runner = ModelRunner(model.content, threads=1, xnnpack=True, signature=model.signature.key, source=model.source)
    runner.prepare(model.batch)
    micro: dict[str, list[np.ndarray]] = {b.name: [] for b in model.signature.outputs}
    reference: dict[str, list[np.ndarray]] = {b.name: [] for b in model.signature.outputs}
    n = len(dataset)
    with tflm.captured_native_output(echo=is_verbose()) as log:
        try:
            session = MicroSession(model, arena_size)
            for start in range(0, n, model.batch):
                stop = min(start + model.batch, n)
                chunk = {name: array[start:stop] for name, array in dataset.inputs.items()}
                arrays = prepare_inputs(model.signature, chunk, model.batch, source=model.source)
                _collect(micro, session.run(arrays), model.signature, stop - start)
                _collect(reference, runner.run(arrays), model.signature, stop - start)
                if on_batch is not None:
                    on_batch(stop - start)
        except (RuntimeError, ValueError, MemoryError) as exc:
            failure = exc
        else:
            failure = None
    if failure is not None:
        reason = tflm.first_reason(log.text) or str(failure)
        raise EvaluationError(f"TFLM failed to run {model.source} on the data: {reason}") from failure
    return SideBySide(
        micro={name: np.concatenate(parts) for name, parts in micro.items() if parts},
        litert={name: np.concatenate(parts) for name, parts in reference.items() if parts},
    )


def _collect(
    into: dict[str, list[np.ndarray]], outputs: Mapping[str, np.ndarray], info: SignatureInfo, rows: int
) -> None:
    for binding in info.outputs:
        if binding.name in outputs:
            into[binding.name].append(_real(outputs[binding.name], binding)[:rows])


def _real(values: np.ndarray, binding: TensorBinding) -> np.ndarray:
    values = np.asarray(values)
    return dequantize(values, binding.spec) if binding.is_quantized else values.astype(np.float32, copy=False)

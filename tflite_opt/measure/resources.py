"""Will a model's tensors fit in memory? Checked before LiteRT allocates them.

A file whose tensors need more memory than the machine (or its cgroup) has would otherwise be killed by the OOM
killer mid-run, with no message. The check refuses only files that certainly cannot fit: the bytes counted are a
lower bound of what LiteRT's arena needs — the non-constant tensors of the single largest op, which must be live
at once, at the batch size being prepared — plus, with XNNPACK, the copy of the weights it repacks for the ops it
runs (convolutions and fully connected layers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tflite_opt.errors import EvaluationError
from tflite_opt.measure import flatbuffer

# schema TensorType -> bits per element (string/resource/variant tensors have no fixed size and count as 0)
_BITS = {0: 32, 1: 16, 2: 32, 3: 8, 4: 64, 6: 8, 7: 16, 8: 64, 9: 8, 10: 64, 11: 128, 12: 64, 15: 32, 16: 16,
         17: 4, 18: 16, 19: 2, 20: 4, 21: 8, 22: 8}  # fmt: skip
# Ops whose constant inputs XNNPACK packs into a layout of its own (a second copy of those weights).
_PACKED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL"}


@dataclass(frozen=True)
class _Tensor:
    fixed_bytes: int  # bytes with a batch of 1 when the leading axis may be resized
    scales_with_batch: bool
    constant: bool

    def size(self, batch: int) -> int:
        return self.fixed_bytes * (batch if self.scales_with_batch else 1)


@dataclass(frozen=True)
class TensorPlan:
    """What a model's tensors need, read from the flatbuffer: each op's tensors, and the weights XNNPACK packs."""

    ops: tuple[tuple[str, tuple[_Tensor, ...]], ...]
    packed_weight_bytes: int

    @classmethod
    def from_content(cls, content: bytes, *, resizable: bool) -> TensorPlan:
        """Parse ``content`` (already accepted by the interpreter's verifier).

        Args:
            resizable: the batch axis will be resized; tensors whose stored signature has ``-1`` there scale with it.
        """
        model = flatbuffer.Model.GetRootAs(content, 0)
        names = flatbuffer.operator_names(model)
        ops, packed, counted = [], 0, set()
        for s in range(model.SubgraphsLength()):
            subgraph = model.Subgraphs(s)
            tensors = [_tensor(model, subgraph.Tensors(t), resizable) for t in range(subgraph.TensorsLength())]
            for o in range(subgraph.OperatorsLength()):
                op = subgraph.Operators(o)
                used = _tensor_indices(op)
                name = names[op.OpcodeIndex()] if op.OpcodeIndex() < len(names) else "?"
                ops.append((name, tuple(tensors[i] for i in sorted(used) if i < len(tensors))))
                if name in _PACKED_OPS:
                    for i in used:
                        if i < len(tensors) and tensors[i].constant and (s, i) not in counted:
                            counted.add((s, i))
                            packed += tensors[i].size(1)
        return cls(tuple(ops), packed)

    def largest_op(self, batch: int) -> tuple[str, int]:
        """(name, bytes) of the op whose non-constant inputs and outputs take the most memory at ``batch``."""
        best = ("", 0)
        for name, tensors in self.ops:
            size = sum(t.size(batch) for t in tensors if not t.constant)
            if size > best[1]:
                best = (name, size)
        return best


def _tensor_indices(op) -> set[int]:
    """The op's input and output tensor indices (``-1`` marks an omitted optional input)."""
    found = set()
    for length, values in ((op.InputsLength(), op.InputsAsNumpy), (op.OutputsLength(), op.OutputsAsNumpy)):
        if length:
            found.update(int(i) for i in values() if int(i) >= 0)
    return found


def _tensor(model, tensor, resizable: bool) -> _Tensor:
    signature = [int(d) for d in tensor.ShapeSignatureAsNumpy()] if tensor.ShapeSignatureLength() else []
    shape = [int(d) for d in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []
    scales = resizable and bool(signature) and signature[0] == -1
    dims = ([1] + [max(d, 1) for d in signature[1:]]) if scales else [max(d, 1) for d in shape]
    elements = 1
    for d in dims:
        elements *= d
    buffer = model.Buffers(tensor.Buffer()) if 0 < tensor.Buffer() < model.BuffersLength() else None
    constant = buffer is not None and (buffer.DataLength() > 0 or (buffer.Offset() > 1 and buffer.Size() > 0))
    return _Tensor(-(-elements * _BITS.get(int(tensor.Type()), 0) // 8), scales, constant)


def available_memory() -> tuple[int, str] | None:
    """(bytes, where that number comes from) a new allocation can use, or ``None`` when unknown.

    The smaller of ``MemAvailable`` (``/proc/meminfo``) and the headroom of the process's cgroup (``memory.max``
    less what the cgroup uses, reclaimable page cache excluded).
    """
    found = []
    meminfo = _meminfo_available()
    if meminfo is not None:
        found.append((meminfo, "MemAvailable in /proc/meminfo"))
    cgroup = _cgroup_headroom()
    if cgroup is not None:
        found.append(cgroup)
    return min(found) if found else None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat_value(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def _cgroup_headroom() -> tuple[int, str] | None:
    """The tightest ``memory.max`` (cgroup v2) or ``memory.limit_in_bytes`` (v1) above this process, less usage."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    best = None
    for line in lines:
        _, controllers, rel = line.split(":", 2) if line.count(":") >= 2 else ("", "", "")
        if controllers == "":
            files = ("memory.max", "memory.current", "memory.stat", "inactive_file")
            root = Path("/sys/fs/cgroup")
        elif "memory" in controllers.split(","):
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes", "memory.stat", "total_inactive_file")
            root = Path("/sys/fs/cgroup/memory")
        else:
            continue
        folder = root / rel.lstrip("/")
        for current in (folder, *folder.parents):
            limit = _read_int(current / files[0])
            if limit is not None and limit < 1 << 60:  # v1 writes a huge number, v2 "max", for no limit
                used = (_read_int(current / files[1]) or 0) - _stat_value(current / files[2], files[3])
                headroom = (max(limit - max(used, 0), 0), f"{current / files[0]} less the cgroup's usage")
                best = headroom if best is None or headroom < best else best
            if current == root:
                break
    return best


def plan_of(content: bytes, *, resizable: bool) -> TensorPlan | None:
    """:meth:`TensorPlan.from_content`, or ``None`` for a file the reader cannot walk (LiteRT then judges)."""
    try:
        return TensorPlan.from_content(content, resizable=resizable)
    except Exception:  # noqa: BLE001 - the verifier accepted the file; a reader quirk must not block running it
        return None


def check_fits(plan: TensorPlan, *, batch: int, xnnpack: bool, source: str, batch_resizable: bool) -> None:
    """Refuse, before allocating, a model whose tensors at ``batch`` cannot fit in the memory available.

    Raises:
        EvaluationError: one line with the bytes needed and available.
    """
    op, activations = plan.largest_op(batch)
    packed = plan.packed_weight_bytes if xnnpack else 0
    needed = activations + packed
    available = available_memory()
    if available is None or needed <= available[0]:
        return
    from tflite_opt.reporting.report import format_size

    def size(n: int) -> str:
        return f"{n:,} bytes" + (f" ({format_size(n)})" if n >= 1024 else "")

    parts = f"{size(activations)} for the inputs and outputs of its largest op, {op}, at batch {batch}"
    if packed:
        parts += f", plus {size(packed)} of weights XNNPACK repacks"
    fixes = ["free memory"]
    if packed and activations <= available[0]:
        fixes.append("run with --no-xnnpack")
    if batch_resizable and batch > 1:
        fixes.append("pass a smaller --batch-size")
    fix = fixes[0] if len(fixes) == 1 else ", ".join(fixes[:-1]) + " or " + fixes[-1]
    raise EvaluationError(
        f"{source} needs at least {size(needed)} of memory for its tensors ({parts}) but only "
        f"{size(available[0])} is available ({available[1]}); {fix}"
    )

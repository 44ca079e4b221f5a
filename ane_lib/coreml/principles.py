"""Apple's four deployment principles, each measured on an exported program.

Apple's 2022 article on deploying transformers to the Neural Engine names four principles; each
leaves a trace in the ML program that a package holds, and :func:`principle_figures` reads them
off (on any OS, from the package alone):

1. *data format*: activation bytes with the last axis padded to 64 bytes against the real
   bytes, and the number of layout ops (``transpose``, ``reshape``);
2. *chunking large intermediate tensors*: the largest tensor any op writes, and the bytes of the
   attention probabilities (the outputs of ``softmax``), in total and for the largest one;
3. *minimising memory copies*: transposes and reshapes, and how many of them touch the last
   axis (a transpose that moves it, a reshape that changes its size), which Apple's current rules
   single out as the expensive ones because they rewrite the whole tensor;
4. *bandwidth*: the bytes of weights read per multiply-accumulate (MAC) of one inference; a
   batch of ``B`` divides it by ``B`` (each weight is read once for all samples), and weights
   stored in ``b`` bits instead of 16 multiply it by ``b / 16``. An embedding table is read
   only at the rows looked up, so the bytes *read* count the rows a ``gather`` returns, not
   the whole table (the bytes *stored* count everything).

MACs are counted for ``conv``, ``linear``, ``matmul``, ``einsum`` and
``scaled_dot_product_attention``; the byte figures come from :func:`ane_lib.coreml.report`.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any

from ane_lib.coreml.report import Report, report

__all__ = ["PrincipleFigures", "count_macs", "principle_figures"]


@dataclass(frozen=True)
class PrincipleFigures:
    """The figures of :func:`principle_figures` for one program (bytes are fp16 or as typed)."""

    ops: int
    # principle 1: data format
    activation_real_bytes: int
    activation_padded_bytes: int
    layout_ops: int
    # principle 2: chunking
    largest_tensor_bytes: int
    largest_tensor_op: str
    attention_bytes: int
    largest_attention_bytes: int
    # principle 3: copies
    transposes: int
    reshapes: int
    last_axis_copies: int
    # principle 4: bandwidth
    weight_bytes: int
    weight_bytes_read: int
    macs: int

    @property
    def padding_overhead(self) -> float:
        """Padded over real activation bytes (1.0: no padding)."""
        real = self.activation_real_bytes
        return self.activation_padded_bytes / real if real else 1.0

    @property
    def weight_bytes_per_mac(self) -> float:
        """Weight bytes read per MAC of one inference (at the package's batch size)."""
        return self.weight_bytes_read / self.macs if self.macs else math.inf

    def to_dict(self) -> dict[str, Any]:
        figures = asdict(self)
        figures["padding_overhead"] = self.padding_overhead
        figures["weight_bytes_per_mac"] = self.weight_bytes_per_mac
        return figures


def _shape(var: Any) -> tuple[int, ...] | None:
    try:
        return tuple(int(d) for d in var.shape)
    except TypeError:  # a symbolic dimension
        return None


def _einsum_macs(op: Any) -> int:
    equation = str(op.inputs["equation"].val).replace(" ", "")
    operands, _ = equation.split("->")
    sizes: dict[str, int] = {}
    for letters, var in zip(operands.split(","), op.inputs["values"], strict=True):
        shape = _shape(var)
        if shape is None:
            return 0
        sizes.update(zip(letters, shape, strict=True))
    return math.prod(sizes.values())


def count_macs(op: Any) -> int:
    """Multiply-accumulates of one MIL op (0 for ops that do not multiply matrices)."""
    out = _shape(op.outputs[0]) if op.outputs else None
    if out is None:
        return 0
    kind = op.op_type
    if kind in ("conv", "linear"):
        weight = _shape(op.inputs["weight"])
        if weight is None:
            return 0
        per_output = math.prod(weight[1:]) if kind == "conv" else weight[-1]
        return math.prod(out) * per_output
    if kind == "matmul":
        x = _shape(op.inputs["x"])
        if x is None:
            return 0
        transpose_x = bool(op.inputs["transpose_x"].val) if "transpose_x" in op.inputs else False
        return math.prod(out) * (x[-2] if transpose_x else x[-1])
    if kind == "einsum":
        return _einsum_macs(op)
    if kind == "scaled_dot_product_attention":
        q, k = _shape(op.inputs["query"]), _shape(op.inputs["key"])
        if q is None or k is None:
            return 0
        return 2 * math.prod(q) * k[-2]  # q k^T and the weighted sum of v
    return 0


def _touches_last_axis(op: Any) -> bool:
    """A transpose that moves a non-trivial last axis, or a reshape that changes its size."""
    x, out = _shape(op.inputs["x"]), _shape(op.outputs[0])
    if x is None or out is None or not x or not out:
        return True
    if op.op_type == "reshape":
        return x[-1] != out[-1]
    perm = [int(p) % len(x) for p in op.inputs["perm"].val]
    # data moves only if the axes longer than 1 change order; then the last axis is touched
    # when another axis takes its place
    long_axes = [axis for axis in perm if x[axis] > 1]
    return long_axes != sorted(long_axes) and perm[-1] != len(x) - 1


_GATHERS = ("gather", "gather_along_axis", "gather_nd")


def _table_bytes_not_read(ops: list[Any]) -> int:
    """Bytes of constant tables that ``gather`` ops index, minus the bytes they return."""
    import numpy as np

    unread = 0
    for op in ops:
        table = op.inputs.get("x") if op.op_type in _GATHERS else None
        if table is None or table.val is None or _shape(op.outputs[0]) is None:
            continue
        value = np.asarray(table.val)
        unread += value.nbytes - value.itemsize * math.prod(_shape(op.outputs[0]) or ())
    return max(unread, 0)


def _walk(block: Any) -> list[Any]:
    ops = []
    for op in block.operations:
        ops.append(op)
        for inner in op.blocks:
            ops.extend(_walk(inner))
    return ops


def principle_figures(path_or_program: str | os.PathLike[str] | Any) -> PrincipleFigures:
    """Measure the four principles on the ``main`` function of a package (or MIL program)."""
    from ane_lib.coreml.program import load_program

    program = (
        load_program(path_or_program)
        if isinstance(path_or_program, (str, os.PathLike))
        else path_or_program
    )
    rep: Report = report(program)
    ops = [op for op in _walk(program.functions["main"]) if op.op_type != "const"]
    layout = [op for op in ops if op.op_type in ("transpose", "reshape")]
    largest = max(rep.ops, key=lambda r: r.real_bytes, default=None)
    softmax = [r.real_bytes for r in rep.ops if r.op_type == "softmax"]
    return PrincipleFigures(
        ops=len(rep.ops),
        activation_real_bytes=rep.activation_real_bytes,
        activation_padded_bytes=rep.activation_padded_bytes,
        layout_ops=rep.layout_ops,
        largest_tensor_bytes=largest.real_bytes if largest else 0,
        largest_tensor_op=f"{largest.op_type} {largest.shapes[0]}" if largest else "",
        attention_bytes=sum(softmax),
        largest_attention_bytes=max(softmax, default=0),
        transposes=sum(op.op_type == "transpose" for op in layout),
        reshapes=sum(op.op_type == "reshape" for op in layout),
        last_axis_copies=sum(_touches_last_axis(op) for op in layout),
        weight_bytes=rep.weight_bytes,
        weight_bytes_read=rep.weight_bytes - _table_bytes_not_read(ops),
        macs=sum(count_macs(op) for op in ops),
    )

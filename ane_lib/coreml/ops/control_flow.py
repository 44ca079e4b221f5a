"""Control flow and lists (coremltools ``control_flow``): ``const``, ``cond``, ``while_loop``,
``select`` and the list ops (``make_list``, ``list_read`` ...)."""

from __future__ import annotations

from typing import Any

import torch

from ane_lib.coreml.ops._registry import OpArgs, register


@register("const")
def _const(a: OpArgs) -> Any:
    # the value the program holds (converted once per program by the executor)
    return a.runtime.constant(a.op.outputs[0])


def _outputs(a: OpArgs, values: list[Any]) -> Any:
    # one output is returned as itself, several as a tuple (a list is a list value)
    return values[0] if len(a.op.outputs) == 1 else tuple(values)


@register("cond")
def _cond(a: OpArgs) -> Any:
    # runs the first block when pred is true, else the second; their outputs are the op's
    pred = bool(a.get("pred").reshape(()).item())
    block = a.op.blocks[0] if pred else a.op.blocks[1]
    return _outputs(a, a.runtime.run_block(block, []))


@register("while_loop")
def _while_loop(a: OpArgs) -> Any:
    # loop_vars -> body(loop_vars) while cond(loop_vars); the final loop_vars are the outputs
    cond_block, body_block = a.op.blocks
    values = a.get("loop_vars")
    while True:
        (keep_going,) = a.runtime.run_block(cond_block, values)
        if not bool(torch.as_tensor(keep_going).reshape(()).item()):
            return _outputs(a, list(values))
        values = a.runtime.run_block(body_block, values)


@register("select")
def _select(a: OpArgs) -> torch.Tensor:
    # a where cond, else b (broadcast); without a and b: the indices (n, rank) where cond holds
    cond = a.get("cond").to(torch.bool)
    if not a.has("a") and not a.has("b"):
        return torch.nonzero(cond)
    return torch.where(cond, a.get("a"), a.get("b"))


# ---------------------------------------------------------------------------------------------
# lists: an executor value is a Python list of tensors (None where nothing was written yet)


@register("make_list")
def _make_list(a: OpArgs) -> list[Any]:
    return [None] * a.int("init_length", 1)


def _written(a: OpArgs, ls: list[Any], index: int) -> torch.Tensor:
    if not 0 <= index < len(ls) or ls[index] is None:
        raise a.invalid(f"list element {index} is read before it is written (length {len(ls)})")
    return torch.as_tensor(ls[index])


def _write(a: OpArgs, ls: list[Any], index: int, value: Any) -> list[Any]:
    dynamic = bool(getattr(a.var("ls"), "dynamic_length", True))
    if index >= len(ls):
        if not dynamic:
            raise a.invalid(f"index {index} is beyond the fixed list length {len(ls)}")
        ls = ls + [None] * (index + 1 - len(ls))
    out = list(ls)
    out[index] = value
    return out


@register("list_read")
def _list_read(a: OpArgs) -> torch.Tensor:
    return _written(a, a.get("ls"), a.int("index"))


@register("list_write")
def _list_write(a: OpArgs) -> list[Any]:
    return _write(a, a.get("ls"), a.int("index"), a.get("value"))


@register("list_gather")
def _list_gather(a: OpArgs) -> torch.Tensor:
    ls = a.get("ls")
    return torch.stack([_written(a, ls, i) for i in a.ints("indices")])


@register("list_scatter")
def _list_scatter(a: OpArgs) -> list[Any]:
    ls = a.get("ls")
    values = a.get("value")
    for row, index in enumerate(a.ints("indices")):
        ls = _write(a, ls, index, values[row])
    return ls


@register("list_length")
def _list_length(a: OpArgs) -> torch.Tensor:
    return torch.tensor(len(a.get("ls")), dtype=torch.int32)

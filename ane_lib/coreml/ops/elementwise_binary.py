"""Elementwise binary ops (coremltools ``elementwise_binary``): ``op(x, y)``, NumPy
broadcasting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ane_lib.coreml.ops._registry import OpArgs, register


def _binary(fn: Callable[[Any, Any], Any]) -> Callable[[OpArgs], Any]:
    def op(a: OpArgs) -> Any:
        return fn(a.get("x"), a.get("y"))

    return op


_OPS: dict[str, Callable[..., Any]] = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "real_div": torch.true_divide,
    "pow": torch.pow,
    "maximum": torch.maximum,
    "minimum": torch.minimum,
    "floor_div": torch.floor_divide,  # rounds toward -inf, as numpy's floor_divide
    "mod": torch.remainder,  # the sign follows the divisor, as Python's % (coremltools: mod)
    "equal": torch.eq,
    "not_equal": torch.ne,
    "greater": torch.gt,
    "greater_equal": torch.ge,
    "less": torch.lt,
    "less_equal": torch.le,
    "logical_and": torch.logical_and,
    "logical_or": torch.logical_or,
    "logical_xor": torch.logical_xor,
}
for _name, _fn in _OPS.items():
    register(_name)(_binary(_fn))

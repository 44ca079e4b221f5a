"""Elementwise unary ops (coremltools ``elementwise_unary``), ``cast`` among them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ane_lib.coreml.ops._registry import OpArgs, register


def _unary(fn: Callable[[torch.Tensor], Any]) -> Callable[[OpArgs], Any]:
    def op(a: OpArgs) -> Any:
        return fn(a.get("x"))

    return op


for _name, _fn in {
    "abs": torch.abs,
    "acos": torch.acos,
    "asin": torch.asin,
    "atan": torch.atan,
    "atanh": torch.atanh,
    "ceil": torch.ceil,
    "cos": torch.cos,
    "cosh": torch.cosh,
    "erf": torch.erf,
    "exp": torch.exp,
    "exp2": torch.exp2,
    "floor": torch.floor,
    "logical_not": torch.logical_not,
    "round": torch.round,  # halves to even (0.5 -> 0, 1.5 -> 2), as the op definition says
    "sign": torch.sign,
    "sin": torch.sin,
    "sinh": torch.sinh,
    "sqrt": torch.sqrt,
    "square": torch.square,
    "tan": torch.tan,
    "tanh": torch.tanh,
}.items():
    register(_name)(_unary(_fn))


@register("inverse")
def _inverse(a: OpArgs) -> torch.Tensor:
    # 1 / (x + epsilon)
    return 1.0 / (a.get("x") + a.float("epsilon", 1e-4))


@register("log")
def _log(a: OpArgs) -> torch.Tensor:
    # log(x + epsilon)
    return torch.log(a.get("x") + a.float("epsilon", 1e-45))


@register("rsqrt")
def _rsqrt(a: OpArgs) -> torch.Tensor:
    # 1 / sqrt(x + epsilon)
    return torch.rsqrt(a.get("x") + a.float("epsilon", 1e-12))


@register("clip")
def _clip(a: OpArgs) -> torch.Tensor:
    # min(max(x, alpha), beta)
    return torch.minimum(torch.maximum(a.get("x"), a.get("alpha")), a.get("beta"))


@register("threshold")
def _threshold(a: OpArgs) -> torch.Tensor:
    # max(x, alpha)
    return torch.maximum(a.get("x"), a.get("alpha"))


@register("cast")
def _cast(a: OpArgs) -> torch.Tensor:
    # Only the conversion of values is done here; the executor stores the result with the op's
    # declared output type. float -> int truncates toward zero (numpy's astype, as coremltools'
    # value inference does), anything -> bool is "not zero".
    x = a.get("x")
    dtype = a.str("dtype")
    if dtype == "bool":
        return x != 0
    if dtype.startswith(("int", "uint")):
        return torch.trunc(x).to(torch.int64) if x.is_floating_point() else x.to(torch.int64)
    return x.to(torch.float32)

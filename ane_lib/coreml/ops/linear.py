"""Linear algebra ops (coremltools ``linear``): ``linear``, ``matmul``, ``einsum``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ane_lib.coreml.ops._registry import OpArgs, register


def _float(*tensors: torch.Tensor) -> list[torch.Tensor]:
    # integer operands (the i32 variants) are multiplied exactly in float64, stored back as int
    if all(t.is_floating_point() for t in tensors):
        return list(tensors)
    return [t.to(torch.float64) for t in tensors]


@register("linear")
def _linear(a: OpArgs) -> torch.Tensor:
    # x: (*D, D_in), weight: (D_out, D_in), bias: (D_out,) -> (*D, D_out)
    x, w = _float(a.get("x"), a.get("weight"))
    bias = a.get("bias", None)
    if bias is not None:
        bias = bias.to(x.dtype)
    return F.linear(x, w.to(x.dtype), bias)


@register("matmul")
def _matmul(a: OpArgs) -> torch.Tensor:
    # NumPy's matmul rules: batch axes broadcast, 1-D operands promoted then squeezed
    x, y = _float(a.get("x"), a.get("y"))
    if a.bool("transpose_x", False) and x.ndim >= 2:
        x = x.transpose(-1, -2)
    if a.bool("transpose_y", False) and y.ndim >= 2:
        y = y.transpose(-1, -2)
    return torch.matmul(x, y)


@register("einsum")
def _einsum(a: OpArgs) -> torch.Tensor:
    # MIL restricts the equation to "nchw,nwhu->nchu" / "chw,whr->chr" and their renamings,
    # batch axes broadcasting when 1; torch.einsum evaluates these (and broadcasts alike)
    values = _float(*a.get("values"))
    return torch.einsum(a.str("equation"), *values)

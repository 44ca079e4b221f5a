"""Convolutions (coremltools ``conv``): ``conv`` and ``conv_transpose``, 1-D to 3-D."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ane_lib.coreml.ops._common import per_channel, spatial_pads
from ane_lib.coreml.ops._registry import OpArgs, decline, register

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _geometry(a: OpArgs, n_sp: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return a.ints("strides", (1,) * n_sp), a.ints("dilations", (1,) * n_sp)


def _spatial_fn(table: dict[int, Any], a: OpArgs, n_sp: int) -> Any:
    if n_sp not in table:
        raise a.invalid(f"expects 1 to 3 spatial axes, got {n_sp}")
    return table[n_sp]


@register("conv")
def _conv(a: OpArgs) -> torch.Tensor:
    # x: (N, C_in, *D_in), weight: (C_out, C_in / groups, *K), bias: (C_out,)
    #   -> (N, C_out, *D_out), the padding by pad_type's rules
    x = a.get("x")
    w = a.get("weight").to(x.dtype)
    n_sp = x.ndim - 2
    strides, dilations = _geometry(a, n_sp)
    pad = a.ints("pad", None)
    pads = spatial_pads(
        a.str("pad_type", "valid"), pad, x.shape[2:], w.shape[2:], strides, dilations
    )
    if any(p for pair in pads for p in pair):
        x = F.pad(x, [p for pair in reversed(pads) for p in pair])
    bias = a.get("bias", None)
    fn = _spatial_fn(_CONV, a, n_sp)
    return fn(
        x, w, None if bias is None else bias.to(x.dtype), strides, 0, dilations, a.int("groups", 1)
    )


@register("conv_transpose")
def _conv_transpose(a: OpArgs) -> torch.Tensor:
    # x: (N, C_in, *D_in), weight: (C_in, C_out / groups, *K) -> (N, C_out, *D_out):
    # the full transposed convolution, (D_in - 1) * s + (K - 1) * d + 1 per axis, cropped by
    # pad ("custom"), to D_in * s ("same", the odd element cropped at the end) or to
    # output_shape (which may ask for more: trailing positions get only the bias)
    x = a.get("x")
    w = a.get("weight").to(x.dtype)
    n_sp = x.ndim - 2
    strides, dilations = _geometry(a, n_sp)
    fn = _spatial_fn(_CONV_T, a, n_sp)
    full = fn(x, w, None, strides, 0, 0, a.int("groups", 1), dilations)
    sizes_full = list(full.shape[2:])
    pad_type = a.str("pad_type", "valid")
    if pad_type == "custom":
        pad = a.ints("pad")
        crops = [(pad[2 * i], pad[2 * i + 1]) for i in range(n_sp)]
    elif pad_type == "valid":
        crops = [(0, 0)] * n_sp
    elif pad_type == "same":
        targets = [x.shape[2 + i] * strides[i] for i in range(n_sp)]
        crops = [
            ((f - t) // 2, f - t - (f - t) // 2) for f, t in zip(sizes_full, targets, strict=True)
        ]
    else:
        raise a.invalid(f"unknown pad_type {pad_type!r}")
    sizes = [f - b - e for (b, e), f in zip(crops, sizes_full, strict=True)]
    if a.has("output_shape"):
        sizes = list(a.ints("output_shape")[2:])
    else:
        declared = a.output_shape()
        if declared is not None:
            sizes = list(declared[2:])
    ends = [b + n for (b, _), n in zip(crops, sizes, strict=True)]
    extra = [max(0, end - f) for end, f in zip(ends, sizes_full, strict=True)]
    if any(extra):
        full = F.pad(full, [p for e in reversed(extra) for p in (0, e)])
    window = tuple(slice(b, end) for (b, _), end in zip(crops, ends, strict=True))
    out = full[(slice(None), slice(None), *window)]
    if a.has("bias"):
        out = out + per_channel(a.get("bias").to(out.dtype), out.ndim)
    return out


decline(
    "conv_quantized",
    "an experimental coremltools op that only its older neuralnetwork backend lowers; an ML "
    "program never holds it (compressed weights appear as constexpr ops instead)",
)

"""Pooling (coremltools ``pool``): ``avg_pool``, ``max_pool``, ``l2_pool``, 1-D to 3-D."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ane_lib.coreml.ops._common import spatial_pads, window_slices
from ane_lib.coreml.ops._registry import OpArgs, register


def _out_size(size: int, before: int, after: int, kernel: int, stride: int, ceil: bool) -> int:
    """The op definition's output length along one axis (``ceil_mode`` as PyTorch's)."""
    span = size + before + after - kernel
    if not ceil:
        return span // stride + 1
    out = math.ceil(span / stride) + 1
    # a last window starting in the right padding is dropped
    if before + after > 0 and (out - 1) * stride >= size + before:
        out -= 1
    return out


def _pool(a: OpArgs, kind: str) -> torch.Tensor:
    # x: (N, C, *D_in) -> (N, C, *D_out)
    x = a.get("x")
    sizes = list(x.shape[2:])
    n_sp = len(sizes)
    kernel = a.ints("kernel_sizes")
    strides = a.ints("strides", (1,) * n_sp)
    pad_type = a.str("pad_type", "valid").lower()
    pads = spatial_pads(pad_type, a.ints("pad", None), sizes, kernel, strides, (1,) * n_sp)
    ceil = a.bool("ceil_mode", False)
    outs = [
        _out_size(d, p0, p1, k, s, ceil)
        for d, (p0, p1), k, s in zip(sizes, pads, kernel, strides, strict=True)
    ]
    # room beyond the declared padding for ceil_mode's last windows
    extra = [
        max(0, (o - 1) * s + k - (d + p0 + p1))
        for o, s, k, d, (p0, p1) in zip(outs, strides, kernel, sizes, pads, strict=True)
    ]
    widths = [
        w for (p0, p1), e in zip(reversed(pads), reversed(extra), strict=True) for w in (p0, p1 + e)
    ]
    fill = -math.inf if kind == "max" else 0.0
    xp = F.pad(x, widths, value=fill) if any(widths) else x
    acc: torch.Tensor | None = None
    combine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = (
        torch.maximum if kind == "max" else torch.add
    )
    for tap in itertools.product(*(range(k) for k in kernel)):
        window = xp[(slice(None), slice(None), *window_slices(tap, strides, outs))]
        if kind == "l2":
            window = window * window
        acc = window.clone() if acc is None else combine(acc, window)
    assert acc is not None
    if kind == "max":
        return acc
    if kind == "l2":
        return torch.sqrt(acc)
    # the average divides by the window's positions inside the input and, unless
    # exclude_padding_from_average, its declared padding (never ceil_mode's extra room)
    ones = torch.ones(sizes, dtype=x.dtype)
    if not a.bool("exclude_padding_from_average", False):
        ones = F.pad(ones[None], [w for p0, p1 in reversed(pads) for w in (p0, p1)], value=1.0)[0]
        inner = [(0, e) for e in extra]
    else:
        inner = [(p0, p1 + e) for (p0, p1), e in zip(pads, extra, strict=True)]
    counted = F.pad(ones[None], [w for b, e in reversed(inner) for w in (b, e)])[0]
    count = torch.zeros(outs, dtype=x.dtype)
    for tap in itertools.product(*(range(k) for k in kernel)):
        count += counted[window_slices(tap, strides, outs)]
    return acc / count


register("avg_pool")(lambda a: _pool(a, "avg"))
register("max_pool")(lambda a: _pool(a, "max"))
register("l2_pool")(lambda a: _pool(a, "l2"))

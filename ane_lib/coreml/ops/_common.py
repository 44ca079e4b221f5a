"""Small helpers shared by several op families: axes, per-channel parameters, padding rules."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ane_lib.coreml.ops._registry import ExecutorError

__all__ = [
    "activation_by_name",
    "norm_axes",
    "norm_axis",
    "per_channel",
    "spatial_pads",
    "window_slices",
]


def norm_axis(axis: int, rank: int) -> int:
    """``axis`` counted from the front (MIL allows ``-rank <= axis < rank``)."""
    return axis + rank if axis < 0 else axis


def norm_axes(axes: Sequence[int], rank: int) -> tuple[int, ...]:
    return tuple(norm_axis(a, rank) for a in axes)


def per_channel(v: torch.Tensor, rank: int) -> torch.Tensor:
    """A ``(C,)`` vector shaped to broadcast along axis 1 of a rank-``rank`` tensor."""
    return v.reshape((1, -1) + (1,) * (rank - 2))


def spatial_pads(
    pad_type: str,
    pad: Sequence[int] | None,
    in_sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> list[tuple[int, int]]:
    """(before, after) padding per spatial axis by MIL's ``pad_type`` rules (conv, pooling).

    ``"same"``: the output has ``ceil(size / stride)`` positions and the padding is split
    evenly, the odd element after; ``"same_lower"`` puts it before; ``"custom"`` reads ``pad``
    as ``[before_1, after_1, before_2, after_2, ...]``; ``"valid"`` pads nothing.
    """
    n = len(in_sizes)
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        if pad is None or len(pad) != 2 * n:
            raise ExecutorError(f"pad_type 'custom' needs {2 * n} pad values, got {pad}")
        return [(int(pad[2 * i]), int(pad[2 * i + 1])) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        out: list[tuple[int, int]] = []
        for size, k, s, d in zip(in_sizes, kernel, strides, dilations, strict=True):
            eff = (k - 1) * d + 1
            total = max(0, s * math.ceil(size / s) - size + eff - s)
            small, large = total // 2, total - total // 2
            out.append((small, large) if pad_type == "same" else (large, small))
        return out
    raise ExecutorError(f"unknown pad_type {pad_type!r}")


def window_slices(
    offset: Sequence[int], strides: Sequence[int], out_sizes: Sequence[int]
) -> tuple[slice, ...]:
    """Per spatial axis, a slice of ``out_sizes`` positions from ``offset``, ``strides`` apart."""
    return tuple(
        slice(o, o + s * (n - 1) + 1, s) for o, s, n in zip(offset, strides, out_sizes, strict=True)
    )


def activation_by_name(name: str) -> torch.nn.Module | None:
    """The activation a recurrent op names, with the default parameters of its MIL op."""
    table = {
        "sigmoid": torch.nn.Sigmoid(),
        "tanh": torch.nn.Tanh(),
        "scaled_tanh": torch.nn.Tanh(),  # alpha = beta = 1
        "relu": torch.nn.ReLU(),
        "linear": torch.nn.Identity(),  # alpha = 1, beta = 0
        # MIL's hard sigmoid: min(max(0.2 x + 0.5, 0), 1)
        "hard_sigmoid": _HardSigmoid(),
        "sigmoid_hard": _HardSigmoid(),
    }
    return table.get(name.lower())


class _HardSigmoid(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)

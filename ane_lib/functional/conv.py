"""Convolution written as ``torch.einsum`` over sliding windows.

A convolution layer's weight ``(C_out, C_in / groups, *kernel)`` is contracted with every window
of the (padded) input. Cutting the windows out is a *view* (``Tensor.unfold``); the contraction is
one ``torch.einsum``. The result equals ``torch.nn.functional.conv1d/2d/3d`` for every valid
argument set (tested in ``tests/test_conv.py``).

``patch_conv_einsum`` is the special case where the stride equals the kernel: the windows do not
overlap, so a reshape cuts them out and no ``unfold`` is needed.

Like PyTorch, these functions compute a cross-correlation: the kernel is not flipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import EllipsisType
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from ane_lib._checks import (
    check_choice,
    check_divides,
    check_positive_int,
    check_rank,
    check_tensor,
    int_tuple,
)

__all__ = [
    "conv_einsum",
    "conv_einsum_equation",
    "conv_output_size",
    "patch_conv_einsum",
    "resolve_conv_padding",
    "sliding_windows",
]

PaddingMode = Literal["valid", "same"]
"""``"valid"``: no padding; ``"same"``: as much as keeps the size (stride 1 only), torch's split."""
PADDING_MODES: tuple[PaddingMode, ...] = get_args(PaddingMode)

# Letters used in the einsum equations: output positions, then kernel offsets, per spatial axis.
_OUT_LETTERS = {1: "w", 2: "hw", 3: "dhw"}
_KERNEL_LETTERS = {1: "k", 2: "kl", 3: "jkl"}

_LAYOUTS = {1: "(B, C, W)", 2: "(B, C, H, W)", 3: "(B, C, D, H, W)"}

_Index = tuple[EllipsisType | slice, ...]  # x[..., a:b, c:d]: leading axes kept, trailing sliced


def conv_einsum_equation(spatial_dims: int) -> str:
    """The einsum equation ``conv_einsum`` uses for ``spatial_dims`` = 1, 2 or 3.

    Operands: the windows ``(B, g, C_in/g, *out, *kernel)`` and the weight
    ``(g, C_out/g, C_in/g, *kernel)``; result ``(B, g, C_out/g, *out)``.

    >>> conv_einsum_equation(2)
    'bgchwkl,gockl->bgohw'
    """
    check_choice("spatial_dims", spatial_dims, (1, 2, 3))
    out, ker = _OUT_LETTERS[spatial_dims], _KERNEL_LETTERS[spatial_dims]
    return f"bgc{out}{ker},goc{ker}->bgo{out}"


def conv_output_size(
    size: int, kernel: int, stride: int = 1, padding: int | PaddingMode = 0, dilation: int = 1
) -> int:
    """Length of one spatial axis after a convolution.

    ``floor((size + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1``
    (Dumoulin and Visin, 2016). ``padding`` may also be ``'valid'`` (no padding) or ``'same'``
    (output size equals ``size``; requires ``stride == 1``).
    """
    check_positive_int("size", size)
    check_positive_int("kernel", kernel)
    check_positive_int("stride", stride)
    check_positive_int("dilation", dilation)
    ((left, right),) = resolve_conv_padding(padding, (kernel,), stride, dilation)
    return _output_length("size", size, left + right, kernel, stride, dilation)


def resolve_conv_padding(
    padding: int | Sequence[int] | PaddingMode,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
) -> tuple[tuple[int, int], ...]:
    """Padding as ``((left, right), ...)`` per spatial axis, with PyTorch's semantics.

    ``kernel_size`` sets the number of spatial axes (an int means one axis). ``padding`` is an
    int, one int per axis, ``'valid'`` (no padding) or ``'same'`` (output as large as the
    input; only for stride 1). For ``'same'`` the total padding ``dilation * (kernel - 1)`` is
    split as torch does: the extra element of an odd total goes to the right (end) side.
    """
    kernel = _as_tuple("kernel_size", kernel_size)
    n = len(kernel)
    strides = int_tuple("stride", stride, n)
    dilations = int_tuple("dilation", dilation, n)
    if isinstance(padding, str):
        check_choice("padding", padding, PADDING_MODES)
        if padding == "valid":
            return ((0, 0),) * n
        if any(s != 1 for s in strides):
            raise ValueError(
                f"padding='same' requires stride 1 in every dimension, got stride={stride!r}"
            )
        totals = [d * (k - 1) for d, k in zip(dilations, kernel, strict=True)]
        return tuple((t // 2, t - t // 2) for t in totals)
    pads = int_tuple("padding", padding, n, minimum=0)
    return tuple((p, p) for p in pads)


def sliding_windows(
    x: torch.Tensor,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
) -> torch.Tensor:
    """Every window a convolution sees, as a view of ``x`` (no copy, no padding).

    x: (B, C, *spatial) with 1, 2 or 3 spatial axes.
    Returns (B, C, *out, *kernel_size): entry ``[b, c, *o, *i]`` is
    ``x[b, c, *(o * stride + i * dilation)]``, with ``out`` given by :func:`conv_output_size`
    (padding 0). Pad ``x`` first for a padded convolution.
    """
    check_rank("x", x, (3, 4, 5), "(B, C, *spatial) with 1 to 3 spatial axes")
    n = x.ndim - 2
    kernel = int_tuple("kernel_size", kernel_size, n)
    strides = int_tuple("stride", stride, n)
    dilations = int_tuple("dilation", dilation, n)
    for axis in range(n):
        _output_length(
            f"x.shape[{axis + 2}]",
            x.shape[axis + 2],
            0,
            kernel[axis],
            strides[axis],
            dilations[axis],
        )
    return _windows(x, kernel, strides, dilations)


def conv_einsum(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] | PaddingMode = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """1D, 2D or 3D convolution (cross-correlation) as one ``torch.einsum`` over sliding windows.

    The number of spatial axes is ``weight.ndim - 2``; arguments mean what they mean for
    ``torch.nn.functional.conv1d/2d/3d``, and the result is equal to theirs.

    x: (B, C_in, *spatial) or unbatched (C_in, *spatial)
    weight: (C_out, C_in / groups, *kernel)
    bias: (C_out,) or None
    Returns (B, C_out, *out) (or (C_out, *out) for an unbatched ``x``).
    """
    x, weight, unbatched, n = _check_operands(x, weight, bias, groups, "conv_einsum")
    kernel = tuple(weight.shape[2:])
    strides = int_tuple("stride", stride, n)
    dilations = int_tuple("dilation", dilation, n)
    pads = resolve_conv_padding(padding, kernel, stride, dilation)
    for axis, (left, right) in enumerate(pads):
        _output_length(
            f"x.shape[{axis + 2}]",
            x.shape[axis + 2],
            left + right,
            kernel[axis],
            strides[axis],
            dilations[axis],
        )

    if any(p != (0, 0) for p in pads):
        # F.pad lists (left, right) pairs from the last axis backwards.
        x = F.pad(x, [side for pair in reversed(pads) for side in pair])
    windows = _windows(x, kernel, strides, dilations)  # (B, C_in, *out, *kernel), a view
    batch, c_in = windows.shape[:2]
    out_shape = windows.shape[2 : 2 + n]
    c_out = weight.shape[0]
    # Split channels into (groups, channels per group); the einsum keeps g as a batch axis.
    grouped_windows = windows.reshape(batch, groups, c_in // groups, *windows.shape[2:])
    grouped_weight = weight.reshape(groups, c_out // groups, *weight.shape[1:])
    y = torch.einsum(conv_einsum_equation(n), grouped_windows, grouped_weight)
    y = y.reshape(batch, c_out, *out_shape)
    return _finish(y, bias, n, unbatched)


def patch_conv_einsum(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    groups: int = 1,
) -> torch.Tensor:
    """Convolution with stride equal to the kernel, by reshape + einsum (no ``unfold``).

    The input is cut into non-overlapping patches of the kernel's size, each contracted with the
    weight. Equal to ``conv_einsum(x, weight, bias, stride=kernel, groups=groups)`` and to
    ``F.convNd`` with ``stride=kernel``: like them, a trailing part of an axis that does not fill a
    whole patch (``size % kernel`` elements) is dropped, so each output axis has
    ``size // kernel`` elements.

    x: (B, C_in, *spatial) or unbatched (C_in, *spatial)
    weight: (C_out, C_in / groups, *kernel)
    bias: (C_out,) or None
    Returns (B, C_out, *(spatial // kernel)) (unbatched in, unbatched out).
    """
    x, weight, unbatched, n = _check_operands(x, weight, bias, groups, "patch_conv_einsum")
    kernel = tuple(weight.shape[2:])
    for axis in range(n):
        _output_length(f"x.shape[{axis + 2}]", x.shape[axis + 2], 0, kernel[axis], kernel[axis], 1)
    batch, c_in = x.shape[:2]
    out_shape = [size // k for size, k in zip(x.shape[2:], kernel, strict=True)]
    # Drop the remainder that a stride-k convolution never reaches, then split each axis into
    # (patch index, offset inside the patch): (B, g, C_in/g, O1, k1, O2, k2, ...).
    kept: _Index = (..., *(slice(0, o * k) for o, k in zip(out_shape, kernel, strict=True)))
    x = x[kept]
    split_axes = [v for o, k in zip(out_shape, kernel, strict=True) for v in (o, k)]
    patches = x.reshape(batch, groups, c_in // groups, *split_axes)
    grouped_weight = weight.reshape(groups, weight.shape[0] // groups, *weight.shape[1:])
    out, ker = _OUT_LETTERS[n], _KERNEL_LETTERS[n]
    interleaved = "".join(o + k for o, k in zip(out, ker, strict=True))
    y = torch.einsum(f"bgc{interleaved},goc{ker}->bgo{out}", patches, grouped_weight)
    y = y.reshape(batch, weight.shape[0], *out_shape)
    return _finish(y, bias, n, unbatched)


# --------------------------------------------------------------------------- helpers


def _as_tuple(name: str, value: int | Sequence[int]) -> tuple[int, ...]:
    """An int (one axis) or a sequence of 1 to 3 positive ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        return int_tuple(name, value, 1)
    if isinstance(value, Sequence) and not isinstance(value, str) and 1 <= len(value) <= 3:
        return int_tuple(name, value, len(value))
    raise TypeError(f"{name} must be an int or a sequence of 1 to 3 ints, got {value!r}")


def _output_length(
    name: str, size: int, total_padding: int, kernel: int, stride: int, dilation: int
) -> int:
    """Output length of one axis; ValueError if the dilated kernel exceeds the padded input."""
    span = dilation * (kernel - 1) + 1
    padded = size + total_padding
    if span > padded:
        raise ValueError(
            f"{name}={size} with padding {total_padding} (padded size {padded}) is smaller than "
            f"the kernel's span dilation * (kernel - 1) + 1 = {dilation} * ({kernel} - 1) + 1 = "
            f"{span}; expected a padded size >= {span}"
        )
    return (padded - span) // stride + 1


def _windows(
    x: torch.Tensor,
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
) -> torch.Tensor:
    """(B, C, *spatial) -> (B, C, *out, *kernel) view; arguments already checked."""
    n = len(kernel)
    for axis in range(n):
        span = dilations[axis] * (kernel[axis] - 1) + 1
        # unfold replaces the axis by the window starts and appends a trailing axis of length span.
        x = x.unfold(2 + axis, span, strides[axis])
    # Keep every dilation-th element of each window span (a strided view, no copy).
    every_dilated: _Index = (..., *(slice(None, None, d) for d in dilations))
    return x[every_dilated]


def _check_operands(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    groups: int,
    caller: str,
) -> tuple[torch.Tensor, torch.Tensor, bool, int]:
    """Validate x / weight / bias / groups; return (batched x, weight, was_unbatched, n)."""
    check_tensor("x", x)
    check_rank(
        "weight", weight, (3, 4, 5), "(C_out, C_in / groups, *kernel) with 1 to 3 spatial axes"
    )
    n = weight.ndim - 2
    check_rank("x", x, (n + 1, n + 2), f"{_LAYOUTS[n]} or unbatched, for a {n}D weight")
    check_positive_int("groups", groups)
    unbatched = x.ndim == n + 1
    if unbatched:
        x = x.unsqueeze(0)
    if x.dtype != weight.dtype:
        raise TypeError(
            f"{caller}: x and weight must have the same dtype, got x {x.dtype} "
            f"and weight {weight.dtype}"
        )
    c_in, c_out = x.shape[1], weight.shape[0]
    check_divides("groups", groups, "in_channels (x.shape[1])", c_in)
    check_divides("groups", groups, "out_channels (weight.shape[0])", c_out)
    if c_in != weight.shape[1] * groups:
        raise ValueError(
            f"x has {c_in} channels but weight.shape[1] * groups = {weight.shape[1]} * {groups} "
            f"= {weight.shape[1] * groups}; expected x.shape[1] == weight.shape[1] * groups "
            f"(weight shape {tuple(weight.shape)})"
        )
    if bias is not None:
        check_tensor("bias", bias)
        if tuple(bias.shape) != (c_out,):
            raise ValueError(f"bias must have shape (C_out,) = ({c_out},), got {tuple(bias.shape)}")
        if bias.dtype != weight.dtype:
            raise TypeError(
                f"{caller}: bias must have the weight's dtype {weight.dtype}, got {bias.dtype}"
            )
    return x, weight, unbatched, n


def _finish(y: torch.Tensor, bias: torch.Tensor | None, n: int, unbatched: bool) -> torch.Tensor:
    """Add the bias over channels and drop the batch axis of an unbatched call."""
    if bias is not None:
        y = y + bias.reshape(-1, *([1] * n))
    return y.squeeze(0) if unbatched else y

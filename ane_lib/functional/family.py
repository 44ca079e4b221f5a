"""The separable and grouped convolution family, each member written as explicit einsums.

Every function takes an NCHW input ``x: (B, C, H, W)`` and weights in torch's layouts, so that
each one can be checked against ``torch.nn.functional.conv2d`` with ``groups`` and separate
kernels. Spatial members accept ``stride`` and ``padding`` (an int or an ``(h, w)`` pair, zero
padding, no dilation); the output size is ``H' = (H + 2 p_h - k) // s_h + 1`` and likewise for
``W'``.

Index letters used in the einsums: ``b`` batch, ``c`` input channel, ``o`` output channel,
``m`` intermediate channel, ``g`` group, ``s`` channel within an input group, ``h``/``w``
output position, ``i``/``j`` kernel row/column.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ane_lib._checks import (
    check_divides,
    check_positive_int,
    check_rank,
    check_tensor,
    int_tuple,
)
from ane_lib.functional.conv import sliding_windows

__all__ = [
    "conv1x1_scalar",
    "conv1x1_filter",
    "conv1x1",
    "depthwise_conv2d",
    "depthwise_separable_conv2d",
    "spatially_separable_conv2d",
    "asymmetric_conv2d",
    "flattened_conv2d",
    "grouped_conv2d",
    "pointwise_grouped_conv2d",
    "block_diagonal_weight",
    "channel_shuffle",
    "channel_shuffle_permutation",
]

IntPair = int | Sequence[int]


# --------------------------------------------------------------------------------------------
# argument checks and the sliding-window view shared by the spatial members


def _check_input(x: torch.Tensor) -> tuple[int, int, int, int]:
    check_rank("x", x, (4,), "(B, C, H, W)")
    B, C, H, W = x.shape
    return B, C, H, W


def _check_shape(name: str, tensor: object, expected: tuple[int, ...], layout: str) -> None:
    """Raise unless ``tensor.shape == expected``; ``layout`` names the axes, e.g. "(C', C)"."""
    tensor = check_tensor(name, tensor)
    if tuple(tensor.shape) != expected:
        raise ValueError(f"{name} must have shape {layout} = {expected}, got {tuple(tensor.shape)}")


def _as_matrix(name: str, weight: object, in_channels: int, in_name: str) -> torch.Tensor:
    """Return a 1x1 kernel ``(C', C_in)`` given as ``(C', C_in)`` or ``(C', C_in, 1, 1)``."""
    check_rank(name, weight, (2, 4), f"(C', {in_name}) or (C', {in_name}, 1, 1)")
    assert isinstance(weight, torch.Tensor)
    if weight.ndim == 4:
        if tuple(weight.shape[2:]) != (1, 1):
            raise ValueError(
                f"{name} must be a 1x1 kernel (C', {in_name}, 1, 1), got shape "
                f"{tuple(weight.shape)}"
            )
        weight = weight[:, :, 0, 0]
    if weight.shape[1] != in_channels:
        raise ValueError(
            f"{name}.shape[1] must equal {in_name}={in_channels}, got shape {tuple(weight.shape)}"
        )
    return weight


def _check_bias(bias: torch.Tensor | None, out_channels: int) -> None:
    if bias is not None:
        _check_shape("bias", bias, (out_channels,), "(C',)")


def _check_fits(
    name: str, x: torch.Tensor, kernel: tuple[int | None, int | None], padding: tuple[int, int]
) -> None:
    """Raise unless the kernel of argument ``name`` fits the zero-padded input (None: skip)."""
    for axis, dim, k, p in (
        ("height", 2, kernel[0], padding[0]),
        ("width", 3, kernel[1], padding[1]),
    ):
        size = x.shape[dim]
        if k is not None and k > size + 2 * p:
            raise ValueError(
                f"{name} has kernel {axis} {k}, larger than the padded input {axis} "
                f"{size} + 2*{p} = {size + 2 * p}"
            )


def _windows(x: torch.Tensor, dim: int, kernel: int, stride: int, padding: int) -> torch.Tensor:
    """Zero-pad ``x`` along ``dim`` and append a trailing axis of ``kernel`` window elements.

    The result has ``x.shape[dim]`` replaced by the number of windows; it is a strided view of
    the padded tensor (``Tensor.unfold``), so no window is copied. Sizes are checked by the caller.
    The separable members window one axis of a higher-rank intermediate at a time, which
    :func:`~ane_lib.functional.conv.sliding_windows` (all spatial axes at once) does not do.
    """
    if padding:
        pad = [0, 0] * (x.ndim - 1 - dim) + [padding, padding]
        x = F.pad(x, pad)
    return x.unfold(dim, kernel, stride)


def _windows2d(
    x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> torch.Tensor:
    """``x: (B, C, H, W)`` -> windows ``(B, C, H', W', k, l)``: zero padding, then the same
    sliding windows :func:`~ane_lib.functional.conv.conv_einsum` contracts."""
    padded = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    return sliding_windows(padded, kernel, stride)


def _spatial_args(stride: IntPair, padding: IntPair) -> tuple[tuple[int, int], tuple[int, int]]:
    s = int_tuple("stride", stride, 2, minimum=1)
    p = int_tuple("padding", padding, 2, minimum=0)
    return (s[0], s[1]), (p[0], p[1])


# --------------------------------------------------------------------------------------------
# 1x1 convolutions


def conv1x1_scalar(x: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """The smallest convolution: one input channel, one output channel, a 1x1 kernel.

    Every pixel is multiplied by the same weight: ``y[b, 0, h, w] = x[b, 0, h, w] * scale``,
    written as the contraction ``"bkhw,k->bhw"`` over a kernel axis of length 1.

    x: (B, 1, H, W); scale: a float or a one-element tensor (shape (), (1,) or (1, 1, 1, 1)).
    Returns (B, 1, H, W), equal to ``F.conv2d(x, scale.reshape(1, 1, 1, 1))``.
    """
    _, C, _, _ = _check_input(x)
    if C != 1:
        raise ValueError(f"x must have one channel (B, 1, H, W), got shape {tuple(x.shape)}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float, torch.Tensor)):
        raise TypeError(f"scale must be a float or a tensor, got {type(scale).__name__}")
    if not isinstance(scale, torch.Tensor):
        scale = torch.tensor(float(scale), dtype=x.dtype, device=x.device)
    if scale.numel() != 1:
        raise ValueError(f"scale must have one element, got shape {tuple(scale.shape)}")
    return torch.einsum("bkhw,k->bhw", x, scale.reshape(1)).unsqueeze(1)


def conv1x1_filter(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """One 1x1 filter: a weighted sum over channels at every pixel, ``"bchw,c->bhw"``.

    x: (B, C, H, W); weight: (C,) or torch's (1, C, 1, 1). Returns (B, 1, H, W), equal to
    ``F.conv2d(x, weight.reshape(1, C, 1, 1))``.
    """
    _, C, _, _ = _check_input(x)
    check_rank("weight", weight, (1, 4), "(C,) or (1, C, 1, 1)")
    expected = (C,) if weight.ndim == 1 else (1, C, 1, 1)
    _check_shape("weight", weight, expected, "(C,)" if weight.ndim == 1 else "(1, C, 1, 1)")
    return torch.einsum("bchw,c->bhw", x, weight.reshape(C)).unsqueeze(1)


def conv1x1(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """The full 1x1 convolution C -> C': a linear layer applied at every pixel.

    ``y[b, o, h, w] = sum_c weight[o, c] x[b, c, h, w] (+ bias[o])``, the einsum
    ``"bchw,oc->bohw"``; height and width behave like batch axes, which is why a network of
    1x1 convolutions accepts any image size.

    x: (B, C, H, W); weight: (C', C) or torch's (C', C, 1, 1); bias: (C',) or None.
    Returns (B, C', H, W).
    """
    _, C, _, _ = _check_input(x)
    matrix = _as_matrix("weight", weight, C, "C")
    _check_bias(bias, matrix.shape[0])
    y = torch.einsum("bchw,oc->bohw", x, matrix)
    return y if bias is None else y + bias[:, None, None]


# --------------------------------------------------------------------------------------------
# separable convolutions


def depthwise_conv2d(
    x: torch.Tensor, weight: torch.Tensor, stride: IntPair = 1, padding: IntPair = 0
) -> torch.Tensor:
    """Depthwise convolution: each channel filtered by its own k x l kernels, no channel mixing.

    With depth multiplier ``m`` each input channel ``c`` produces the ``m`` output channels
    ``c*m, ..., c*m + m - 1`` (torch's order for ``groups=C``): ``"bchwij,cmij->bcmhw"``.

    x: (B, C, H, W); weight: (C*m, 1, k, l). Returns (B, C*m, H', W'), equal to
    ``F.conv2d(x, weight, stride=stride, padding=padding, groups=C)``.
    """
    _, C, _, _ = _check_input(x)
    check_rank("weight", weight, (4,), "(C*m, 1, k, l)")
    out, one, k, l = weight.shape
    if one != 1:
        raise ValueError(f"weight must have shape (C*m, 1, k, l), got {tuple(weight.shape)}")
    check_divides("C", C, "weight.shape[0]", out)
    s, p = _spatial_args(stride, padding)
    _check_fits("weight", x, (k, l), p)
    windows = _windows2d(x, (k, l), s, p)  # (B, C, H', W', k, l)
    y = torch.einsum("bchwij,cmij->bcmhw", windows, weight.reshape(C, out // C, k, l))
    return y.flatten(1, 2)


def depthwise_separable_conv2d(
    x: torch.Tensor,
    depthwise: torch.Tensor,
    pointwise: torch.Tensor,
    stride: IntPair = 1,
    padding: IntPair = 0,
) -> torch.Tensor:
    """Depthwise separable convolution (MobileNet, Xception): depthwise k x l, then 1x1.

    The spatial filtering (``"bchwij,cmij->bcmhw"``) and the channel mixing
    (``"bchw,oc->bohw"``) of a full convolution become two separate steps. It equals one full
    convolution with kernel
    ``K[o, c, i, j] = sum_t pointwise[o, c*m + t] depthwise[c*m + t, 0, i, j]``.

    x: (B, C, H, W); depthwise: (C*m, 1, k, l); pointwise: (C', C*m) or (C', C*m, 1, 1).
    Returns (B, C', H', W'), equal to ``F.conv2d(F.conv2d(x, depthwise, groups=C), pointwise)``.
    """
    filtered = depthwise_conv2d(x, depthwise, stride=stride, padding=padding)
    return conv1x1(filtered, _as_matrix("pointwise", pointwise, filtered.shape[1], "C*m"))


def spatially_separable_conv2d(
    x: torch.Tensor,
    vertical: torch.Tensor,
    horizontal: torch.Tensor,
    stride: IntPair = 1,
    padding: IntPair = 0,
) -> torch.Tensor:
    """A full convolution whose every kernel slice ``K[o, c]`` is rank 1: k x 1, then 1 x l.

    ``K[o, c, i, j] = vertical[o, c, i, 0] * horizontal[o, c, 0, j]`` (the broadcast product
    ``vertical * horizontal``). Column filtering ``"bchwi,oci->bochw"`` keeps both channel
    axes in the intermediate ``(B, C', C, H', W)``; row filtering ``"bochwj,ocj->bohw"`` then
    sums over ``c``.

    x: (B, C, H, W); vertical: (C', C, k, 1); horizontal: (C', C, 1, l).
    Returns (B, C', H', W'), equal to ``F.conv2d(x, vertical * horizontal, stride=stride,
    padding=padding)``.
    """
    _, C, _, _ = _check_input(x)
    check_rank("vertical", vertical, (4,), "(C', C, k, 1)")
    out, _, k, _ = vertical.shape
    _check_shape("vertical", vertical, (out, C, k, 1), "(C', C, k, 1)")
    check_rank("horizontal", horizontal, (4,), "(C', C, 1, l)")
    l = horizontal.shape[3]
    _check_shape("horizontal", horizontal, (out, C, 1, l), "(C', C, 1, l)")
    s, p = _spatial_args(stride, padding)
    _check_fits("vertical", x, (k, None), p)
    _check_fits("horizontal", x, (None, l), p)
    columns = _windows(x, 2, k, s[0], p[0])  # (B, C, H', W, k)
    inter = torch.einsum("bchwi,oci->bochw", columns, vertical[..., 0])
    rows = _windows(inter, 4, l, s[1], p[1])  # (B, C', C, H', W', l)
    return torch.einsum("bochwj,ocj->bohw", rows, horizontal[:, :, 0, :])


def asymmetric_conv2d(
    x: torch.Tensor,
    vertical: torch.Tensor,
    horizontal: torch.Tensor,
    stride: IntPair = 1,
    padding: IntPair = 0,
) -> torch.Tensor:
    """Inception's factorisation into asymmetric convolutions: a k x 1 conv, then a 1 x l conv.

    A full k x 1 convolution C -> M (``"bchwi,mci->bmhw"``) followed by a full 1 x l
    convolution M -> C' (``"bmhwj,omj->bohw"``). It equals one convolution with kernel
    ``K[o, c, i, j] = sum_m horizontal[o, m, 0, j] vertical[m, c, i, 0]``: every slice
    ``K[o, c]`` is a sum of M rank-1 matrices, so with ``M >= min(k, l)`` any k x l slice is
    reachable in principle, but the M factors are shared by all (o, c) pairs.

    x: (B, C, H, W); vertical: (M, C, k, 1); horizontal: (C', M, 1, l).
    Returns (B, C', H', W'), equal to
    ``F.conv2d(F.conv2d(x, vertical, stride=(s_h, 1), padding=(p_h, 0)), horizontal,
    stride=(1, s_w), padding=(0, p_w))``.
    """
    _, C, _, _ = _check_input(x)
    check_rank("vertical", vertical, (4,), "(M, C, k, 1)")
    mid, _, k, _ = vertical.shape
    _check_shape("vertical", vertical, (mid, C, k, 1), "(M, C, k, 1)")
    check_rank("horizontal", horizontal, (4,), "(C', M, 1, l)")
    out, _, _, l = horizontal.shape
    _check_shape("horizontal", horizontal, (out, mid, 1, l), "(C', M, 1, l)")
    s, p = _spatial_args(stride, padding)
    _check_fits("vertical", x, (k, None), p)
    _check_fits("horizontal", x, (None, l), p)
    columns = _windows(x, 2, k, s[0], p[0])  # (B, C, H', W, k)
    inter = torch.einsum("bchwi,mci->bmhw", columns, vertical[..., 0])
    rows = _windows(inter, 3, l, s[1], p[1])  # (B, M, H', W', l)
    return torch.einsum("bmhwj,omj->bohw", rows, horizontal[:, :, 0, :])


def flattened_conv2d(
    x: torch.Tensor,
    channel: torch.Tensor,
    vertical: torch.Tensor,
    horizontal: torch.Tensor,
    stride: IntPair = 1,
    padding: IntPair = 0,
) -> torch.Tensor:
    """Flattened convolution (Jin et al.): 1x1 across channels, then k x 1, then 1 x l.

    Each output channel ``o`` owns a channel vector, a column and a row, and keeps them through
    three one-dimensional steps: ``"bchw,oc->bohw"``, ``"bohwi,oi->bohw"`` (depthwise, vertical),
    ``"bohwj,oj->bohw"`` (depthwise, horizontal). It equals one convolution with the rank-1
    3D kernel ``K[o, c, i, j] = channel[o, c] vertical[o, 0, i, 0] horizontal[o, 0, 0, j]``.

    x: (B, C, H, W); channel: (C', C) or (C', C, 1, 1); vertical: (C', 1, k, 1);
    horizontal: (C', 1, 1, l). Returns (B, C', H', W').
    """
    _, C, _, _ = _check_input(x)
    matrix = _as_matrix("channel", channel, C, "C")
    out = matrix.shape[0]
    check_rank("vertical", vertical, (4,), "(C', 1, k, 1)")
    k = vertical.shape[2]
    _check_shape("vertical", vertical, (out, 1, k, 1), "(C', 1, k, 1)")
    check_rank("horizontal", horizontal, (4,), "(C', 1, 1, l)")
    l = horizontal.shape[3]
    _check_shape("horizontal", horizontal, (out, 1, 1, l), "(C', 1, 1, l)")
    s, p = _spatial_args(stride, padding)
    _check_fits("vertical", x, (k, None), p)
    _check_fits("horizontal", x, (None, l), p)
    mixed = torch.einsum("bchw,oc->bohw", x, matrix)
    columns = _windows(mixed, 2, k, s[0], p[0])  # (B, C', H', W, k)
    tall = torch.einsum("bohwi,oi->bohw", columns, vertical[:, 0, :, 0])
    rows = _windows(tall, 3, l, s[1], p[1])  # (B, C', H', W', l)
    return torch.einsum("bohwj,oj->bohw", rows, horizontal[:, 0, 0, :])


# --------------------------------------------------------------------------------------------
# grouped convolutions and the channel shuffle


def grouped_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    groups: int,
    bias: torch.Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
) -> torch.Tensor:
    """Grouped convolution with an explicit group axis: ``"bgshwij,gosij->bgohw"``.

    The C input channels are split into ``groups`` contiguous groups of ``C/g``; group ``g``
    produces output channels ``g*C'/g, ..., (g+1)*C'/g - 1`` from its own inputs only.

    x: (B, C, H, W); weight: (C', C/g, k, l); bias: (C',) or None.
    Returns (B, C', H', W'), equal to ``F.conv2d(x, weight, bias, stride, padding, groups=g)``.
    """
    B, C, _, _ = _check_input(x)
    g = check_positive_int("groups", groups)
    check_divides("groups", g, "in_channels C", C)
    check_rank("weight", weight, (4,), "(C', C/g, k, l)")
    out, _, k, l = weight.shape
    check_divides("groups", g, "out_channels C'", out)
    _check_shape("weight", weight, (out, C // g, k, l), "(C', C/g, k, l)")
    _check_bias(bias, out)
    s, p = _spatial_args(stride, padding)
    _check_fits("weight", x, (k, l), p)
    windows = _windows2d(x, (k, l), s, p)  # (B, C, H', W', k, l)
    windows = windows.reshape(B, g, C // g, *windows.shape[2:])
    y = torch.einsum("bgshwij,gosij->bgohw", windows, weight.reshape(g, out // g, C // g, k, l))
    y = y.flatten(1, 2)
    return y if bias is None else y + bias[:, None, None]


def pointwise_grouped_conv2d(
    x: torch.Tensor, weight: torch.Tensor, groups: int, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Grouped 1x1 convolution (ShuffleNet): ``"bgshw,gos->bgohw"``.

    Equal to :func:`conv1x1` with the block-diagonal matrix
    :func:`block_diagonal_weight` ``(weight, groups)``.

    x: (B, C, H, W); weight: (C', C/g) or (C', C/g, 1, 1); bias: (C',) or None.
    Returns (B, C', H, W), equal to ``F.conv2d(x, weight, bias, groups=groups)``.
    """
    B, C, H, W = _check_input(x)
    g = check_positive_int("groups", groups)
    check_divides("groups", g, "in_channels C", C)
    matrix = _as_matrix("weight", weight, C // g, "C/g")
    out = matrix.shape[0]
    check_divides("groups", g, "out_channels C'", out)
    _check_bias(bias, out)
    y = torch.einsum(
        "bgshw,gos->bgohw", x.reshape(B, g, C // g, H, W), matrix.reshape(g, out // g, C // g)
    )
    y = y.flatten(1, 2)
    return y if bias is None else y + bias[:, None, None]


def block_diagonal_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """The dense (C', C) matrix of a grouped 1x1 convolution: zero outside the diagonal blocks.

    weight: (C', C/g) or (C', C/g, 1, 1). Returns (C', C) whose block ``g`` (rows
    ``g*C'/g ...``, columns ``g*C/g ...``) is ``weight``'s rows of group ``g``.
    """
    g = check_positive_int("groups", groups)
    check_rank("weight", weight, (2, 4), "(C', C/g) or (C', C/g, 1, 1)")
    matrix = _as_matrix("weight", weight, weight.shape[1], "C/g")
    out, per_group = matrix.shape
    check_divides("groups", g, "out_channels C'", out)
    blocks = matrix.reshape(g, out // g, per_group)
    eye = torch.eye(g, dtype=matrix.dtype, device=matrix.device)
    # dense[g, o, h, s] = eye[g, h] * blocks[g, o, s]: block g sits at block row g, block column g
    dense = torch.einsum("gh,gos->gohs", eye, blocks)
    return dense.reshape(out, g * per_group)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: view channels as (g, C/g), transpose, flatten.

    Written as the pure permutation einsum ``"bgshw->bsghw"``: new channel ``s*g + g0`` is old
    channel ``g0*C/g + s``, so consecutive channels come from different groups and a following
    grouped layer sees every previous group.

    x: (B, C, H, W) with ``groups`` dividing C. Returns (B, C, H, W), equal to
    ``torch.nn.ChannelShuffle(groups)(x)``.
    """
    B, C, H, W = _check_input(x)
    g = check_positive_int("groups", groups)
    check_divides("groups", g, "channels C", C)
    return torch.einsum("bgshw->bsghw", x.reshape(B, g, C // g, H, W)).reshape(B, C, H, W)


def channel_shuffle_permutation(channels: int, groups: int) -> torch.Tensor:
    """Indices ``perm`` with ``channel_shuffle(x, groups) == x[:, perm]``.

    Returns a LongTensor (C,): ``perm[s*g + g0] = g0*C/g + s``.
    """
    C = check_positive_int("channels", channels)
    g = check_positive_int("groups", groups)
    check_divides("groups", g, "channels", C)
    return torch.arange(C).reshape(g, C // g).t().reshape(C)

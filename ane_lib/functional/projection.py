"""A linear projection written as a 1x1 convolution, and the layouts that go with it.

``nn.Linear`` maps each C-vector of a ``(B, S, C)`` sequence to an O-vector. A 2D convolution with
a 1x1 kernel does the same to every pixel of a ``(B, C, H, W)`` image: at each pixel it mixes the C
channels with an ``(O, C)`` matrix and never looks at a neighbour. Laying the sequence out as a
``(B, C, 1, S)`` image (one row of S pixels) therefore turns the Linear into a 1x1 convolution with
the same numbers, which is the form the Apple Neural Engine prefers (Apple's "Principle 1").

Every function here is a pure tensor function; the module-level conversions live in
:mod:`ane_lib.nn.linear_conv`.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

from ane_lib._checks import check_choice, check_rank

__all__ = [
    "linear_weight_to_conv1x1",
    "conv1x1_weight_to_linear",
    "bsc_to_bc1s",
    "bc1s_to_bsc",
    "linear_as_conv1x1",
    "ProjectionMethod",
]

ProjectionMethod = Literal["conv", "einsum"]
"""How :func:`linear_as_conv1x1` computes: ``F.conv2d``, or ``torch.einsum`` on ``(B, C, 1, S)``."""


def linear_weight_to_conv1x1(weight: torch.Tensor) -> torch.Tensor:
    """Reshape a Linear weight into the weight of the equivalent 1x1 convolution.

    Args:
        weight: ``(O, I)``, as stored by ``nn.Linear`` (out_features, in_features).

    Returns:
        ``(O, I, 1, 1)``: a view of ``weight`` (no copy), as stored by ``nn.Conv2d``.
    """
    check_rank("weight", weight, (2,), "(O, I)")
    return weight[:, :, None, None]


def conv1x1_weight_to_linear(weight: torch.Tensor) -> torch.Tensor:
    """Reshape the weight of a 1x1 convolution (groups=1) into the equivalent Linear weight.

    Args:
        weight: ``(O, I, 1, 1)``, as stored by ``nn.Conv2d(I, O, kernel_size=1)``.

    Returns:
        ``(O, I)``: a view of ``weight`` (no copy).

    A weight whose kernel is not 1x1 is rejected: such a convolution mixes neighbouring pixels
    and is not a per-position projection. (A grouped 1x1 convolution also has a 4D weight, of
    shape ``(O, I / groups, 1, 1)``; it is a block-diagonal projection, which this function cannot
    tell apart from a dense one: :func:`ane_lib.nn.linear_from_conv1x1` checks ``groups`` on the
    module.)
    """
    check_rank("weight", weight, (4,), "(O, I, 1, 1)")
    kh, kw = weight.shape[2], weight.shape[3]
    if (kh, kw) != (1, 1):
        raise ValueError(
            f"weight must be a 1x1 kernel of shape (O, I, 1, 1), got kernel {kh}x{kw} "
            f"(shape {tuple(weight.shape)}); only a 1x1 convolution is a linear projection"
        )
    return weight[:, :, 0, 0]


def bsc_to_bc1s(x: torch.Tensor) -> torch.Tensor:
    """Lay a sequence out as a one-row, channels-first image.

    Args:
        x: ``(B, S, C)``: batch, sequence length, channels (the usual transformer layout).

    Returns:
        ``(B, C, 1, S)``: a view of ``x`` (not contiguous), with ``out[b, c, 0, s] == x[b, s, c]``.
    """
    check_rank("x", x, (3,), "(B, S, C)")
    return x.transpose(1, 2).unsqueeze(2)


def bc1s_to_bsc(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`bsc_to_bc1s`.

    Args:
        x: ``(B, C, 1, S)``; the third axis must have size 1.

    Returns:
        ``(B, S, C)``: a view of ``x`` (not contiguous), with ``out[b, s, c] == x[b, c, 0, s]``.
    """
    check_rank("x", x, (4,), "(B, C, 1, S)")
    if x.shape[2] != 1:
        raise ValueError(
            f"x must have shape (B, C, 1, S) with a third axis of size 1, got shape "
            f"{tuple(x.shape)}"
        )
    return x.squeeze(2).transpose(1, 2)


def linear_as_conv1x1(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    method: ProjectionMethod = "conv",
) -> torch.Tensor:
    """Compute ``F.linear(x, weight, bias)`` by the 1x1-convolution route.

    A ``(B, S, C)`` sequence is laid out as ``(B, C, 1, S)`` and projected by a 1x1 convolution,
    ``y[b, o, 0, s] = sum_i W[o, i] x[b, i, 0, s] + bias[o]``, then laid back out as ``(B, S, O)``.
    A batch of vectors ``(N, C)`` is treated as N images of 1x1 pixel, ``(N, C, 1, 1)``.

    Args:
        x: ``(B, S, C)`` or ``(N, C)``.
        weight: ``(O, C)`` (a Linear weight) or ``(O, C, 1, 1)`` (a 1x1 convolution weight).
        bias: ``(O,)`` or None.
        method: ``"conv"`` runs ``F.conv2d``; ``"einsum"`` writes the sum above with
            ``torch.einsum`` on the ``(B, C, 1, S)`` layout.

    Returns:
        ``(B, S, O)`` or ``(N, O)``, the layout of ``x``.
    """
    check_rank("x", x, (2, 3), "(B, S, C) or (N, C)")
    check_rank("weight", weight, (2, 4), "(O, C) or (O, C, 1, 1)")
    check_choice("method", method, get_args(ProjectionMethod))
    conv_weight = weight if weight.ndim == 4 else linear_weight_to_conv1x1(weight)
    # validates the 1x1 kernel of a 4D weight
    linear_weight = conv1x1_weight_to_linear(conv_weight)
    out_channels, in_channels = linear_weight.shape
    if x.shape[-1] != in_channels:
        raise ValueError(
            f"x has {x.shape[-1]} channels in its last axis (shape {tuple(x.shape)}) but weight "
            f"of shape {tuple(weight.shape)} expects {in_channels}"
        )
    if weight.dtype != x.dtype:
        raise TypeError(f"weight has dtype {weight.dtype} but x has dtype {x.dtype}; cast one")
    if bias is not None:
        check_rank("bias", bias, (1,), "(O,)")
        if bias.shape[0] != out_channels:
            raise ValueError(
                f"bias must have shape ({out_channels},) to match weight of shape "
                f"{tuple(weight.shape)}, got {tuple(bias.shape)}"
            )
        if bias.dtype != x.dtype:
            raise TypeError(f"bias has dtype {bias.dtype} but x has dtype {x.dtype}; cast one")

    # (N, C) -> (N, C, 1, 1): N one-pixel images; (B, S, C) -> (B, C, 1, S): B one-row images.
    image = x[:, :, None, None] if x.ndim == 2 else bsc_to_bc1s(x)
    if method == "conv":
        y = F.conv2d(image, conv_weight, bias)
    else:
        y = torch.einsum("oi,bihw->bohw", linear_weight, image)
        if bias is not None:
            y = y + bias[None, :, None, None]
    return y[:, :, 0, 0] if x.ndim == 2 else bc1s_to_bsc(y)

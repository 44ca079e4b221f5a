"""MBConv (inverted residual) with squeeze-excitation, as MOAT (deeplab2) defines it.

For an input ``x: (B, I, H, W)``, output width ``O``, expansion ``e`` (4) and stride ``s``:

    shortcut = conv1x1_bias(avgpool_s(x))          # pool only if s > 1, conv only if I != O
    r = BN(x) -> conv1x1(I -> e*O, no bias) -> BN -> GELU
          -> depthwise 3x3 (stride s, no bias) -> BN -> GELU
          -> SE (optional) -> conv1x1(e*O -> O, with bias)
    out = shortcut + r

SE (squeeze-excitation): ``x * sigmoid(conv1x1(swish(conv1x1(mean_hw(x)))))`` with
``max(1, int(O * se_ratio))`` hidden channels (counted from the *output* width ``O``, as in
deeplab2). GELU is the exact (erf) one. Batch norms use deeplab2's (Keras) epsilon 1e-3 and
PyTorch's running-average momentum 0.1 (see :data:`BN_MOMENTUM`). Padding is PyTorch's
symmetric ``padding=1``; TensorFlow's ``"same"`` at stride 2 pads only the bottom/right, so a
port of deeplab2's checkpoints would pad ``(0, 1, 0, 1)`` explicitly. The parameters are the
same either way.

:class:`MBConvBlockANE` has the same parameters and computes the same function, but can keep its
tensors flattened as ``(B, C, 1, H*W)``: every op except the depthwise convolution and the
shortcut's pooling acts on each position alone and does not care how positions are laid out, and
a flat last axis of ``H*W`` values is padded far less by the Neural Engine's 64-byte rule than a
last axis of ``W`` = 8 or 16 values.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ane_lib._checks import check_positive_int, check_rank, int_tuple

__all__ = ["SqueezeExcitation", "MBConvBlock", "MBConvBlockANE", "BN_EPS", "BN_MOMENTUM"]

BN_EPS = 1e-3
"""Batch-norm epsilon of deeplab2's MOAT (the Keras default)."""
BN_MOMENTUM = 0.1
"""PyTorch's default running-average momentum. deeplab2 trains with Keras' 0.99 (0.01 here),
which suits its long schedules; short fine-tuning runs need the faster 0.1."""


class SqueezeExcitation(nn.Module):
    """Squeeze-excitation: scale each channel by a gate computed from the global mean.

    Args:
        channels: ``C`` of the input (MBConv's expanded width).
        hidden: width of the bottleneck (``max(1, int(O * se_ratio))`` in MBConv).

    ``x: (B, C, H, W)`` or ``(B, C, 1, S)`` -> same shape. Parameters: ``reduce``
    (``Conv2d(C, hidden, 1)``), ``expand`` (``Conv2d(hidden, C, 1)``), both with bias.
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.hidden = check_positive_int("hidden", hidden)
        self.reduce = nn.Conv2d(channels, hidden, kernel_size=1)
        self.expand = nn.Conv2d(hidden, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, C, H, W)`` or ``(B, C, 1, S)`` -> same shape."""
        gate = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        gate = self.expand(F.silu(self.reduce(gate)))
        return x * torch.sigmoid(gate)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def strided_sizes(
    input_size: int | Sequence[int], stride: int
) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(H, W)`` of a block's input and ``(H / s, W / s)`` of its output, checked.

    Raises a ValueError unless ``stride`` divides both ``H`` and ``W`` (the blocks here pool the
    shortcut with kernel and stride ``s``, which would drop a remainder).
    """
    h, w = int_tuple("input_size", input_size, 2)
    check_positive_int("stride", stride)
    if h % stride or w % stride:
        raise ValueError(f"stride={stride} must divide input_size={(h, w)} (H and W)")
    return (h, w), (h // stride, w // stride)


def se_hidden_channels(out_channels: int, se_ratio: float) -> int:
    """deeplab2's SE width: ``max(1, int(out_channels * se_ratio))``."""
    return max(1, int(out_channels * se_ratio))


class MBConvBlock(nn.Module):
    """MBConv block (standard form), ``(B, I, H, W) -> (B, O, H / s, W / s)``.

    Args:
        in_channels: ``I``.
        out_channels: ``O``.
        stride: 1 or 2 (carried by the depthwise conv; the shortcut average-pools with kernel
            and stride ``s``).
        expansion_rate: ``e``; the inner width is ``e * O``.
        se_ratio: squeeze-excitation ratio (``None`` for no SE, as in the MOAT block).
        kernel_size: of the depthwise convolution (odd).

    Parameters (same names in both forms): ``shortcut_conv`` (if ``I != O``), ``pre_norm``,
    ``expand_conv``, ``expand_norm``, ``depthwise_conv``, ``depthwise_norm``, ``se`` (if any),
    ``shrink_conv``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        expansion_rate: int = 4,
        se_ratio: float | None = 0.25,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.out_channels = check_positive_int("out_channels", out_channels)
        self.stride = check_positive_int("stride", stride)
        check_positive_int("expansion_rate", expansion_rate)
        check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        if se_ratio is not None and not (0 < se_ratio <= 1):
            raise ValueError(f"se_ratio must be in (0, 1] or None, got {se_ratio!r}")
        inner = expansion_rate * out_channels
        self.inner_channels = inner
        self.pool: nn.AvgPool2d | None = (
            nn.AvgPool2d(kernel_size=stride, stride=stride) if stride > 1 else None
        )
        self.shortcut_conv: nn.Conv2d | None = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1)
            if in_channels != out_channels
            else None
        )
        self.pre_norm = _bn(in_channels)
        self.expand_conv = nn.Conv2d(in_channels, inner, kernel_size=1, bias=False)
        self.expand_norm = _bn(inner)
        self.depthwise_conv = nn.Conv2d(
            inner,
            inner,
            kernel_size=kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=inner,
            bias=False,
        )
        self.depthwise_norm = _bn(inner)
        self.se: SqueezeExcitation | None = (
            SqueezeExcitation(inner, se_hidden_channels(out_channels, se_ratio))
            if se_ratio is not None
            else None
        )
        self.shrink_conv = nn.Conv2d(inner, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, I, H, W)`` -> ``(B, O, H / s, W / s)``."""
        check_rank("x", x, (4,), "(B, I, H, W)")
        shortcut = x if self.pool is None else self.pool(x)
        if self.shortcut_conv is not None:
            shortcut = self.shortcut_conv(shortcut)
        r = F.gelu(self.expand_norm(self.expand_conv(self.pre_norm(x))))
        r = F.gelu(self.depthwise_norm(self.depthwise_conv(r)))
        if self.se is not None:
            r = self.se(r)
        return shortcut + self.shrink_conv(r)


class MBConvBlockANE(MBConvBlock):
    """MBConv block in the Neural Engine's form: same parameters, static shapes, flat layout option.

    Args:
        in_channels, out_channels, stride, expansion_rate, se_ratio, kernel_size: as in
            :class:`MBConvBlock`.
        input_size: ``(H, W)`` of the input feature map (static, so no shape arithmetic at run
            time).
        in_flat: the input is ``(B, I, 1, H*W)`` instead of ``(B, I, H, W)``.
        out_flat: return ``(B, O, 1, H'*W')`` instead of ``(B, O, H', W')``, ``H' = H / s``.

    Only the depthwise convolution (with its batch norm, which the converter folds into it) and
    the shortcut's pooling see the ``(H, W)`` grid; the reshapes around them are the only layout
    ops of the block.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        input_size: int | Sequence[int],
        stride: int = 1,
        expansion_rate: int = 4,
        se_ratio: float | None = 0.25,
        kernel_size: int = 3,
        in_flat: bool = False,
        out_flat: bool = False,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            stride=stride,
            expansion_rate=expansion_rate,
            se_ratio=se_ratio,
            kernel_size=kernel_size,
        )
        self.input_size, self.output_size = strided_sizes(input_size, self.stride)
        self.in_flat = bool(in_flat)
        self.out_flat = bool(out_flat)

    def _check_input(self, x: torch.Tensor) -> None:
        h, w = self.input_size
        want = (self.in_channels, 1, h * w) if self.in_flat else (self.in_channels, h, w)
        check_rank("x", x, (4,), "(B, I, 1, H*W)" if self.in_flat else "(B, I, H, W)")
        if tuple(x.shape[1:]) != want:
            raise ValueError(
                f"x must have shape (B, {', '.join(map(str, want))}), got {tuple(x.shape)}"
            )

    def _grid(self, x: torch.Tensor, flat: bool, size: tuple[int, int]) -> torch.Tensor:
        """``(B, C, 1, H*W)`` -> ``(B, C, H, W)`` if ``flat``; else unchanged."""
        return x.reshape(-1, x.shape[1], *size) if flat else x

    def _out_layout(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H', W')`` -> ``(B, C, 1, H'*W')`` if ``out_flat``; else unchanged."""
        h, w = self.output_size
        return x.reshape(-1, x.shape[1], 1, h * w) if self.out_flat else x

    def _in_to_out_layout(self, x: torch.Tensor) -> torch.Tensor:
        """Re-lay a stride-1 tensor from the input layout to the output layout."""
        if self.in_flat == self.out_flat:
            return x
        return self._out_layout(self._grid(x, self.in_flat, self.input_size))

    def _depthwise(self, r: torch.Tensor) -> torch.Tensor:
        """The depthwise convolution and its batch norm, the residual's only step on the grid:
        ``(B, E, H, W)`` (or ``(B, E, 1, H*W)``) -> ``(B, E, H', W')`` (or flat), ``E = e*O``."""
        r = self.depthwise_conv(self._grid(r, self.in_flat, self.input_size))
        # The batch norm goes on the grid, before the reshape to flat: there it directly follows
        # its convolution, which coremltools folds it into (its fold pass does not look through
        # a reshape). Per channel, it commutes with the reshape, in training mode too (each
        # channel's batch statistics see the same values). GELU stays on the unpadded flat side.
        return self._out_layout(self.depthwise_norm(r))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, I, H, W)`` (or ``(B, I, 1, H*W)``) -> ``(B, O, H', W')`` (or flat)."""
        self._check_input(x)
        if self.pool is not None:
            shortcut = self._out_layout(self.pool(self._grid(x, self.in_flat, self.input_size)))
        else:
            shortcut = self._in_to_out_layout(x)
        if self.shortcut_conv is not None:
            shortcut = self.shortcut_conv(shortcut)
        r = F.gelu(self.expand_norm(self.expand_conv(self.pre_norm(x))))
        r = F.gelu(self._depthwise(r))
        if self.se is not None:
            r = self.se(r)
        return shortcut + self.shrink_conv(r)

    def extra_repr(self) -> str:
        return (
            f"input_size={self.input_size}, stride={self.stride}, in_flat={self.in_flat}, "
            f"out_flat={self.out_flat}"
        )

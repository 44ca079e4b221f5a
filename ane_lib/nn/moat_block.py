"""The MOAT block: an MBConv without squeeze-excitation, then self-attention (as in deeplab2).

For ``x: (B, I, H, W)``:

    y   = MBConv(x)                                   # stride s, no SE -> (B, O, H/s, W/s)
    out = y + Attention(LayerNorm(y))                 # LayerNorm over channels, eps 1e-5

with ``O / head_size`` heads (head size 32), q scaled by ``head_size**-0.5``, and attention over
the whole map (``window=None``) or inside non-overlapping ``window`` tiles (local attention).

:class:`MOATBlock` is the standard form: NCHW convolutions, then NHWC for the attention
(``nn.LayerNorm``, the usual rank-6 window partition, a fused-``qkv`` attention on ``(B', N, C)``).

:class:`MOATBlockANE` computes the same function with the same parameters for the Neural Engine:
the MBConv part may run flat on ``(B, C, 1, H*W)``, the LayerNorm acts on the channel axis in
place of a transpose, global attention runs on the flat tensor directly, and local windows are cut
in NHWC (last axis ``C``, never a narrow window width) by the rank-5 relayed partition, then laid
out ``(B * windows, C, 1, N)`` for the 1x1-conv, split-head attention.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ane_lib._checks import check_positive_int, check_rank
from ane_lib.functional.windows import check_window_divides, window_partition, window_reverse
from ane_lib.nn.attention import MultiHeadAttention, MultiHeadAttentionANE
from ane_lib.nn.mbconv import MBConvBlock, MBConvBlockANE, strided_sizes
from ane_lib.nn.norm import LayerNormANE
from ane_lib.nn.position import PEType

__all__ = ["MOATBlock", "MOATBlockANE", "LN_EPS"]

LN_EPS = 1e-5
"""LayerNorm epsilon of deeplab2's MOAT attention and classification head."""


class _MOATBlockBase(nn.Module):
    """Arguments and checks shared by both forms."""

    mbconv: MBConvBlock

    def _setup(
        self,
        in_channels: int,
        out_channels: int,
        input_size: int | Sequence[int],
        stride: int,
        head_size: int,
        window: int | Sequence[int] | None,
    ) -> tuple[int, tuple[int, int]]:
        check_positive_int("out_channels", out_channels)
        check_positive_int("head_size", head_size)
        if out_channels % head_size != 0:
            raise ValueError(
                f"head_size={head_size} must divide out_channels={out_channels} "
                f"(out_channels % head_size = {out_channels % head_size})"
            )
        self.input_size, self.output_size = strided_sizes(input_size, stride)
        self.window: tuple[int, int] | None = None
        if window is not None:
            where = "the block's feature map"
            self.window = check_window_divides(window, self.output_size, where=where)
        self.head_size = head_size
        return out_channels // head_size, self.window or self.output_size

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, output_size={self.output_size}, window={self.window}"


class MOATBlock(_MOATBlockBase):
    """MOAT block (standard form), ``(B, I, H, W) -> (B, O, H / s, W / s)``.

    Args:
        in_channels: ``I``.
        out_channels: ``O``; ``head_size`` must divide it.
        input_size: ``(H, W)`` of the input map; sizes the position embedding of global attention.
        stride: of the MBConv part (2 for the first block of a stage, else 1).
        head_size: channels per head (32 in MOAT).
        window: ``None`` for global attention, else the ``(wh, ww)`` (or int) attention window,
            which must divide the output map.
        pe: position embedding, one of :data:`ane_lib.nn.position.PE_TYPES`.
        expansion_rate: of the MBConv part.

    Parameters: ``mbconv.*`` (an :class:`~ane_lib.nn.mbconv.MBConvBlock` without SE),
    ``attention_norm`` (``nn.LayerNorm(O)``), ``attention.*``
    (:class:`~ane_lib.nn.attention.MultiHeadAttention`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        input_size: int | Sequence[int],
        stride: int = 1,
        head_size: int = 32,
        window: int | Sequence[int] | None = None,
        pe: PEType = "rpe",
        expansion_rate: int = 4,
    ) -> None:
        super().__init__()
        heads, grid = self._setup(in_channels, out_channels, input_size, stride, head_size, window)
        self.mbconv = MBConvBlock(
            in_channels, out_channels, stride=stride, expansion_rate=expansion_rate, se_ratio=None
        )
        self.attention_norm = nn.LayerNorm(out_channels, eps=LN_EPS)
        self.attention = MultiHeadAttention(out_channels, heads, grid_size=grid, pe=pe)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, I, H, W)`` -> ``(B, O, H / s, W / s)``."""
        check_rank("x", x, (4,), "(B, I, H, W)")
        if tuple(x.shape[2:]) != self.input_size:
            raise ValueError(
                f"x must have spatial size {self.input_size} (the block's input_size), "
                f"got shape {tuple(x.shape)}"
            )
        y = self.mbconv(x)
        B, C, H, W = y.shape
        t = self.attention_norm(y.permute(0, 2, 3, 1))  # (B, H, W, C)
        if self.window is None:
            t = self.attention(t.reshape(B, H * W, C)).reshape(B, H, W, C)
        else:
            wh, ww = self.window
            tiles = window_partition(t, self.window, channels_last=True, method="6d")
            tiles = self.attention(tiles.reshape(-1, wh * ww, C)).reshape(-1, wh, ww, C)
            t = window_reverse(tiles, self.window, H, W, channels_last=True, method="6d")
        return y + t.permute(0, 3, 1, 2)


class MOATBlockANE(_MOATBlockBase):
    """MOAT block in the Neural Engine's form: same parameters and outputs as :class:`MOATBlock`.

    Args:
        in_channels, out_channels, input_size, stride, head_size, window, pe, expansion_rate:
            as in :class:`MOATBlock`.
        in_flat: the input is ``(B, I, 1, H*W)`` instead of ``(B, I, H, W)``.
        out_flat: return ``(B, O, 1, H'*W')`` instead of ``(B, O, H', W')``.

    Parameters: ``mbconv.*`` (:class:`~ane_lib.nn.mbconv.MBConvBlockANE`), ``attention_norm``
    (:class:`~ane_lib.nn.norm.LayerNormANE`), ``attention.*``
    (:class:`~ane_lib.nn.attention.MultiHeadAttentionANE`); loads a :class:`MOATBlock` state dict.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        input_size: int | Sequence[int],
        stride: int = 1,
        head_size: int = 32,
        window: int | Sequence[int] | None = None,
        pe: PEType = "rpe",
        expansion_rate: int = 4,
        in_flat: bool = False,
        out_flat: bool = False,
    ) -> None:
        super().__init__()
        heads, grid = self._setup(in_channels, out_channels, input_size, stride, head_size, window)
        self.mbconv = MBConvBlockANE(
            in_channels,
            out_channels,
            input_size=self.input_size,
            stride=stride,
            expansion_rate=expansion_rate,
            se_ratio=None,
            in_flat=in_flat,
            out_flat=out_flat,
        )
        self.in_flat = bool(in_flat)
        self.out_flat = bool(out_flat)
        self.attention_norm = LayerNormANE(out_channels, eps=LN_EPS)
        self.attention = MultiHeadAttentionANE(out_channels, heads, grid_size=grid, pe=pe)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, I, H, W)`` (or flat) -> ``(B, O, H', W')`` (or ``(B, O, 1, H'*W')``)."""
        y = self.mbconv(x)
        return y + self._attend(self.attention_norm(y))

    def _attend(self, t: torch.Tensor) -> torch.Tensor:
        """Attention on the normalised map ``t`` (output layout) -> same layout."""
        C = self.mbconv.out_channels
        H, W = self.output_size
        if self.window is None or self.window == (H, W):
            # One window covering the map: attend on the flat tensor, no partition at all.
            if self.out_flat:
                return self.attention(t)
            return self.attention(t.reshape(-1, C, 1, H * W)).reshape(-1, C, H, W)
        wh, ww = self.window
        # Windows are cut in NHWC: every intermediate keeps C (not ww) as its last axis.
        nhwc = t.permute(0, 2, 3, 1)  # (B, 1, H*W, C) if flat, else (B, H, W, C)
        if self.out_flat:
            nhwc = nhwc.reshape(-1, H, W, C)
        tiles = window_partition(nhwc, self.window, channels_last=True, method="5d")
        tiles = tiles.reshape(-1, 1, wh * ww, C).permute(0, 3, 1, 2)  # (B * nW, C, 1, N)
        tiles = self.attention(tiles)
        tiles = tiles.permute(0, 2, 3, 1).reshape(-1, wh, ww, C)  # (B * nW, wh, ww, C)
        nhwc = window_reverse(tiles, self.window, H, W, channels_last=True, method="5d")
        if self.out_flat:
            nhwc = nhwc.reshape(-1, 1, H * W, C)
        return nhwc.permute(0, 3, 1, 2)

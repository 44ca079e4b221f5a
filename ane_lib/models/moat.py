"""MOAT (Yang et al., 2022) for classification, in the standard form and the Neural Engine's form.

    stem:   conv3x3/2 (bias) -> BN -> GELU -> conv3x3 (bias)            (B, 3, H, W) -> H/2
    stages: 1-2 MBConv blocks (with SE), 3-4 MOAT blocks; each starts with stride 2 -> H/4 ... H/32
    head:   global mean -> LayerNorm -> 1x1 conv (a Linear)             -> (B, num_classes)

:class:`MOAT` is the paper's layout in PyTorch idiom (NCHW convolutions, NHWC attention with
``nn.LayerNorm`` and a fused-``qkv`` ``nn.Linear``, rank-6 window partition).

:class:`MOATANE` has the same parameters and outputs, laid out for the Neural Engine: 1x1 conv
projections, split-head attention, channel LayerNorm, rank-5 NHWC window partition, and stages
whose feature-map width is not a multiple of 32 values kept flat as ``(B, C, 1, H*W)`` (see
:func:`flat_layout`). All shapes come from the config, so the model has no shape arithmetic at
run time and exports with ``torch.export`` at its ``image_size``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ane_lib._checks import check_rank
from ane_lib.models.config import MOATConfig
from ane_lib.nn.linear_conv import register_projection_layout_hooks
from ane_lib.nn.mbconv import BN_EPS, BN_MOMENTUM, MBConvBlock, MBConvBlockANE
from ane_lib.nn.moat_block import LN_EPS, MOATBlock, MOATBlockANE
from ane_lib.nn.norm import LayerNormANE

__all__ = ["MOAT", "MOATANE", "flat_layout", "init_weights"]

_ALIGN_VALUES = 32  # 64 bytes of fp16: the Neural Engine's last-axis alignment


def flat_layout(width: int) -> bool:
    """Whether :class:`MOATANE` keeps a feature map of this width flat, ``(B, C, 1, H*W)``.

    True when ``width`` fp16 values do not fill whole 64-byte rows (``width % 32 != 0``): an
    NCHW tensor would then be padded on every row, while ``H*W`` is padded at most once.
    """
    return width % _ALIGN_VALUES != 0


def init_weights(module: nn.Module) -> None:
    """deeplab2's initialisation: conv and dense kernels ~ N(0, 0.02) (truncated), zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _stem(config: MOATConfig) -> nn.Sequential:
    c0, c1 = config.stem_sizes
    return nn.Sequential(
        OrderedDict(
            conv0=nn.Conv2d(3, c0, kernel_size=3, stride=2, padding=1),
            norm0=nn.BatchNorm2d(c0, eps=BN_EPS, momentum=BN_MOMENTUM),
            act0=nn.GELU(),
            conv1=nn.Conv2d(c0, c1, kernel_size=3, padding=1),
        )
    )


def _check_image(x: torch.Tensor, config: MOATConfig) -> None:
    check_rank("x", x, (4,), "(B, 3, H, W)")
    want = (3, *config.image_size)
    if tuple(x.shape[1:]) != want:
        raise ValueError(
            f"x must have shape (B, 3, {config.image_size[0]}, {config.image_size[1]}) for this "
            f"model (config.image_size={config.image_size}), got {tuple(x.shape)}"
        )


class _MOATBase(nn.Module):
    form: str = ""

    def __init__(self, config: MOATConfig) -> None:
        super().__init__()
        if not isinstance(config, MOATConfig):
            raise TypeError(f"config must be a MOATConfig, got {type(config).__name__}")
        self.config = config
        self.stem = _stem(config)
        self.stages = nn.ModuleList()

    def _block(
        self,
        kind: str,
        in_channels: int,
        out_channels: int,
        *,
        stride: int,
        input_size: tuple[int, int],
        in_flat: bool,
        out_flat: bool,
    ) -> nn.Module:
        """One block of the given kind (``"mbconv"`` or ``"moat"``) in this form."""
        raise NotImplementedError

    def _build_stages(self) -> None:
        """Four stages; each starts with a stride-2 block, later blocks keep the width."""
        config = self.config
        in_channels = config.stem_sizes[-1]
        size = config.stem_output_size
        in_flat = False  # the stem's output is NCHW
        for stage, (kind, depth, width) in enumerate(
            zip(config.block_types, config.depths, config.hidden_sizes, strict=True), start=1
        ):
            out_flat = flat_layout(config.stage_output_size(stage)[1])
            blocks = []
            for i in range(depth):
                stride = 2 if i == 0 else 1
                blocks.append(
                    self._block(
                        kind,
                        in_channels,
                        width,
                        stride=stride,
                        input_size=size,
                        in_flat=in_flat,
                        out_flat=out_flat,
                    )
                )
                in_channels, in_flat = width, out_flat
                size = (size[0] // stride, size[1] // stride)
            self.stages.append(nn.Sequential(*blocks))

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"name={c.name!r}, form={self.form!r}, image_size={c.image_size}, pe={c.pe!r}, "
            f"attention={c.attention!r}, window={c.window}, num_classes={c.num_classes}"
        )


class MOAT(_MOATBase):
    """MOAT in the standard form: ``(B, 3, H, W) -> (B, num_classes)``.

    Args:
        config: a :class:`~ane_lib.models.config.MOATConfig` (kept as ``self.config``).

    Parameters: ``stem.*``, ``stages.<s>.<b>.*`` (MBConv / MOAT blocks), ``head_norm``
    (``nn.LayerNorm``), ``head`` (``nn.Linear``). Loads a :class:`MOATANE` state dict too.
    """

    form = "standard"

    def __init__(self, config: MOATConfig) -> None:
        super().__init__(config)
        self._build_stages()
        width = config.hidden_sizes[-1]
        self.head_norm = nn.LayerNorm(width, eps=LN_EPS)
        self.head = nn.Linear(width, config.num_classes)
        register_projection_layout_hooks(self.head)
        init_weights(self)

    def _block(
        self,
        kind: str,
        in_channels: int,
        out_channels: int,
        *,
        stride: int,
        input_size: tuple[int, int],
        in_flat: bool,
        out_flat: bool,
    ) -> nn.Module:
        c = self.config  # the standard form is NCHW throughout: the layout flags do not apply
        if kind == "mbconv":
            return MBConvBlock(
                in_channels,
                out_channels,
                stride=stride,
                expansion_rate=c.expansion_rate,
                se_ratio=c.se_ratio,
            )
        return MOATBlock(
            in_channels,
            out_channels,
            input_size=input_size,
            stride=stride,
            head_size=c.head_size,
            window=c.window,
            pe=c.pe,
            expansion_rate=c.expansion_rate,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, 3, H, W)`` at ``config.image_size`` -> logits ``(B, num_classes)``."""
        _check_image(x, self.config)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(self.head_norm(x.mean(dim=(2, 3))))


class MOATANE(_MOATBase):
    """MOAT in the Neural Engine's form: same parameters and outputs as :class:`MOAT`.

    Args:
        config: a :class:`~ane_lib.models.config.MOATConfig` (kept as ``self.config``).

    ``stage_flat[s]`` tells whether stage ``s`` (0-3) runs flat as ``(B, C, 1, H*W)``. The head is
    a mean over positions, :class:`~ane_lib.nn.norm.LayerNormANE` and a 1x1 ``nn.Conv2d``.
    Loads a :class:`MOAT` state dict (and :class:`MOAT` loads this one's).
    """

    form = "ane"

    def __init__(self, config: MOATConfig) -> None:
        super().__init__(config)
        self._build_stages()
        self.stage_flat = tuple(flat_layout(config.stage_output_size(s)[1]) for s in (1, 2, 3, 4))
        width = config.hidden_sizes[-1]
        self.head_norm = LayerNormANE(width, eps=LN_EPS)
        self.head = nn.Conv2d(width, config.num_classes, kernel_size=1)
        register_projection_layout_hooks(self.head)
        init_weights(self)

    def _block(
        self,
        kind: str,
        in_channels: int,
        out_channels: int,
        *,
        stride: int,
        input_size: tuple[int, int],
        in_flat: bool,
        out_flat: bool,
    ) -> nn.Module:
        c = self.config
        if kind == "mbconv":
            return MBConvBlockANE(
                in_channels,
                out_channels,
                input_size=input_size,
                stride=stride,
                expansion_rate=c.expansion_rate,
                se_ratio=c.se_ratio,
                in_flat=in_flat,
                out_flat=out_flat,
            )
        return MOATBlockANE(
            in_channels,
            out_channels,
            input_size=input_size,
            stride=stride,
            head_size=c.head_size,
            window=c.window,
            pe=c.pe,
            expansion_rate=c.expansion_rate,
            in_flat=in_flat,
            out_flat=out_flat,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, 3, H, W)`` at ``config.image_size`` -> logits ``(B, num_classes)``."""
        _check_image(x, self.config)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        pooled = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1) from NCHW or flat alike
        return self.head(self.head_norm(pooled)).flatten(1)

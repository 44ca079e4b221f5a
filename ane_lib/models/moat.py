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

This module registers the family (:class:`~ane_lib.models.config.MOATConfig` built as
:class:`MOAT` or :class:`MOATANE`) and the published variants of
:data:`~ane_lib.models.config.MOAT_VARIANTS` with :mod:`ane_lib.models.registry`.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any, ClassVar

import torch
from torch import nn

from ane_lib.functional.alignment import padding_nbytes
from ane_lib.models._common import check_image, init_weights
from ane_lib.models.config import MOAT_VARIANTS, MOATConfig
from ane_lib.models.registry import register_family, register_model
from ane_lib.nn.linear_conv import register_projection_layout_hooks
from ane_lib.nn.mbconv import BN_EPS, BN_MOMENTUM, MBConvBlock, MBConvBlockANE
from ane_lib.nn.moat_block import LN_EPS, MOATBlock, MOATBlockANE
from ane_lib.nn.norm import LayerNormANE

__all__ = ["MOAT", "MOATANE", "flat_layout"]


def flat_layout(width: int) -> bool:
    """Whether :class:`MOATANE` keeps a feature map of this width flat, ``(B, C, 1, H*W)``.

    True when a row of ``width`` fp16 values is padded under the Neural Engine's 64-byte
    last-axis rule (:mod:`ane_lib.functional.alignment`), i.e. ``width % 32 != 0``: an NCHW
    tensor would then be padded on every row, while ``H*W`` is padded at most once.
    """
    return padding_nbytes((width,), torch.float16) > 0


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


class _MOATBase(nn.Module):
    """Stem, four stages and a head, built from the config; the forms differ in their blocks,
    the layout options the blocks take and the head."""

    form: ClassVar[str]
    block_classes: ClassVar[dict[str, type[nn.Module]]]  # block kind ("mbconv", "moat") -> class

    def __init__(self, config: MOATConfig) -> None:
        super().__init__()
        if not isinstance(config, MOATConfig):
            raise TypeError(f"config must be a MOATConfig, got {type(config).__name__}")
        self.config = config
        self.stem = _stem(config)
        self.stages = nn.ModuleList(self._stages())
        width = config.hidden_sizes[-1]
        self.head_norm, self.head = self._head(width, config.num_classes)
        register_projection_layout_hooks(self.head)
        init_weights(self)

    def _head(self, width: int, num_classes: int) -> tuple[nn.Module, nn.Module]:
        """``(head_norm, head)`` of this form."""
        raise NotImplementedError

    def _layout(
        self, kind: str, input_size: tuple[int, int], in_flat: bool, out_flat: bool
    ) -> dict[str, Any]:
        """The layout arguments a block of ``kind`` takes in this form."""
        raise NotImplementedError

    def _stages(self) -> list[nn.Sequential]:
        """Four stages; each starts with a stride-2 block, later blocks keep the width."""
        c = self.config
        options: dict[str, dict[str, Any]] = {
            "mbconv": {"expansion_rate": c.expansion_rate, "se_ratio": c.se_ratio},
            "moat": {
                "head_size": c.head_size,
                "window": c.window,
                "pe": c.pe,
                "expansion_rate": c.expansion_rate,
            },
        }
        in_channels = c.stem_sizes[-1]
        size = c.stem_output_size
        in_flat = False  # the stem's output is NCHW
        stages = []
        for stage, (kind, depth, width) in enumerate(
            zip(c.block_types, c.depths, c.hidden_sizes, strict=True), start=1
        ):
            out_flat = flat_layout(c.stage_output_size(stage)[1])
            blocks = []
            for i in range(depth):
                stride = 2 if i == 0 else 1
                layout = self._layout(kind, size, in_flat, out_flat)
                blocks.append(
                    self.block_classes[kind](
                        in_channels, width, stride=stride, **options[kind], **layout
                    )
                )
                in_channels, in_flat = width, out_flat
                size = (size[0] // stride, size[1] // stride)
            stages.append(nn.Sequential(*blocks))
        return stages

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, 3, H, W)`` -> the last stage's map, ``(B, C, H/32, W/32)`` or flat."""
        check_image(x, self.config.image_size)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

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
    block_classes = {"mbconv": MBConvBlock, "moat": MOATBlock}

    def _head(self, width: int, num_classes: int) -> tuple[nn.Module, nn.Module]:
        return nn.LayerNorm(width, eps=LN_EPS), nn.Linear(width, num_classes)

    def _layout(
        self, kind: str, input_size: tuple[int, int], in_flat: bool, out_flat: bool
    ) -> dict[str, Any]:
        # NCHW throughout: the flat flags do not apply; attention sizes its grid from the map
        return {"input_size": input_size} if kind == "moat" else {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, 3, H, W)`` at ``config.image_size`` -> logits ``(B, num_classes)``."""
        return self.head(self.head_norm(self._features(x).mean(dim=(2, 3))))


class MOATANE(_MOATBase):
    """MOAT in the Neural Engine's form: same parameters and outputs as :class:`MOAT`.

    Args:
        config: a :class:`~ane_lib.models.config.MOATConfig` (kept as ``self.config``).

    ``stage_flat[s]`` tells whether stage ``s`` (0-3) runs flat as ``(B, C, 1, H*W)``. The head is
    a mean over positions, :class:`~ane_lib.nn.norm.LayerNormANE` and a 1x1 ``nn.Conv2d``.
    Loads a :class:`MOAT` state dict (and :class:`MOAT` loads this one's).
    """

    form = "ane"
    block_classes = {"mbconv": MBConvBlockANE, "moat": MOATBlockANE}

    def __init__(self, config: MOATConfig) -> None:
        super().__init__(config)
        self.stage_flat = tuple(flat_layout(config.stage_output_size(s)[1]) for s in (1, 2, 3, 4))

    def _head(self, width: int, num_classes: int) -> tuple[nn.Module, nn.Module]:
        return LayerNormANE(width, eps=LN_EPS), nn.Conv2d(width, num_classes, kernel_size=1)

    def _layout(
        self, kind: str, input_size: tuple[int, int], in_flat: bool, out_flat: bool
    ) -> dict[str, Any]:
        return {"input_size": input_size, "in_flat": in_flat, "out_flat": out_flat}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, 3, H, W)`` at ``config.image_size`` -> logits ``(B, num_classes)``."""
        # (B, C, 1, 1) from an NCHW or a flat map alike
        pooled = self._features(x).mean(dim=(2, 3), keepdim=True)
        return self.head(self.head_norm(pooled)).flatten(1)


register_family(MOATConfig, standard=MOAT, ane=MOATANE)
for _name, _variant in MOAT_VARIANTS.items():
    register_model(
        _name,
        MOATConfig,
        fixed=dataclasses.asdict(_variant),
        description=f"{_name} (Yang et al., 2022; deeplab2 moat.py)",
    )

# Not a published variant: the reduced MOAT that chapter 9 trains on scikit-learn's 8x8 digits,
# one block per stage, built for 32x32 inputs (the smallest MOAT accepts: its output stride is
# 32) and ten classes, with global attention and a relative position bias on 2x2 and 1x1 maps.
register_model(
    "digits_moat",
    MOATConfig,
    fixed={"stem_sizes": (16, 16), "depths": (1, 1, 1, 1), "hidden_sizes": (32, 32, 64, 64)},
    defaults={"image_size": (32, 32), "num_classes": 10, "pe": "rpe", "attention": "global"},
    description="digits_moat: a reduced MOAT for scikit-learn's digits (chapter 9)",
)

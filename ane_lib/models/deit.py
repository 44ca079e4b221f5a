"""DeiT-tiny (Touvron et al., 2021) in the standard form and the Neural Engine's form.

    patches: conv P x P, stride P          (B, 3, H, W) -> (B, C, H/P, W/P) -> tokens
    tokens:  [class token, patches] + learned absolute position embedding
    blocks:  depth x pre-norm transformer block (global attention, MLP ratio 4)
    head:    LayerNorm of the class token -> Linear                    -> (B, num_classes)

:class:`DeiT` works on ``(B, N, C)`` tokens; :class:`DeiTANE` on ``(B, C, 1, N)`` with channel
LayerNorm, 1x1 convolutions and split-head attention. Same parameters, same outputs.

This module registers the family (:class:`~ane_lib.models.config.DeiTConfig` built as
:class:`DeiT` or :class:`DeiTANE`) and the model ``deit_tiny`` (DeiT-Ti: patch 16, width 192,
depth 12, 3 heads, MLP ratio 4; Touvron et al., 2021, and facebookresearch/deit).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ane_lib.models._common import check_image, init_weights
from ane_lib.models.config import DeiTConfig
from ane_lib.models.registry import register_family, register_model
from ane_lib.nn.linear_conv import register_projection_layout_hooks
from ane_lib.nn.load_hooks import register_load_hook
from ane_lib.nn.norm import LayerNormANE
from ane_lib.nn.position import AbsolutePositionEmbedding
from ane_lib.nn.transformer import TransformerBlock, TransformerBlockANE

__all__ = ["DeiT", "DeiTANE"]


def _cls_token_hook(module: nn.Module, state_dict: dict[str, Any], prefix: str) -> None:
    """Class token ``(1, 1, C)`` (standard) <-> ``(1, C, 1, 1)`` (ANE), by the target's rank."""
    key = prefix + "cls_token"
    token = state_dict.get(key)
    target = getattr(module, "cls_token", None)
    if (
        isinstance(token, torch.Tensor)
        and isinstance(target, torch.Tensor)
        and token.ndim != target.ndim
        and token.numel() == target.numel()
    ):
        state_dict[key] = token.reshape(target.shape)


class _DeiTBase(nn.Module):
    form: ClassVar[str]
    head: nn.Module

    def __init__(self, config: DeiTConfig, *, ane: bool) -> None:
        super().__init__()
        if not isinstance(config, DeiTConfig):
            raise TypeError(f"config must be a DeiTConfig, got {type(config).__name__}")
        self.config = config
        c = config
        self.patch_embed = nn.Conv2d(3, c.width, kernel_size=c.patch_size, stride=c.patch_size)
        shape = (1, c.width, 1, 1) if ane else (1, 1, c.width)
        self.cls_token = nn.Parameter(torch.zeros(shape))
        self.pos_embed = AbsolutePositionEmbedding(
            c.num_tokens, c.width, layout="bc1s" if ane else "bsc"
        )
        block = TransformerBlockANE if ane else TransformerBlock
        self.blocks = nn.Sequential(
            *[
                block(c.width, c.num_heads, mlp_ratio=c.mlp_ratio, eps=c.ln_eps)
                for _ in range(c.depth)
            ]
        )
        register_load_hook(self, _cls_token_hook)

    def _finish(self) -> None:
        register_projection_layout_hooks(self.head)
        init_weights(self)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def extra_repr(self) -> str:
        c = self.config
        return f"name={c.name!r}, form={self.form!r}, image_size={c.image_size}"


class DeiT(_DeiTBase):
    """DeiT in the standard form: ``(B, 3, H, W) -> (B, num_classes)``.

    Args:
        config: a :class:`~ane_lib.models.config.DeiTConfig` (kept as ``self.config``).

    Parameters: ``patch_embed``, ``cls_token`` ``(1, 1, C)``, ``pos_embed.weight`` ``(1, N, C)``,
    ``blocks.*``, ``norm``, ``head`` (``nn.Linear``). Loads a :class:`DeiTANE` state dict too.
    """

    form = "standard"

    def __init__(self, config: DeiTConfig) -> None:
        super().__init__(config, ane=False)
        self.norm = nn.LayerNorm(config.width, eps=config.ln_eps)
        self.head = nn.Linear(config.width, config.num_classes)
        self._finish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, 3, H, W)`` at ``config.image_size`` -> logits ``(B, num_classes)``."""
        check_image(x, self.config.image_size)
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N - 1, C)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = self.blocks(self.pos_embed(tokens))
        return self.head(self.norm(tokens[:, 0]))


class DeiTANE(_DeiTBase):
    """DeiT in the Neural Engine's form, on ``(B, C, 1, N)``: same parameters and outputs as DeiT.

    Parameters: as :class:`DeiT`, with ``cls_token`` ``(1, C, 1, 1)``, ``pos_embed.weight``
    ``(1, C, 1, N)``, :class:`~ane_lib.nn.norm.LayerNormANE` norms and a 1x1 ``nn.Conv2d`` head.
    """

    form = "ane"

    def __init__(self, config: DeiTConfig) -> None:
        super().__init__(config, ane=True)
        self.norm = LayerNormANE(config.width, eps=config.ln_eps)
        self.head = nn.Conv2d(config.width, config.num_classes, kernel_size=1)
        self._finish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, 3, H, W)`` at ``config.image_size`` -> logits ``(B, num_classes)``."""
        check_image(x, self.config.image_size)
        c = self.config
        patches = self.patch_embed(x).reshape(-1, c.width, 1, c.num_tokens - 1)  # (B, C, 1, N-1)
        cls = self.cls_token.expand(patches.shape[0], -1, -1, -1)  # (B, C, 1, 1)
        tokens = self.blocks(self.pos_embed(torch.cat([cls, patches], dim=3)))
        # LayerNorm acts per token, so normalising the class token alone is the same.
        return self.head(self.norm(tokens[:, :, :, :1])).flatten(1)


register_family(DeiTConfig, standard=DeiT, ane=DeiTANE)
register_model(
    "deit_tiny",
    DeiTConfig,
    fixed={"patch_size": 16, "width": 192, "depth": 12, "mlp_ratio": 4},
    defaults={"num_heads": 3},
    description="DeiT-Ti (Touvron et al., 2021; facebookresearch/deit)",
)

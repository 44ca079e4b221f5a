"""The pre-norm transformer block of ViT/DeiT, in the standard and the Neural Engine's form.

    x = x + Attention(LayerNorm(x))
    x = x + MLP(LayerNorm(x))            # MLP: Linear(C, r*C) -> GELU -> Linear(r*C, C)

:class:`TransformerBlock` works on ``(B, N, C)`` with ``nn.LayerNorm`` and ``nn.Linear``;
:class:`TransformerBlockANE` on ``(B, C, 1, N)`` with :class:`~ane_lib.nn.norm.LayerNormANE` and
1x1 convolutions. Parameter names are the same (``norm1``, ``attn``, ``norm2``, ``mlp.fc1``,
``mlp.fc2``), so each loads the other's state dict.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ane_lib._checks import check_positive_int
from ane_lib.nn.attention import MultiHeadAttention, MultiHeadAttentionANE
from ane_lib.nn.linear_conv import register_projection_layout_hooks
from ane_lib.nn.norm import LayerNormANE

__all__ = ["Mlp", "MlpANE", "TransformerBlock", "TransformerBlockANE"]


class Mlp(nn.Module):
    """``Linear(C, H) -> GELU -> Linear(H, C)`` on ``(B, N, C)``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(check_positive_int("dim", dim), check_positive_int("hidden", hidden))
        self.fc2 = nn.Linear(hidden, dim)
        register_projection_layout_hooks(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, N, C)`` -> ``(B, N, C)``."""
        return self.fc2(F.gelu(self.fc1(x)))


class MlpANE(nn.Module):
    """:class:`Mlp` as 1x1 convolutions on ``(B, C, 1, N)``; loads an :class:`Mlp` state dict."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("hidden", hidden)
        self.fc1 = nn.Conv2d(dim, hidden, kernel_size=1)
        self.fc2 = nn.Conv2d(hidden, dim, kernel_size=1)
        register_projection_layout_hooks(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, C, 1, N)`` -> ``(B, C, 1, N)``."""
        return self.fc2(F.gelu(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block (standard form) on ``(B, N, C)``.

    Args:
        dim: ``C``.
        num_heads: must divide ``dim``.
        mlp_ratio: MLP hidden width ``mlp_ratio * C``.
        eps: LayerNorm epsilon (DeiT: 1e-6).
    """

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: int = 4, eps: float = 1e-6) -> None:
        super().__init__()
        check_positive_int("mlp_ratio", mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = MultiHeadAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_ratio * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, N, C)`` -> ``(B, N, C)``."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerBlockANE(nn.Module):
    """:class:`TransformerBlock` on ``(B, C, 1, N)``: channel LayerNorm, 1x1 convs, split heads."""

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: int = 4, eps: float = 1e-6) -> None:
        super().__init__()
        check_positive_int("mlp_ratio", mlp_ratio)
        self.norm1 = LayerNormANE(dim, eps=eps)
        self.attn = MultiHeadAttentionANE(dim, num_heads)
        self.norm2 = LayerNormANE(dim, eps=eps)
        self.mlp = MlpANE(dim, mlp_ratio * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, C, 1, N)`` -> ``(B, C, 1, N)``."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

"""A transformer encoder layer in the Neural Engine's form, for text and other sequences.

One layer class covers the encoder layers of PyTorch (``nn.TransformerEncoderLayer``, post- or
pre-norm, ReLU or GELU) and of BERT-style models such as DistilBERT (post-norm, GELU):

    post-norm:  x = norm1(x + attn(x));   x = norm2(x + ffn(x))
    pre-norm:   x = x + attn(norm1(x));   x = x + ffn(norm2(x))

on tokens ``(B, C, 1, S)``, with every projection a 1x1 convolution, a channel LayerNorm
(:class:`~ane_lib.nn.norm.LayerNormANE`) and attention computed head by head
(:func:`~ane_lib.functional.attention.split_head_attention`) under an additive mask in the
key-first layout ``(B or 1, S_k, N_h or 1, S_q or 1)``. The layers have no dropout: they are the
inference form. :mod:`ane_lib.models.torch_transformer` and :mod:`ane_lib.models.hf_distilbert`
build them from the source models' modules.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from ane_lib._checks import check_choice, check_positive_int, check_rank
from ane_lib.functional.attention import split_head_attention
from ane_lib.nn.norm import LayerNormANE

__all__ = ["ACTIVATIONS", "Activation", "EncoderLayerANE", "FeedForwardANE", "SelfAttentionANE"]

Activation = Literal["relu", "gelu", "gelu_tanh"]
#: The feed-forward activations of :class:`FeedForwardANE`: ReLU, exact GELU, tanh-GELU.
ACTIVATIONS: tuple[str, ...] = get_args(Activation)


def _check_tokens(x: torch.Tensor, dim: int) -> None:
    check_rank("x", x, (4,), "(B, C, 1, S)")
    if x.shape[1] != dim or x.shape[2] != 1:
        raise ValueError(f"x must have shape (B, {dim}, 1, S), got {tuple(x.shape)}")


class SelfAttentionANE(nn.Module):
    """Multi-head self-attention on ``(B, C, 1, S)`` with separate 1x1-conv projections.

    Args:
        dim: ``C``; ``num_heads`` must divide it.
        num_heads: ``N_h``.
        bias: whether the four projections have biases.

    Parameters ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``: ``nn.Conv2d(C, C, 1)``.
    """

    def __init__(self, dim: int, num_heads: int, *, bias: bool = True) -> None:
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.num_heads = check_positive_int("num_heads", num_heads)
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim={dim}")
        self.q_proj = nn.Conv2d(dim, dim, 1, bias=bias)
        self.k_proj = nn.Conv2d(dim, dim, 1, bias=bias)
        self.v_proj = nn.Conv2d(dim, dim, 1, bias=bias)
        self.out_proj = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, *, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x: ``(B, C, 1, S)``, mask: additive ``(B|1, S, N_h|1, S|1)`` -> ``(B, C, 1, S)``;
        with ``return_weights`` also the softmax weights ``(B, S_k, N_h, S_q)``."""
        _check_tokens(x, self.dim)
        result = split_head_attention(
            self.q_proj(x),
            self.k_proj(x),
            self.v_proj(x),
            self.num_heads,
            mask=mask,
            return_weights=return_weights,
        )
        if isinstance(result, tuple):
            out, weights = result
            return self.out_proj(out), weights
        return self.out_proj(result)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"


class FeedForwardANE(nn.Module):
    """``conv1x1(C -> hidden) -> activation -> conv1x1(hidden -> C)`` on ``(B, C, 1, S)``."""

    def __init__(
        self, dim: int, hidden: int, *, activation: str = "relu", bias: bool = True
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("hidden", hidden)
        check_choice("activation", activation, ACTIVATIONS)
        self.activation = activation
        self.fc1 = nn.Conv2d(dim, hidden, 1, bias=bias)
        self.fc2 = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, C, 1, S)`` -> ``(B, C, 1, S)``."""
        h = self.fc1(x)
        if self.activation == "relu":
            h = F.relu(h)
        else:
            h = F.gelu(h, approximate="tanh" if self.activation == "gelu_tanh" else "none")
        return self.fc2(h)

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}"


class EncoderLayerANE(nn.Module):
    """Self-attention and feed-forward blocks with residuals and channel LayerNorms.

    Args:
        dim: ``C``.
        num_heads: ``N_h`` (must divide ``C``).
        hidden: width of the feed-forward block.
        activation: one of :data:`ACTIVATIONS`.
        eps: LayerNorm epsilon (PyTorch's default 1e-5; DistilBERT uses 1e-12).
        norm_first: pre-norm when True, post-norm (the original Transformer, BERT) when False.
        bias: biases in the projections and the norms (``nn.TransformerEncoderLayer(bias=...)``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        hidden: int,
        *,
        activation: str = "relu",
        eps: float = 1e-5,
        norm_first: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.norm_first = bool(norm_first)
        self.attn = SelfAttentionANE(dim, num_heads, bias=bias)
        self.ffn = FeedForwardANE(dim, hidden, activation=activation, bias=bias)
        self.norm1 = LayerNormANE(dim, eps=eps, bias=bias)
        self.norm2 = LayerNormANE(dim, eps=eps, bias=bias)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, *, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x: ``(B, C, 1, S)``, mask: additive ``(B|1, S, N_h|1, S|1)`` -> ``(B, C, 1, S)``;
        with ``return_weights`` also the attention weights ``(B, S_k, N_h, S_q)``."""
        attended = self.attn(
            self.norm1(x) if self.norm_first else x, mask, return_weights=return_weights
        )
        update, weights = attended if isinstance(attended, tuple) else (attended, None)
        if self.norm_first:
            x = x + update
            x = x + self.ffn(self.norm2(x))
        else:
            x = self.norm1(x + update)
            x = self.norm2(x + self.ffn(x))
        return (x, weights) if weights is not None else x

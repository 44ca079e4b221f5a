"""Multi-head self-attention in the standard form and in the Neural Engine's form.

Both compute, for each head ``h`` with head size ``d = C / num_heads``,

    out_h = softmax(q_h k_h^T * d**-0.5 + bias_h) v_h,        out = proj(concat_h out_h)

over the tokens of a ``(gh, gw)`` grid (a window, or the whole feature map), with an optional
position embedding (:data:`ane_lib.nn.position.PE_TYPES`).

* :class:`MultiHeadAttention` (standard): tokens ``(B, N, C)``, one fused ``qkv`` ``nn.Linear``,
  heads made by a reshape and a transpose, one softmax over a ``(B, heads, N, N)`` tensor.
* :class:`MultiHeadAttentionANE`: tokens ``(B, C, 1, N)``, separate 1x1-convolution projections
  ``q_proj``, ``k_proj``, ``v_proj`` and ``proj``, each result split per head along the channel
  axis (no reshape of q/k/v), per-head ``einsum("bchq,bkhc->bkhq")`` logits laid out
  ``(B, N_key, 1, N_query)`` and a softmax per head over axis 1 (Apple's "split softmax"). ``k`` is
  transposed once to ``(B, N, 1, C)`` before it is split.

The two load each other's state dicts (``qkv`` is split into or concatenated from the three
projections by a hook of the attention layer; each projection's own hook, from
:func:`~ane_lib.nn.linear_conv.register_projection_layout_hooks`, then reshapes Linear and
1x1-conv weights), so they are the same layer with the same weights in two layouts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ane_lib._checks import check_choice, check_positive_int, check_rank, int_tuple
from ane_lib.nn.linear_conv import register_projection_layout_hooks
from ane_lib.nn.load_hooks import register_load_hook
from ane_lib.nn.position import (
    PE_TYPES,
    AbsolutePositionEmbedding,
    APELayout,
    LePEConv,
    PEType,
    RelativePositionBias,
)

__all__ = ["MultiHeadAttention", "MultiHeadAttentionANE"]


def _check_heads(dim: int, num_heads: int) -> int:
    check_positive_int("dim", dim)
    check_positive_int("num_heads", num_heads)
    if dim % num_heads != 0:
        raise ValueError(
            f"num_heads={num_heads} must divide dim={dim} (dim % num_heads = {dim % num_heads})"
        )
    return dim // num_heads


class _AttentionBase(nn.Module):
    """Arguments, position embeddings and checks shared by both forms."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        grid_size: int | Sequence[int] | None,
        pe: PEType,
        ape_layout: APELayout,
    ) -> None:
        super().__init__()
        self.head_dim = _check_heads(dim, num_heads)
        self.dim = dim
        self.num_heads = num_heads
        check_choice("pe", pe, PE_TYPES)
        self.pe = pe
        if pe != "none" and grid_size is None:
            raise ValueError(f"grid_size must be given for pe={pe!r} (it sizes the embedding)")
        self.grid_size: tuple[int, int] | None = None
        if grid_size is not None:
            gh, gw = int_tuple("grid_size", grid_size, 2)
            self.grid_size = (gh, gw)
        self.scale = self.head_dim**-0.5
        self.rpe: RelativePositionBias | None = None
        self.lepe: LePEConv | None = None
        self.ape: AbsolutePositionEmbedding | None = None
        if pe in ("rpe", "single_rpe"):
            assert self.grid_size is not None
            self.rpe = RelativePositionBias(self.grid_size, num_heads if pe == "rpe" else 1)
        elif pe == "lepe":
            assert self.grid_size is not None
            gh, gw = self.grid_size
            self.ape = AbsolutePositionEmbedding(gh * gw, dim, layout=ape_layout)
            self.lepe = LePEConv(dim)

    def _check_tokens(self, n: int, shape: tuple[int, ...]) -> None:
        if self.grid_size is not None and n != self.grid_size[0] * self.grid_size[1]:
            gh, gw = self.grid_size
            raise ValueError(
                f"x has {n} tokens (shape {shape}) but this attention was built for "
                f"grid_size=({gh}, {gw}), i.e. {gh * gw} tokens"
            )

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, grid_size={self.grid_size}, "
            f"pe={self.pe!r}"
        )


class MultiHeadAttention(_AttentionBase):
    """Standard multi-head self-attention over a sequence ``(B, N, C)``.

    Args:
        dim: ``C``.
        num_heads: must divide ``dim``; head size ``C / num_heads``.
        grid_size: ``(gh, gw)`` token grid of each sequence, ``N = gh * gw`` (row-major); needed
            when ``pe != "none"``.
        pe: ``"rpe"``, ``"single_rpe"``, ``"lepe"`` or ``"none"``.

    Parameters: ``qkv`` (``nn.Linear(C, 3C)``; output features ordered q, k, v, each head-major),
    ``proj`` (``nn.Linear(C, C)``), plus ``rpe.table`` or ``ape.weight`` ``(1, N, C)`` and
    ``lepe`` (depthwise 3x3) according to ``pe``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        grid_size: int | Sequence[int] | None = None,
        pe: PEType = "none",
    ) -> None:
        super().__init__(dim, num_heads, grid_size=grid_size, pe=pe, ape_layout="bsc")
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        register_load_hook(self, _fuse_qkv_hook)
        register_projection_layout_hooks(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, N, C)`` -> ``(B, N, C)``."""
        check_rank("x", x, (3,), "(B, N, C)")
        B, N, C = x.shape
        self._check_tokens(N, tuple(x.shape))
        if self.ape is not None:
            x = self.ape(x)
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, d)
        logits = (q * self.scale) @ k.transpose(-2, -1)  # (B, heads, N_query, N_key)
        if self.rpe is not None:
            logits = logits + self.rpe()
        out = logits.softmax(dim=-1) @ v  # (B, heads, N, d)
        out = out.transpose(1, 2).reshape(B, N, C)
        if self.lepe is not None:
            assert self.grid_size is not None
            v_map = v.transpose(-2, -1).reshape(B, C, *self.grid_size)  # channel = head * d + j
            out = out + self.lepe(v_map).reshape(B, C, N).transpose(1, 2)
        return self.proj(out)


class MultiHeadAttentionANE(_AttentionBase):
    """Multi-head self-attention in the Neural Engine's layout, over ``(B, C, 1, N)`` tokens.

    Same arguments and computation as :class:`MultiHeadAttention`; parameters ``q_proj``,
    ``k_proj``, ``v_proj``, ``proj`` are 1x1 ``nn.Conv2d`` (weights ``(C, C, 1, 1)``) and the
    absolute embedding of LePE is stored ``(1, C, 1, N)``. Loads a :class:`MultiHeadAttention`
    state dict (and the reverse).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        grid_size: int | Sequence[int] | None = None,
        pe: PEType = "none",
    ) -> None:
        super().__init__(dim, num_heads, grid_size=grid_size, pe=pe, ape_layout="bc1s")
        # Separate projections: each output stays small enough to split per head cheaply.
        self.q_proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.k_proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.v_proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.proj = nn.Conv2d(dim, dim, kernel_size=1)
        register_load_hook(self, _split_qkv_hook)
        register_projection_layout_hooks(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, C, 1, N)`` -> ``(B, C, 1, N)``."""
        check_rank("x", x, (4,), "(B, C, 1, N)")
        if x.shape[1] != self.dim or x.shape[2] != 1:
            raise ValueError(f"x must have shape (B, {self.dim}, 1, N), got {tuple(x.shape)}")
        n = x.shape[3]
        self._check_tokens(n, tuple(x.shape))
        if self.ape is not None:
            x = self.ape(x)
        d = self.head_dim
        q = self.q_proj(x) * self.scale  # (B, C, 1, N)
        k = self.k_proj(x).permute(0, 3, 2, 1)  # (B, N, 1, C): transpose once, then split
        v = self.v_proj(x)  # (B, C, 1, N)
        bias = self.rpe.key_major() if self.rpe is not None else None  # (tables, N, 1, N)
        shared_bias = self.rpe is not None and self.rpe.num_heads == 1
        heads = []
        for h, (q_h, k_h, v_h) in enumerate(
            zip(q.split(d, dim=1), k.split(d, dim=3), v.split(d, dim=1), strict=True)
        ):
            logits = torch.einsum("bchq,bkhc->bkhq", q_h, k_h)  # (B, N_key, 1, N_query)
            if bias is not None:
                logits = logits + bias[0 if shared_bias else h]
            weights = logits.softmax(dim=1)
            heads.append(torch.einsum("bkhq,bchk->bchq", weights, v_h))  # (B, d, 1, N_query)
        out = torch.cat(heads, dim=1)
        if self.lepe is not None:
            assert self.grid_size is not None
            out = out + self.lepe(v.reshape(-1, self.dim, *self.grid_size)).reshape(
                -1, self.dim, 1, n
            )
        return self.proj(out)


# The attention layer's hooks only rename entries: they run before those of its projections
# (``load_state_dict`` visits a module before its children), which then convert each weight to
# their own layout, (O, I) or (O, I, 1, 1).


def _split_qkv_hook(module: nn.Module, state_dict: dict[str, Any], prefix: str) -> None:
    """Standard -> ANE: ``qkv.{weight,bias}`` ``(3C, C)``, ``(3C,)`` -> ``q_proj``, ``k_proj``,
    ``v_proj`` ``(C, C)``, ``(C,)`` each."""
    for suffix in ("weight", "bias"):
        fused = state_dict.pop(f"{prefix}qkv.{suffix}", None)
        if fused is None:
            continue
        for name, part in zip(("q_proj", "k_proj", "v_proj"), fused.chunk(3, dim=0), strict=True):
            state_dict[f"{prefix}{name}.{suffix}"] = part


def _fuse_qkv_hook(module: nn.Module, state_dict: dict[str, Any], prefix: str) -> None:
    """ANE -> standard: ``q_proj``, ``k_proj``, ``v_proj`` ``(C, C, 1, 1)``, ``(C,)`` ->
    ``qkv`` ``(3C, C, 1, 1)``, ``(3C,)`` (concatenated along the output channels)."""
    for suffix in ("weight", "bias"):
        keys = [f"{prefix}{name}.{suffix}" for name in ("q_proj", "k_proj", "v_proj")]
        if not all(key in state_dict for key in keys):
            continue
        state_dict[f"{prefix}qkv.{suffix}"] = torch.cat([state_dict.pop(k) for k in keys], dim=0)

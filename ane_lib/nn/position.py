"""Position embeddings for window and global attention: RPE, single-head RPE and LePE.

An attention layer attends over the tokens of a ``(gh, gw)`` grid: one window in local
attention, the whole feature map in global attention. Three ways to tell it where each token is:

* **Relative position bias** (RPE; Swin, MOAT): a learned table of ``(2 gh - 1) x (2 gw - 1)``
  values per head, one per relative offset; the bias added to the logit of query ``q`` and key
  ``k`` is ``table[h, qi - ki + gh - 1, qj - kj + gw - 1]`` (Swin's orientation: query minus
  key). Its size grows with the grid, so it is sized from the attention grid: a local window,
  or the feature map of a global attention layer at the model's image size (for MOAT at 224
  that is MOAT's ``P = 14`` at stride 16 and ``P = 7`` at stride 32).
* **Single-head RPE**: one table shared by all heads, ``1 / num_heads`` of the parameters
  (Apple's 2024 vision-transformer post).
* **LePE** (locally enhanced position embedding, CSWin): a depthwise 3x3 convolution on the
  values, added to the attention output, plus a learned absolute embedding of
  ``gh * gw x C`` values added to the attention input (Apple's ``LePE_ADD``). Neither grows
  quadratically with the grid.

The names of the position-embedding types accepted across ``ane_lib`` are in :data:`PE_TYPES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

import torch
from torch import nn

from ane_lib._checks import check_choice, check_positive_int, check_rank, int_tuple
from ane_lib.nn.load_hooks import register_load_hook

__all__ = [
    "PE_TYPES",
    "PEType",
    "APELayout",
    "relative_position_index",
    "RelativePositionBias",
    "AbsolutePositionEmbedding",
    "LePEConv",
]

PEType = Literal["rpe", "single_rpe", "lepe", "none"]
"""``"rpe"``: relative position bias, one table per head; ``"single_rpe"``: one table shared by all
heads; ``"lepe"``: depthwise 3x3 conv on V plus an absolute embedding on the input; ``"none"``."""
PE_TYPES: tuple[PEType, ...] = get_args(PEType)


def relative_position_index(grid_size: int | Sequence[int]) -> torch.Tensor:
    """Index of each (query, key) pair into a flattened relative-position table.

    Args:
        grid_size: ``(gh, gw)`` (or an int for a square grid); tokens are numbered row-major,
            token ``t`` at row ``t // gw`` and column ``t % gw``.

    Returns:
        ``(N, N)`` int64 with ``N = gh * gw``: entry ``[q, k]`` is
        ``(qi - ki + gh - 1) * (2 gw - 1) + (qj - kj + gw - 1)``, a position in a
        ``(2 gh - 1) * (2 gw - 1)`` table (Swin's orientation: query minus key).
    """
    gh, gw = int_tuple("grid_size", grid_size, 2)
    rows = torch.arange(gh).repeat_interleave(gw)  # (N,) row of each token
    cols = torch.arange(gw).repeat(gh)  # (N,) column of each token
    d_row = rows[:, None] - rows[None, :] + (gh - 1)
    d_col = cols[:, None] - cols[None, :] + (gw - 1)
    return d_row * (2 * gw - 1) + d_col


class RelativePositionBias(nn.Module):
    """A learned relative position bias for attention over a ``(gh, gw)`` grid of tokens.

    Args:
        grid_size: ``(gh, gw)`` or an int; the attention's token grid (window or feature map).
        num_heads: number of tables: the attention's head count for per-head RPE, 1 for
            single-head RPE (broadcast over heads).

    Parameters: ``table``: ``(num_heads, 2 gh - 1, 2 gw - 1)``. The index that gathers it is a
    non-persistent buffer, so the state dict holds the table alone.
    """

    index: torch.Tensor

    def __init__(self, grid_size: int | Sequence[int], num_heads: int) -> None:
        super().__init__()
        self.grid_size = int_tuple("grid_size", grid_size, 2)
        self.num_heads = check_positive_int("num_heads", num_heads)
        gh, gw = self.grid_size
        self.num_tokens = gh * gw
        self.table = nn.Parameter(torch.empty(num_heads, 2 * gh - 1, 2 * gw - 1))
        nn.init.trunc_normal_(self.table, std=0.02)
        self.register_buffer(
            "index", relative_position_index(self.grid_size).flatten(), persistent=False
        )

    def forward(self) -> torch.Tensor:
        """The bias, ``(num_heads, N, N)`` indexed ``[head, query, key]``, ``N = gh * gw``."""
        n = self.num_tokens
        return self.table.flatten(1)[:, self.index].reshape(self.num_heads, n, n)

    def key_major(self) -> torch.Tensor:
        """The bias laid out for split-head ANE attention: ``(num_heads, N_key, 1, N_query)``."""
        return self().transpose(1, 2).unsqueeze(2)

    def extra_repr(self) -> str:
        return f"grid_size={self.grid_size}, num_heads={self.num_heads}"


APELayout = Literal["bsc", "bc1s"]
"""``"bsc"``: tokens ``(B, S, C)`` (standard form); ``"bc1s"``: ``(B, C, 1, S)`` (ANE form)."""


class AbsolutePositionEmbedding(nn.Module):
    """A learned embedding per token position, added to the input (never in place).

    Args:
        num_tokens: ``S``, the tokens of one attended sequence (e.g. ``gh * gw``).
        dim: ``C``.
        layout: ``"bsc"`` for inputs ``(B, S, C)`` (standard form; ``weight: (1, S, C)``) or
            ``"bc1s"`` for inputs ``(B, C, 1, S)`` (ANE form; ``weight: (1, C, 1, S)``).

    A state dict of the other layout loads too (a pre-hook transposes it).
    """

    def __init__(self, num_tokens: int, dim: int, *, layout: APELayout = "bsc") -> None:
        super().__init__()
        self.num_tokens = check_positive_int("num_tokens", num_tokens)
        self.dim = check_positive_int("dim", dim)
        check_choice("layout", layout, get_args(APELayout))
        self.layout = layout
        shape = (1, num_tokens, dim) if layout == "bsc" else (1, dim, 1, num_tokens)
        self.weight = nn.Parameter(torch.empty(shape))
        nn.init.trunc_normal_(self.weight, std=0.02)
        register_load_hook(self, _ape_layout_hook)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, S, C)`` (layout ``"bsc"``) or ``(B, C, 1, S)`` (``"bc1s"``) -> same shape."""
        if self.layout == "bsc":
            check_rank("x", x, (3,), "(B, S, C)")
        else:
            check_rank("x", x, (4,), "(B, C, 1, S)")
        return x + self.weight

    def extra_repr(self) -> str:
        return f"num_tokens={self.num_tokens}, dim={self.dim}, layout={self.layout!r}"


def _ape_layout_hook(module: nn.Module, state_dict: dict[str, Any], prefix: str) -> None:
    """``(1, S, C)`` <-> ``(1, C, 1, S)``, chosen by the rank of the incoming weight."""
    key = prefix + "weight"
    weight = state_dict.get(key)
    if not isinstance(weight, torch.Tensor):
        return
    layout = getattr(module, "layout", "bsc")
    if layout == "bc1s" and weight.ndim == 3:
        state_dict[key] = weight.transpose(1, 2).unsqueeze(2)
    elif layout == "bsc" and weight.ndim == 4:
        state_dict[key] = weight.squeeze(2).transpose(1, 2)


class LePEConv(nn.Conv2d):
    """LePE's depthwise 3x3 convolution (with bias) on the values of one attended grid.

    Maps ``v: (B', C, gh, gw)`` to ``(B', C, gh, gw)`` with zero padding at the grid's border,
    so each window sees only its own values. ``weight: (C, 1, 3, 3)``, ``bias: (C,)``.
    """

    def __init__(self, dim: int) -> None:
        check_positive_int("dim", dim)
        super().__init__(dim, dim, kernel_size=3, padding=1, groups=dim, bias=True)

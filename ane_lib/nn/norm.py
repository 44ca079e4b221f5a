"""Layer normalisation over the channel axis of a channels-first tensor.

``nn.LayerNorm(C)`` normalises the *last* axis, so a transformer in the Neural Engine's
``(B, C, 1, S)`` layout would need a transpose before and after every norm. ``LayerNormANE``
normalises axis 1 instead: for ``x: (B, C, 1, S)`` or ``(B, C, H, W)``,

    LayerNormANE(x) == nn.LayerNorm(C)(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

with the same parameter names and shapes (``weight``, ``bias``: ``(C,)``), so the two load each
other's state dicts unchanged. The affine step is ``x_hat * weight + bias``, as in
``nn.LayerNorm``. (The ``LayerNormANE`` of apple/ml-ane-transformers computes
``(x_hat + bias) * weight``, which differs whenever ``weight != 1``; weights trained with
``nn.LayerNorm`` give wrong results there.)
"""

from __future__ import annotations

import torch
from torch import nn

from ane_lib._checks import check_positive_int, check_rank

__all__ = ["LayerNormANE"]


class LayerNormANE(nn.Module):
    """LayerNorm over the channel axis (axis 1) of ``(B, C, 1, S)`` or ``(B, C, H, W)`` tensors.

    Args:
        num_channels: ``C``.
        eps: added to the variance before the square root (``nn.LayerNorm``'s default, 1e-5).
        elementwise_affine: learn ``weight`` and ``bias`` of shape ``(C,)``.
        bias: with ``elementwise_affine``, whether there is a ``bias`` (``nn.LayerNorm(bias=...)``).

    The variance is the biased one (divided by ``C``), as in ``nn.LayerNorm``.
    """

    weight: nn.Parameter | None
    bias: nn.Parameter | None

    def __init__(
        self,
        num_channels: int,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        *,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.num_channels = check_positive_int("num_channels", num_channels)
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps < 0:
            raise ValueError(f"eps must be a non-negative float, got {eps!r}")
        self.eps = float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        if self.elementwise_affine:
            self.weight = nn.Parameter(torch.ones(num_channels, device=device, dtype=dtype))
            bias_init = torch.zeros(num_channels, device=device, dtype=dtype) if bias else None
            self.register_parameter("bias", None if bias_init is None else nn.Parameter(bias_init))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, C, 1, S)`` or ``(B, C, H, W)`` -> same shape, normalised over ``C``."""
        check_rank("x", x, (4,), "(B, C, 1, S) or (B, C, H, W)")
        if x.shape[1] != self.num_channels:
            raise ValueError(
                f"x must have {self.num_channels} channels in axis 1, got shape {tuple(x.shape)}"
            )
        centred = x - x.mean(dim=1, keepdim=True)
        variance = (centred * centred).mean(dim=1, keepdim=True)
        x_hat = centred * torch.rsqrt(variance + self.eps)
        if self.weight is not None:
            x_hat = x_hat * self.weight[:, None, None]
        if self.bias is not None:
            x_hat = x_hat + self.bias[:, None, None]
        return x_hat

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"

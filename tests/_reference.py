"""Trusted references shared by several test modules.

* :func:`randomize`, :func:`randomize_model`: random weights (and batch-norm statistics), so an
  equivalence test compares non-trivial numbers and can fail.
* :func:`deeplab2_mbconv`: deeplab2's MBConv block written out with functional ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ane_lib.nn import BN_EPS, LayerNormANE, MBConvBlock


def _randomize(
    module: nn.Module, seed: int, *, scale: float, mean_scale: float, unit_norms: bool
) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(mean_scale * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            if unit_norms and isinstance(m, (nn.BatchNorm2d, nn.LayerNorm, LayerNormANE)):
                m.weight.add_(1.0)  # type: ignore[operator]


def randomize(module: nn.Module, seed: int) -> None:
    """Parameters ~ 0.3 N(0, 1); batch-norm running mean ~ 0.2 N(0, 1), variance ~ U(0.5, 1.5)."""
    _randomize(module, seed, scale=0.3, mean_scale=0.2, unit_norms=False)


def randomize_model(model: nn.Module, seed: int = 0) -> None:
    """:func:`randomize` for a deep model: parameters ~ 0.2 N(0, 1), running mean ~ 0.1 N(0, 1),
    and norm gains ~ 1 + 0.2 N(0, 1), so the signal keeps its size through many blocks."""
    _randomize(model, seed, scale=0.2, mean_scale=0.1, unit_norms=True)


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, BN_EPS)


def deeplab2_mbconv(block: MBConvBlock, x: torch.Tensor) -> torch.Tensor:
    """deeplab2's MBConvBlock.call (eval mode), written out with functional ops.

    x: ``(B, C_in, H, W)`` -> ``(B, C_out, H / stride, W / stride)``; with SE when ``block.se``.
    """
    s = block.stride
    shortcut = F.avg_pool2d(x, s, s) if s > 1 else x
    if block.shortcut_conv is not None:
        shortcut = F.conv2d(shortcut, block.shortcut_conv.weight, block.shortcut_conv.bias)
    r = _bn(x, block.pre_norm)
    r = F.conv2d(r, block.expand_conv.weight)  # no bias
    r = F.gelu(_bn(r, block.expand_norm))
    r = F.conv2d(r, block.depthwise_conv.weight, stride=s, padding=1, groups=r.shape[1])
    r = F.gelu(_bn(r, block.depthwise_norm))
    if block.se is not None:
        gate = r.mean(dim=(2, 3), keepdim=True)
        gate = F.conv2d(gate, block.se.reduce.weight, block.se.reduce.bias)
        gate = F.conv2d(gate * torch.sigmoid(gate), block.se.expand.weight, block.se.expand.bias)
        r = r * torch.sigmoid(gate)
    r = F.conv2d(r, block.shrink_conv.weight, block.shrink_conv.bias)
    return shortcut + r

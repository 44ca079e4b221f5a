"""Normalization ops (coremltools ``normalization``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ane_lib.coreml.ops._common import norm_axes, per_channel
from ane_lib.coreml.ops._registry import OpArgs, register


def _normalize(x: torch.Tensor, dims: tuple[int, ...], eps: float) -> torch.Tensor:
    # (x - mean) / sqrt(var + eps), the variance biased (divided by N)
    mean = x.mean(dim=dims, keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(dim=dims, keepdim=True)
    return centred / torch.sqrt(var + eps)


def _affine(a: OpArgs, y: torch.Tensor) -> torch.Tensor:
    """y * gamma + beta with per-channel (C,) gamma and beta, each optional."""
    if a.has("gamma"):
        y = y * per_channel(a.get("gamma"), y.ndim)
    if a.has("beta"):
        y = y + per_channel(a.get("beta"), y.ndim)
    return y


@register("batch_norm")
def _batch_norm(a: OpArgs) -> torch.Tensor:
    # x: (N, C, *D); mean, variance, gamma, beta: (C,)
    x = a.get("x")
    mean = per_channel(a.get("mean"), x.ndim)
    var = per_channel(a.get("variance"), x.ndim)
    return _affine(a, (x - mean) / torch.sqrt(var + a.float("epsilon", 1e-5)))


@register("instance_norm")
def _instance_norm(a: OpArgs) -> torch.Tensor:
    # x: (N, C, *D): each (n, c) slice normalised over its spatial axes
    x = a.get("x")
    return _affine(a, _normalize(x, tuple(range(2, x.ndim)), a.float("epsilon", 1e-5)))


@register("layer_norm")
def _layer_norm(a: OpArgs) -> torch.Tensor:
    x = a.get("x")
    axes = a.ints("axes", None)
    dims = tuple(range(x.ndim)) if axes is None else norm_axes(axes, x.ndim)
    y = _normalize(x, dims, a.float("epsilon", 1e-5))
    # gamma and beta have the normalised axes' sizes in x's own axis order
    shape = [x.shape[d] if d in dims else 1 for d in range(x.ndim)]
    if a.has("gamma"):
        y = y * a.get("gamma").reshape(shape)
    if a.has("beta"):
        y = y + a.get("beta").reshape(shape)
    return y


@register("l2_norm")
def _l2_norm(a: OpArgs) -> torch.Tensor:
    # x: (*B, D1, D2, D3): each batch entry divided by sqrt(sum of squares + epsilon)
    x = a.get("x")
    dims = tuple(range(x.ndim - 3, x.ndim))
    eps = a.float("epsilon", 1e-6)
    return x / torch.sqrt(torch.sum(x * x, dim=dims, keepdim=True) + eps)


@register("local_response_norm")
def _local_response_norm(a: OpArgs) -> torch.Tensor:
    # x: (*B, C, *D) -> x_c / (k + alpha / size * sum_j x_j^2)^beta, j over the channels
    # c - floor(size / 2) .. c + floor((size - 1) / 2) (torch's LocalResponseNorm, which
    # coremltools' op tests compare Core ML with). The channel axis is -3, as in Core ML's
    # outputs: the definition says axis 1, but for a rank-3 input Core ML (coremltools' op
    # tests) normalises across axis 0; for rank 4, -3 is axis 1
    x = a.get("x")
    size = a.int("size")
    alpha, beta, k = a.float("alpha", 1e-4), a.float("beta", 0.75), a.float("k", 1.0)
    squares = (x * x).movedim(-3, -1)  # channels last
    padded = F.pad(squares, (size // 2, (size - 1) // 2))
    window_sums = padded.unfold(-1, size, 1).sum(-1).movedim(-1, -3)
    return x / torch.pow(k + alpha / size * window_sums, beta)

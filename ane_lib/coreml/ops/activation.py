"""Activation ops (coremltools ``activation``): pointwise functions of ``x``, and ``softmax``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ane_lib.coreml.ops._common import norm_axis, per_channel
from ane_lib.coreml.ops._registry import OpArgs, register


@register("relu")
def _relu(a: OpArgs) -> torch.Tensor:
    return torch.relu(a.get("x"))


@register("relu6")
def _relu6(a: OpArgs) -> torch.Tensor:
    return torch.clamp(a.get("x"), 0.0, 6.0)


@register("sigmoid")
def _sigmoid(a: OpArgs) -> torch.Tensor:
    return torch.sigmoid(a.get("x"))


@register("silu")
def _silu(a: OpArgs) -> torch.Tensor:
    return F.silu(a.get("x"))


@register("softplus")
def _softplus(a: OpArgs) -> torch.Tensor:
    # log(1 + exp(x)), without overflow for large x
    x = a.get("x")
    return torch.log1p(torch.exp(-x.abs())) + torch.relu(x)


@register("softsign")
def _softsign(a: OpArgs) -> torch.Tensor:
    x = a.get("x")
    return x / (1 + x.abs())


@register("gelu")
def _gelu(a: OpArgs) -> torch.Tensor:
    x = a.get("x")
    mode = a.str("mode", "EXACT")
    if mode == "EXACT":  # 0.5 x (1 + erf(x / sqrt(2)))
        return 0.5 * x * (1.0 + torch.erf(x * (1.0 / math.sqrt(2.0))))
    if mode == "TANH_APPROXIMATION":  # 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)
        return 0.5 * x * (1.0 + torch.tanh(inner))
    if mode == "SIGMOID_APPROXIMATION":  # x sigmoid(1.702 x)
        return x * torch.sigmoid(1.702 * x)
    raise a.invalid(f"unknown gelu mode {mode!r}")


@register("leaky_relu")
def _leaky_relu(a: OpArgs) -> torch.Tensor:
    x = a.get("x")
    return torch.where(x < 0, x * a.get("alpha"), x)


@register("elu")
def _elu(a: OpArgs) -> torch.Tensor:
    # x if x > 0 else alpha (exp(x) - 1)
    x = a.get("x")
    return torch.where(x > 0, x, a.get("alpha") * torch.expm1(torch.clamp(x, max=0.0)))


@register("clamped_relu")
def _clamped_relu(a: OpArgs) -> torch.Tensor:
    # min(beta, x if x >= 0 else alpha x)
    x = a.get("x")
    return torch.minimum(torch.where(x >= 0, x, a.get("alpha") * x), a.get("beta"))


@register("linear_activation")
def _linear_activation(a: OpArgs) -> torch.Tensor:
    return a.get("alpha") * a.get("x") + a.get("beta")


@register("scaled_tanh")
def _scaled_tanh(a: OpArgs) -> torch.Tensor:
    return a.get("alpha") * torch.tanh(a.get("beta") * a.get("x"))


@register("sigmoid_hard")
def _sigmoid_hard(a: OpArgs) -> torch.Tensor:
    # min(max(alpha x + beta, 0), 1)
    return torch.clamp(a.get("alpha") * a.get("x") + a.get("beta"), 0.0, 1.0)


@register("thresholded_relu")
def _thresholded_relu(a: OpArgs) -> torch.Tensor:
    # x if x >= alpha else 0
    x = a.get("x")
    return torch.where(x >= a.get("alpha"), x, torch.zeros((), dtype=x.dtype))


@register("prelu")
def _prelu(a: OpArgs) -> torch.Tensor:
    # x: (B, C, *D), alpha: (C,) -- a slope per channel
    x = a.get("x")
    alpha = per_channel(a.get("alpha"), x.ndim)
    return torch.relu(x) + alpha * torch.clamp(x, max=0.0)


@register("softplus_parametric")
def _softplus_parametric(a: OpArgs) -> torch.Tensor:
    # x: (B, C, *D), alpha, beta: (C,) -- alpha log(1 + exp(beta x))
    x = a.get("x")
    alpha = per_channel(a.get("alpha"), x.ndim)
    z = per_channel(a.get("beta"), x.ndim) * x
    return alpha * (torch.log1p(torch.exp(-z.abs())) + torch.relu(z))


@register("softmax")
def _softmax(a: OpArgs) -> torch.Tensor:
    x = a.get("x")
    return torch.softmax(x, dim=norm_axis(a.int("axis", -1), x.ndim))

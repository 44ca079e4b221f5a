"""Merging the weights of linear layers: two convolutions into one, and a batch norm into a
convolution or a linear layer.

Convolution is associative: convolving an input with ``k1`` and then with ``k2`` equals
convolving it once with the full convolution ``k1 * k2`` of the two kernels. For PyTorch's
convolutions (cross-correlations over channels) the merged weight is

    K[o, c, t] = sum_m sum_{u, v : d1 u + s1 d2 v = t} W2[o, m, v] W1[m, c, u]

where ``W1: (M, C/g1, *a)`` is applied first with stride ``s1`` and dilation ``d1``, and
``W2: (O, M/g2, *b)`` second with dilation ``d2``. The second kernel is stretched by the first
stride; the merged conv has stride ``s1 s2``. These functions compute weights only; which
paddings and biases keep the merge exact is decided by :func:`ane_lib.nn.merge_convs`.

A batch norm in eval mode is a per-channel affine map ``x * scale + shift``, so it folds into the
conv before it (scale its output channels) or after it (scale its input channels).

All arithmetic is done in float64 and the results are cast back to the inputs' dtype, so a merged
float32 weight is the correctly rounded merge, not the product of rounded factors.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from ane_lib._checks import check_positive_int, check_tensor, int_tuple

__all__ = [
    "ComposedConv",
    "batchnorm_scale_shift",
    "compose_conv_weights",
    "dense_conv_weight",
    "fold_scale_shift_after",
    "fold_scale_shift_before",
    "merge_conv_kernels",
]

IntOrTuple = int | Sequence[int]


class ComposedConv(NamedTuple):
    """The single convolution equal to two in a row (see :func:`compose_conv_weights`).

    weight: ``(O, C/groups, *kernel)``; bias: ``(O,)`` or None; dilation: one int per spatial
    axis; groups: an int. Its stride is the product of the two strides.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None
    dilation: tuple[int, ...]
    groups: int


def _conv_weight(name: str, weight: object) -> torch.Tensor:
    check_tensor(name, weight)
    assert isinstance(weight, torch.Tensor)
    if weight.ndim not in (3, 4, 5):
        raise ValueError(
            f"{name} must be a conv weight (C_out, C_in/groups, *kernel) of rank 3, 4 or 5, "
            f"got shape {tuple(weight.shape)}"
        )
    if not weight.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {weight.dtype}")
    return weight


def _bias(name: str, bias: object, channels: int) -> torch.Tensor | None:
    if bias is None:
        return None
    check_tensor(name, bias)
    assert isinstance(bias, torch.Tensor)
    if tuple(bias.shape) != (channels,):
        raise ValueError(f"{name} must have shape ({channels},), got {tuple(bias.shape)}")
    return bias


def dense_conv_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """The weight of a grouped convolution written out as a dense one, zero between groups.

    weight: ``(O, C/g, *kernel)`` -> ``(O, C, *kernel)``, where block ``j`` of the output
    channels reads only block ``j`` of the input channels.
    """
    _conv_weight("weight", weight)
    g = check_positive_int("groups", groups)
    out, per_group = weight.shape[:2]
    if out % g:
        raise ValueError(f"groups={g} must divide the output channels {out} of weight")
    dense = weight.new_zeros((out, per_group * g, *weight.shape[2:]))
    rows = out // g
    for j in range(g):
        dense[j * rows : (j + 1) * rows, j * per_group : (j + 1) * per_group] = weight[
            j * rows : (j + 1) * rows
        ]
    return dense


def compose_conv_weights(
    weight1: torch.Tensor,
    weight2: torch.Tensor,
    *,
    bias1: torch.Tensor | None = None,
    bias2: torch.Tensor | None = None,
    stride1: IntOrTuple = 1,
    dilation1: IntOrTuple = 1,
    dilation2: IntOrTuple = 1,
    groups1: int = 1,
    groups2: int = 1,
) -> ComposedConv:
    """The weights of the one convolution equal to ``conv2(conv1(x))`` away from any padding.

    Args:
        weight1: ``(M, C/g1, *a)``, applied first with ``stride1``, ``dilation1``, ``groups1``.
        weight2: ``(O, M/g2, *b)``, applied second with ``dilation2``, ``groups2`` (its own
            stride does not enter the weights: the merged stride is ``stride1 * stride2``).
        bias1, bias2: ``(M,)`` and ``(O,)`` or None.

    Returns a :class:`ComposedConv`: the merged weight ``(O, C/G, *K)`` with ``G =
    gcd(g1, g2)`` groups, dilation ``D = gcd(d1, s1 d2)`` per axis and kernel ``K = (d1 (a - 1)
    + s1 d2 (b - 1)) / D + 1``; the merged bias ``b2 + sum_{m, v} W2[o, m, v] b1[m]`` (None when
    neither conv has one). The result equals the pair wherever the second conv reads no
    padding of its input; :func:`ane_lib.nn.merge_convs` checks the conditions for the rest.
    """
    w1 = _conv_weight("weight1", weight1)
    w2 = _conv_weight("weight2", weight2)
    if w1.ndim != w2.ndim:
        raise ValueError(
            f"weight1 and weight2 must have the same rank, got shapes {tuple(w1.shape)} and "
            f"{tuple(w2.shape)}"
        )
    n = w1.ndim - 2
    g1 = check_positive_int("groups1", groups1)
    g2 = check_positive_int("groups2", groups2)
    s1 = int_tuple("stride1", stride1, n)
    d1 = int_tuple("dilation1", dilation1, n)
    d2 = int_tuple("dilation2", dilation2, n)
    mid, in_per_group = w1.shape[:2]
    out = w2.shape[0]
    if mid % g1:
        raise ValueError(f"groups1={g1} must divide the output channels {mid} of weight1")
    if out % g2:
        raise ValueError(f"groups2={g2} must divide the output channels {out} of weight2")
    if w2.shape[1] * g2 != mid:
        raise ValueError(
            f"mismatched channels: conv1 produces {mid} channels but conv2 reads "
            f"{w2.shape[1] * g2} (weight2.shape[1]={w2.shape[1]} x groups2={g2})"
        )
    b1 = _bias("bias1", bias1, mid)
    b2 = _bias("bias2", bias2, out)
    dtype = w1.dtype
    for t in (w2, b1, b2):
        dtype = dtype if t is None else torch.promote_types(dtype, t.dtype)
    f64 = torch.float64

    # The merged kernel lives on the lattice of step D; the two kernels' taps sit every
    # step1 = d1 / D and step2 = s1 d2 / D lattice points.
    lattice = tuple(math.gcd(d, s * e) for d, s, e in zip(d1, s1, d2, strict=True))
    step1 = tuple(d // D for d, D in zip(d1, lattice, strict=True))
    step2 = tuple(s * e // D for s, e, D in zip(s1, d2, lattice, strict=True))
    a, b = tuple(w1.shape[2:]), tuple(w2.shape[2:])
    size = tuple(
        (x - 1) * p + (y - 1) * q + 1 for x, y, p, q in zip(a, b, step1, step2, strict=True)
    )
    channels = in_per_group * g1

    # Contract over the middle channels one conv1 group at a time (vectorised over groups):
    # conv1's group j maps input block j to middle block j, so the sum over m never needs the
    # dense (M, C) form of W1. W2 is made dense (O, M) since its groups may be coarser or finer.
    dense2 = dense_conv_weight(w2.to(f64), g2).reshape(out, g1, mid // g1, *b)
    blocks1 = w1.to(f64).reshape(g1, mid // g1, in_per_group, *a)
    merged = torch.zeros((out, g1, in_per_group, *size), dtype=f64, device=w1.device)
    for v in itertools.product(*(range(k) for k in b)):
        # (O, g1, M/g1) x (g1, M/g1, C/g1, *a) -> (O, g1, C/g1, *a)
        tap: tuple[Any, ...] = (..., *v)
        part = torch.einsum("ogm,gmc...->ogc...", dense2[tap], blocks1)
        window = tuple(
            slice(o * q, o * q + (x - 1) * p + 1, p)
            for o, q, x, p in zip(v, step2, a, step1, strict=True)
        )
        index: tuple[Any, ...] = (slice(None), slice(None), slice(None), *window)
        merged[index] += part
    merged = merged.reshape(out, channels, *size)

    # The merged conv has G = gcd(g1, g2) groups: output block j reads input block j only.
    groups = math.gcd(g1, g2)
    rows, cols = out // groups, channels // groups
    weight = torch.cat(
        [merged[j * rows : (j + 1) * rows, j * cols : (j + 1) * cols] for j in range(groups)]
    )

    bias: torch.Tensor | None = None
    if b1 is not None or b2 is not None:
        bias = torch.zeros(out, dtype=f64, device=w1.device)
        if b2 is not None:
            bias += b2.to(f64)
        if b1 is not None:
            # sum over v and m of W2[o, m, v] b1[m]
            tap_sums = dense_conv_weight(w2.to(f64), g2).flatten(2).sum(dim=2)
            bias += tap_sums @ b1.to(f64)
    return ComposedConv(
        weight=weight.to(dtype),
        bias=None if bias is None else bias.to(dtype),
        dilation=lattice,
        groups=groups,
    )


def merge_conv_kernels(k1: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
    """The kernel of the one convolution equal to convolving with ``k1`` and then with ``k2``.

    The case of the source note: stride 1, no dilation, no groups, no bias, and *full* padding
    on both convolutions (``k - 1`` on each side), under which the merge is exact at every
    output position. With ``k1: (M, C, a_h, a_w)`` and ``k2: (O, M, b_h, b_w)`` it returns
    ``(O, C, a_h + b_h - 1, a_w + b_w - 1)``: the full convolution of the kernels, summed over
    the middle channels, ``K[o, c] = sum_m k2[o, m] * k1[m, c]``.

    For strides, dilations, groups, biases and other paddings use
    :func:`ane_lib.nn.merge_convs`, which says when the merge is exact.
    """
    return compose_conv_weights(k1, k2).weight


def batchnorm_scale_shift(
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch norm in eval mode as ``x * scale + shift`` per channel.

    ``scale = weight / sqrt(running_var + eps)`` and ``shift = bias - running_mean * scale``
    (``weight`` 1 and ``bias`` 0 when the norm has no affine parameters). All ``(C,)``;
    returned in float64.
    """
    mean = check_tensor("running_mean", running_mean).to(torch.float64)
    var = check_tensor("running_var", running_var).to(torch.float64)
    if mean.ndim != 1 or mean.shape != var.shape:
        raise ValueError(
            f"running_mean and running_var must be (C,) of one shape, got {tuple(mean.shape)} "
            f"and {tuple(var.shape)}"
        )
    gamma = torch.ones_like(mean) if weight is None else weight.detach().to(torch.float64)
    beta = torch.zeros_like(mean) if bias is None else bias.detach().to(torch.float64)
    scale = gamma / torch.sqrt(var + eps)
    return scale, beta - mean * scale


def _affine(
    scale: torch.Tensor, shift: torch.Tensor, axis_size: int, axis: str
) -> tuple[torch.Tensor, torch.Tensor]:
    for name, t in (("scale", scale), ("shift", shift)):
        check_tensor(name, t)
        if tuple(t.shape) != (axis_size,):
            raise ValueError(
                f"{name} must have one value per {axis} channel ({axis_size},), got "
                f"{tuple(t.shape)}"
            )
    return scale.to(torch.float64), shift.to(torch.float64)


def fold_scale_shift_after(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    scale: torch.Tensor,
    shift: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold ``y * scale + shift``, applied to a conv's or linear layer's output, into it.

    weight: ``(O, ...)`` (a conv's ``(O, C/g, *kernel)`` or a linear layer's ``(O, I)``);
    bias ``(O,)`` or None; scale, shift ``(O,)``. Returns ``(weight * scale, bias * scale +
    shift)``, scaled along the output channels. Always exact.
    """
    check_tensor("weight", weight)
    out = weight.shape[0]
    s, t = _affine(scale, shift, out, "output")
    w = weight.detach().to(torch.float64) * s.reshape(-1, *([1] * (weight.ndim - 1)))
    b = t if bias is None else bias.detach().to(torch.float64) * s + t
    return w.to(weight.dtype), b.to(weight.dtype)


def fold_scale_shift_before(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    scale: torch.Tensor,
    shift: torch.Tensor,
    groups: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold ``x * scale + shift``, applied to a conv's or linear layer's input, into it.

    weight: ``(O, C/g, *kernel)`` or ``(O, C)``; scale, shift ``(C,)`` over the *input* channels.
    Returns ``W'[o, c] = W[o, c] * scale[c]`` and ``b'[o] = b[o] + sum_{c, t} W[o, c, t]
    shift[c]``. Exact only where the layer reads no padding: a padded border would hold zeros
    where the unfolded layer saw ``shift`` (:func:`ane_lib.nn.fold_batchnorm` checks that).
    """
    check_tensor("weight", weight)
    g = check_positive_int("groups", groups)
    out, per_group = weight.shape[:2]
    if out % g:
        raise ValueError(f"groups={g} must divide the output channels {out} of weight")
    s, t = _affine(scale, shift, per_group * g, "input")
    # output channel o of group j reads input channels j*C/g ... (j+1)*C/g - 1
    rows = torch.arange(out, device=weight.device) // (out // g)
    columns = rows[:, None] * per_group + torch.arange(per_group, device=weight.device)
    s_oc, t_oc = s[columns], t[columns]  # (O, C/g)
    w64 = weight.detach().to(torch.float64)
    w = w64 * s_oc.reshape(out, per_group, *([1] * (weight.ndim - 2)))
    # (a linear weight has no kernel axes to sum; torch's sum(dim=()) would sum everything)
    taps = w64.flatten(2).sum(dim=2) if weight.ndim > 2 else w64
    extra = (taps * t_oc).sum(dim=1)
    b = extra if bias is None else bias.detach().to(torch.float64) + extra
    return w.to(weight.dtype), b.to(weight.dtype)

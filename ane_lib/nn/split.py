"""Split a large or dilated convolution into a chain of smaller convolutions, exactly.

Apple's Neural Engine guidance calls large kernels and large dilations expensive and suggests
chains of small kernels (``k = k1 + k2 - 1``) and small dilations (2s and 3s) instead. Written
that way *before training*, a chain is a different model (it must be trained). Applied to a
trained conv, the rewrite can be made exact, and these functions do that:

- :func:`split_conv`: a ``k x k`` conv -> a chain of smaller kernels, e.g. ``[3, 3]`` for a 5x5
  or ``[(k, 1), (1, k)]``. The intermediate widths are the matrix ranks of the lifted kernel
  (:mod:`ane_lib.functional.split`): one channel per group for a kernel of matrix rank 1, up to
  ``C k`` channels for a general one.
- :func:`factor_dilation`: a conv with dilation ``d`` -> a chain of convs of the same kernel whose
  dilations (2s and 3s) *sum* to ``d`` (a chain of dilations 2, 2, 2 spans 13 pixels with 3x3
  kernels; a single dilation of 8 spans 17). Exact, with wider intermediate channels.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from torch.nn.modules.conv import _ConvNd

from ane_lib._checks import check_positive_int, int_tuple
from ane_lib.functional.split import IntOrTuple, split_conv_weight
from ane_lib.nn.merge import _check_conv, _new_conv, conv_padding

__all__ = ["dilation_factors", "factor_dilation", "split_conv"]


def split_conv(
    conv: _ConvNd,
    kernel_sizes: Sequence[IntOrTuple],
    dilations: Sequence[IntOrTuple] | None = None,
    *,
    rtol: float | None = None,
) -> nn.Sequential:
    """An ``nn.Sequential`` of convs, with no nonlinearity between them, equal to ``conv``.

    Args:
        conv: an ``nn.Conv1d/2d/3d`` (any stride, padding, groups, bias).
        kernel_sizes: the kernel of each conv of the chain in data order (int or per axis).
            Their spans must add up to the conv's: ``sum(e_i (k_i - 1)) = d (k - 1)``.
        dilations: the dilation of each conv of the chain (default: the conv's own dilation).
        rtol: relative tolerance of the rank decisions (see
            :func:`ane_lib.functional.split_conv_weight`).

    The first conv of the chain carries the padding (and padding mode), the last one the stride
    and the bias; all keep the conv's groups. Intermediate widths are ``groups`` times the
    matrix rank at each step. ``merge_chain(split_conv(conv, ...))`` gives back ``conv``'s
    weights. Raises ValueError when the spans differ, a tap is out of the chain's reach, or the
    conv's padding is asymmetric ('same' with an even kernel).
    """
    c = _check_conv("conv", conv)
    pads = conv_padding(c)
    n = len(c.kernel_size)
    if any(left != right for left, right in pads):
        raise ValueError(
            f"conv's padding {c.padding!r} is asymmetric {pads}; the first conv of the chain "
            "would need it with another kernel size, which nn.ConvNd cannot express"
        )
    stages = split_conv_weight(
        c.weight.detach(),
        kernel_sizes,
        dilations,
        dilation=c.dilation,
        groups=c.groups,
        rtol=rtol,
    )
    bias = None if c.bias is None else c.bias.detach()
    modules: list[nn.Module] = []
    for i, stage in enumerate(stages):
        first, last = i == 0, i == len(stages) - 1
        modules.append(
            _new_conv(
                c,
                stage.weight,
                bias if last else None,
                stride=c.stride if last else (1,) * n,
                padding=tuple(left for left, _ in pads) if first else (0,) * n,
                dilation=stage.dilation,
                groups=c.groups,
                padding_mode=c.padding_mode if first else "zeros",
            )
        )
    return nn.Sequential(*modules)


def dilation_factors(dilation: int) -> list[int]:
    """Dilations of 2 and 3 that add up to ``dilation`` (>= 2): all 3s when 3 divides it, else
    all 2s when 2 does, else 3s and one or two 2s.

    >>> dilation_factors(6), dilation_factors(8), dilation_factors(7)
    ([3, 3], [2, 2, 2, 2], [3, 2, 2])
    """
    d = check_positive_int("dilation", dilation)
    if d < 2:
        raise ValueError(f"dilation must be >= 2 to be factored, got {d}")
    if d % 3 == 0:
        return [3] * (d // 3)
    if d % 2 == 0:
        return [2] * (d // 2)
    threes, rest = divmod(d, 3)
    return [3] * threes + [2] if rest == 2 else [3] * (threes - 1) + [2, 2]


def factor_dilation(
    conv: _ConvNd,
    dilations: Sequence[IntOrTuple] | None = None,
    *,
    rtol: float | None = None,
) -> nn.Sequential:
    """Rewrite a dilated conv as a chain of convs with small dilations, exactly.

    Every conv of the chain has ``conv``'s kernel; their dilations (default:
    :func:`dilation_factors` of the conv's dilation, which must be the same on every axis)
    must add up to the conv's dilation on each axis with a kernel longer than 1, so that the
    chain spans the same pixels. A chain whose dilations *multiply* to ``d`` (three dilation-2
    3x3 convs for a dilation of 8) spans fewer pixels and is a different model, to be trained
    as such. Raises ValueError when the dilations do not add up or reach every tap.
    """
    c = _check_conv("conv", conv)
    n = len(c.kernel_size)
    if dilations is None:
        # axes with a 1-tap kernel do not care about their dilation
        wide = {d for d, k in zip(c.dilation, c.kernel_size, strict=True) if k > 1}
        if len(wide) != 1:
            raise ValueError(
                f"conv has dilation={c.dilation} with kernel_size={c.kernel_size}: pass "
                "dilations= explicitly, one entry (an int or one per axis) per conv of the chain"
            )
        dilations = dilation_factors(wide.pop())
    es = [int_tuple(f"dilations[{i}]", e, n) for i, e in enumerate(dilations)]
    for axis in range(n):
        total = sum(e[axis] for e in es)
        if c.kernel_size[axis] > 1 and total != c.dilation[axis]:
            raise ValueError(
                f"dilations {[e[axis] for e in es]} on axis {axis} add up to {total}, not to the "
                f"conv's dilation {c.dilation[axis]}: with equal kernels the chain spans the same "
                "pixels only when its dilations add up to the conv's"
            )
    return split_conv(c, [c.kernel_size] * len(es), es, rtol=rtol)

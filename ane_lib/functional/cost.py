"""Parameter and multiply-accumulate counts for the convolution family, and a counter that
measures them on real modules.

A convolution layer with input ``(B, C, *spatial)``, ``groups = g`` and a kernel of ``K``
elements computes every output element as a sum of ``(C/g) * K`` products, so it costs

    MACs = (number of output elements) * (C/g) * K,    params = C' * (C/g) * K  (+ C' with a bias).

Every family cost below is a sum of such layer costs, one per stage of the matching function in
:mod:`ane_lib.functional.family` (the stages are stride 1 except where the stride is carried).
Biases add parameters but no multiplications; additions of biases are not counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import nn

from ane_lib._checks import check_divides, check_positive_int, int_tuple
from ane_lib.functional.conv import conv_output_size

__all__ = [
    "Cost",
    "conv_cost",
    "conv2d_cost",
    "conv1x1_cost",
    "depthwise_conv2d_cost",
    "depthwise_separable_conv2d_cost",
    "spatially_separable_conv2d_cost",
    "asymmetric_conv2d_cost",
    "flattened_conv2d_cost",
    "grouped_conv2d_cost",
    "pointwise_grouped_conv2d_cost",
    "count_conv_cost",
]

IntTuple = int | Sequence[int]


@dataclass(frozen=True)
class Cost:
    """Parameters and multiply-accumulates (MACs) of a layer or a sequence of layers."""

    params: int
    macs: int

    def __add__(self, other: Cost) -> Cost:
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(self.params + other.params, self.macs + other.macs)

    def params_ratio(self, reference: Cost) -> Fraction:
        """``self.params / reference.params`` as an exact fraction."""
        return Fraction(self.params, reference.params)

    def macs_ratio(self, reference: Cost) -> Fraction:
        """``self.macs / reference.macs`` as an exact fraction."""
        return Fraction(self.macs, reference.macs)


def _output_shape(
    input_size: Sequence[int],
    kernel_size: IntTuple,
    stride: IntTuple = 1,
    padding: IntTuple = 0,
    dilation: IntTuple = 1,
) -> tuple[int, ...]:
    """Spatial output size of a convolution: ``(n + 2p - d(k - 1) - 1) // s + 1`` per axis.

    input_size: the spatial sizes, e.g. ``(H, W)``; the other arguments are ints or one value
    per spatial axis. Raises ValueError if a dilated kernel does not fit the padded input.
    """
    if isinstance(input_size, int) or not isinstance(input_size, Sequence):
        raise TypeError(f"input_size must be a sequence of ints, got {input_size!r}")
    n = len(input_size)
    sizes = int_tuple("input_size", input_size, n, minimum=1)
    ks = int_tuple("kernel_size", kernel_size, n, minimum=1)
    ss = int_tuple("stride", stride, n, minimum=1)
    ps = int_tuple("padding", padding, n, minimum=0)
    ds = int_tuple("dilation", dilation, n, minimum=1)
    # one formula for the whole library: conv.conv_output_size (it also rejects a kernel that
    # does not fit the padded input, naming the sizes)
    out = [
        conv_output_size(size, k, s, p, d)
        for size, k, s, p, d in zip(sizes, ks, ss, ps, ds, strict=True)
    ]
    return tuple(out)


def conv_cost(
    batch: int,
    in_channels: int,
    out_channels: int,
    input_size: Sequence[int],
    kernel_size: IntTuple,
    *,
    stride: IntTuple = 1,
    padding: IntTuple = 0,
    dilation: IntTuple = 1,
    groups: int = 1,
    bias: bool = False,
) -> Cost:
    """Cost of one 1D/2D/3D convolution (the dimension is ``len(input_size)``).

    params = C' (C/g) prod(kernel) (+ C'), MACs = B C' prod(output size) (C/g) prod(kernel).
    """
    B = check_positive_int("batch", batch)
    C = check_positive_int("in_channels", in_channels)
    O = check_positive_int("out_channels", out_channels)
    g = check_positive_int("groups", groups)
    check_divides("groups", g, "in_channels", C)
    check_divides("groups", g, "out_channels", O)
    out_size = _output_shape(input_size, kernel_size, stride, padding, dilation)
    kernel = math.prod(int_tuple("kernel_size", kernel_size, len(out_size)))
    weights = O * (C // g) * kernel
    return Cost(
        params=weights + (O if bias else 0),
        macs=B * math.prod(out_size) * weights,
    )


def conv2d_cost(
    batch: int,
    in_channels: int,
    out_channels: int,
    height: int,
    width: int,
    kernel_size: IntTuple,
    *,
    stride: IntTuple = 1,
    padding: IntTuple = 0,
    bias: bool = False,
) -> Cost:
    """A full k x l convolution C -> C': params C' C k l, MACs B H' W' C' C k l.

    :func:`grouped_conv2d_cost` with one group.
    """
    return grouped_conv2d_cost(
        batch,
        in_channels,
        out_channels,
        height,
        width,
        kernel_size,
        1,
        stride=stride,
        padding=padding,
        bias=bias,
    )


def conv1x1_cost(
    batch: int, in_channels: int, out_channels: int, height: int, width: int, *, bias: bool = False
) -> Cost:
    """A 1x1 convolution C -> C': params C' C, MACs B H W C' C.

    :func:`pointwise_grouped_conv2d_cost` with one group.
    """
    return pointwise_grouped_conv2d_cost(
        batch, in_channels, out_channels, height, width, 1, bias=bias
    )


def depthwise_conv2d_cost(
    batch: int,
    channels: int,
    height: int,
    width: int,
    kernel_size: IntTuple,
    *,
    stride: IntTuple = 1,
    padding: IntTuple = 0,
    depth_multiplier: int = 1,
) -> Cost:
    """A depthwise k x l convolution C -> C m: params C m k l, MACs B H' W' C m k l.

    :func:`grouped_conv2d_cost` with ``g = C`` groups and ``C m`` outputs.
    """
    m = check_positive_int("depth_multiplier", depth_multiplier)
    C = check_positive_int("channels", channels)
    return grouped_conv2d_cost(
        batch, C, C * m, height, width, kernel_size, C, stride=stride, padding=padding
    )


def depthwise_separable_conv2d_cost(
    batch: int,
    in_channels: int,
    out_channels: int,
    height: int,
    width: int,
    kernel_size: IntTuple,
    *,
    stride: IntTuple = 1,
    padding: IntTuple = 0,
    depth_multiplier: int = 1,
) -> Cost:
    """Depthwise k x l then 1x1: params C m (k l + C'), MACs B H' W' C m (k l + C')."""
    depthwise = depthwise_conv2d_cost(
        batch,
        in_channels,
        height,
        width,
        kernel_size,
        stride=stride,
        padding=padding,
        depth_multiplier=depth_multiplier,
    )
    H_out, W_out = _output_shape((height, width), kernel_size, stride, padding)
    return depthwise + conv1x1_cost(
        batch, in_channels * depth_multiplier, out_channels, H_out, W_out
    )


def _columns_then_rows(
    batch: int,
    height: int,
    width: int,
    kernel_size: IntTuple,
    stride: IntTuple,
    padding: IntTuple,
    columns: tuple[int, int, int],
    rows: tuple[int, int, int],
) -> Cost:
    """A k x 1 convolution on ``(H, W)`` carrying the vertical stride and padding, then a 1 x l
    convolution on its ``(H', W)`` output carrying the horizontal ones.

    ``columns`` and ``rows`` are ``(in_channels, out_channels, groups)`` of the two stages.
    """
    k, l = int_tuple("kernel_size", kernel_size, 2)
    s = int_tuple("stride", stride, 2)
    p = int_tuple("padding", padding, 2, minimum=0)
    H_out, _ = _output_shape((height, width), (k, l), s, p)
    (c_in, c_mid, g1), (r_in, r_out, g2) = columns, rows
    first = conv_cost(
        batch, c_in, c_mid, (height, width), (k, 1), stride=(s[0], 1), padding=(p[0], 0), groups=g1
    )
    second = conv_cost(
        batch, r_in, r_out, (H_out, width), (1, l), stride=(1, s[1]), padding=(0, p[1]), groups=g2
    )
    return first + second


def spatially_separable_conv2d_cost(
    batch: int,
    in_channels: int,
    out_channels: int,
    height: int,
    width: int,
    kernel_size: IntTuple,
    *,
    stride: IntTuple = 1,
    padding: IntTuple = 0,
) -> Cost:
    """Rank-1 kernel slices, k x 1 then 1 x l, keeping both channel axes in between.

    params = C C' (k + l); MACs = B C C' H' (W k + W' l) — the first stage runs over every
    input column (W), the second over the output columns (W').
    """
    C = check_positive_int("in_channels", in_channels)
    O = check_positive_int("out_channels", out_channels)
    # stage 1 is a grouped conv C -> C C' (groups=C), stage 2 a grouped conv C' C -> C'
    return _columns_then_rows(
        batch, height, width, kernel_size, stride, padding, (C, C * O, C), (O * C, O, O)
    )


def asymmetric_conv2d_cost(
    batch: int,
    in_channels: int,
    out_channels: int,
    height: int,
    width: int,
    kernel_size: IntTuple,
    *,
    mid_channels: int | None = None,
    stride: IntTuple = 1,
    padding: IntTuple = 0,
) -> Cost:
    """A full k x 1 conv C -> M, then a full 1 x l conv M -> C' (M defaults to C').

    params = M C k + C' M l; MACs = B H' (W M C k + W' C' M l).
    """
    M = out_channels if mid_channels is None else check_positive_int("mid_channels", mid_channels)
    return _columns_then_rows(
        batch,
        height,
        width,
        kernel_size,
        stride,
        padding,
        (in_channels, M, 1),
        (M, out_channels, 1),
    )


def flattened_conv2d_cost(
    batch: int,
    in_channels: int,
    out_channels: int,
    height: int,
    width: int,
    kernel_size: IntTuple,
    *,
    stride: IntTuple = 1,
    padding: IntTuple = 0,
) -> Cost:
    """1x1 C -> C', depthwise k x 1, depthwise 1 x l.

    params = C' (C + k + l); MACs = B C' (H W C + H' W k + H' W' l).
    """
    O = check_positive_int("out_channels", out_channels)
    channel = conv1x1_cost(batch, in_channels, O, height, width)
    depthwise = (O, O, O)  # each stage: O channels, one group each
    return channel + _columns_then_rows(
        batch, height, width, kernel_size, stride, padding, depthwise, depthwise
    )


def grouped_conv2d_cost(
    batch: int,
    in_channels: int,
    out_channels: int,
    height: int,
    width: int,
    kernel_size: IntTuple,
    groups: int,
    *,
    stride: IntTuple = 1,
    padding: IntTuple = 0,
    bias: bool = False,
) -> Cost:
    """A grouped k x l conv: params C' (C/g) k l, MACs B H' W' C' (C/g) k l — 1/g of full."""
    return conv_cost(
        batch,
        in_channels,
        out_channels,
        (height, width),
        kernel_size,
        stride=stride,
        padding=padding,
        groups=groups,
        bias=bias,
    )


def pointwise_grouped_conv2d_cost(
    batch: int,
    in_channels: int,
    out_channels: int,
    height: int,
    width: int,
    groups: int,
    *,
    bias: bool = False,
) -> Cost:
    """A grouped 1x1 conv: params C' C / g, MACs B H W C' C / g.

    :func:`grouped_conv2d_cost` with a 1 x 1 kernel.
    """
    return grouped_conv2d_cost(
        batch, in_channels, out_channels, height, width, 1, groups, bias=bias
    )


_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def count_conv_cost(module: nn.Module, input_shape: Sequence[int]) -> Cost:
    """Measure a module's cost by running it: every parameter, and the MACs of its convolutions.

    A forward pass on zeros of ``input_shape`` (e.g. ``(B, C, H, W)``) records, for each
    ``nn.Conv1d/2d/3d`` and ``nn.Linear`` it calls, ``output.numel() * (in_channels/groups) *
    prod(kernel_size)`` (``output.numel() * in_features`` for a linear layer). ``params`` is the
    number of elements of ``module.parameters()``. The module is run in eval mode under
    ``torch.no_grad()`` and its training flag is restored.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if isinstance(input_shape, int) or not isinstance(input_shape, Sequence):
        raise TypeError(f"input_shape must be a sequence of ints, got {input_shape!r}")
    shape = int_tuple("input_shape", input_shape, len(input_shape), minimum=1)

    macs = 0

    def record(layer: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(layer, _CONV_TYPES):
            macs += (
                output.numel() * (layer.in_channels // layer.groups) * math.prod(layer.kernel_size)
            )
        else:
            assert isinstance(layer, nn.Linear)
            macs += output.numel() * layer.in_features

    hooks = [
        layer.register_forward_hook(record)
        for layer in module.modules()
        if isinstance(layer, (*_CONV_TYPES, nn.Linear))
    ]
    first = next(module.parameters(), None)
    dtype = first.dtype if first is not None else torch.float32
    device = first.device if first is not None else torch.device("cpu")
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(shape, dtype=dtype, device=device))
    finally:
        module.train(was_training)
        for hook in hooks:
            hook.remove()
    params = sum(p.numel() for p in module.parameters())
    return Cost(params=params, macs=macs)

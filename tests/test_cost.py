"""Analytic costs of the family against counts measured on real torch modules."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ane_lib.functional.cost import (
    Cost,
    asymmetric_conv2d_cost,
    conv1x1_cost,
    conv2d_cost,
    conv_cost,
    count_conv_cost,
    depthwise_conv2d_cost,
    depthwise_separable_conv2d_cost,
    flattened_conv2d_cost,
    grouped_conv2d_cost,
    pointwise_grouped_conv2d_cost,
    spatially_separable_conv2d_cost,
)
from ane_lib.functional.family import (
    asymmetric_conv2d,
    depthwise_separable_conv2d,
    flattened_conv2d,
    grouped_conv2d,
    pointwise_grouped_conv2d,
    spatially_separable_conv2d,
)

D = torch.float64
SWEEP = settings(max_examples=30, deadline=None)


@st.composite
def layer(draw: st.DrawFn) -> dict:
    """Shapes of one layer: batch, size, a k x l kernel that fits, stride, padding."""
    k = draw(st.integers(1, 4))
    l = draw(st.integers(1, 4))
    ph = draw(st.integers(0, 2))
    pw = draw(st.integers(0, 2))
    return {
        "B": draw(st.integers(1, 2)),
        "C": draw(st.integers(1, 5)),
        "O": draw(st.integers(1, 5)),
        "H": draw(st.integers(max(1, k - 2 * ph), 8)),
        "W": draw(st.integers(max(1, l - 2 * pw), 8)),
        "k": k,
        "l": l,
        "stride": (draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        "padding": (ph, pw),
    }


def conv(
    weight: torch.Tensor,
    *,
    stride: object = 1,
    padding: object = 0,
    groups: int = 1,
    bias: torch.Tensor | None = None,
) -> nn.Conv2d:
    """An nn.Conv2d holding exactly ``weight`` (torch layout (C', C/g, k, l))."""
    out, per_group, k, l = weight.shape
    module = nn.Conv2d(
        per_group * groups,
        out,
        (k, l),
        stride=stride,
        padding=padding,
        groups=groups,
        bias=bias is not None,
        dtype=D,
    )
    with torch.no_grad():
        module.weight.copy_(weight)
        if bias is not None:
            module.bias.copy_(bias)
    return module


def check(module: nn.Module, x: torch.Tensor, expected_output: torch.Tensor, cost: Cost) -> None:
    """The module computes the family function's output, and its measured cost is ``cost``."""
    with torch.no_grad():
        torch.testing.assert_close(module(x), expected_output, atol=1e-10, rtol=0)
    assert count_conv_cost(module, tuple(x.shape)) == cost


def randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=D)


# ---------------------------------------------------------------- analytic == measured


@SWEEP
@given(s=layer(), with_bias=st.booleans())
def test_full_conv2d_cost(s: dict, with_bias: bool) -> None:
    x = randn(s["B"], s["C"], s["H"], s["W"])
    weight = randn(s["O"], s["C"], s["k"], s["l"])
    bias = randn(s["O"]) if with_bias else None
    module = conv(weight, stride=s["stride"], padding=s["padding"], bias=bias)
    expected = F.conv2d(x, weight, bias, stride=s["stride"], padding=s["padding"])
    cost = conv2d_cost(
        s["B"], s["C"], s["O"], s["H"], s["W"], (s["k"], s["l"]),
        stride=s["stride"], padding=s["padding"], bias=with_bias,
    )  # fmt: skip
    check(module, x, expected, cost)


@SWEEP
@given(s=layer(), with_bias=st.booleans())
def test_conv1x1_cost(s: dict, with_bias: bool) -> None:
    x = randn(s["B"], s["C"], s["H"], s["W"])
    weight = randn(s["O"], s["C"], 1, 1)
    bias = randn(s["O"]) if with_bias else None
    cost = conv1x1_cost(s["B"], s["C"], s["O"], s["H"], s["W"], bias=with_bias)
    check(conv(weight, bias=bias), x, F.conv2d(x, weight, bias), cost)
    assert cost == Cost(
        s["O"] * s["C"] + (s["O"] if with_bias else 0), s["B"] * s["H"] * s["W"] * s["O"] * s["C"]
    )


@SWEEP
@given(s=layer(), m=st.integers(1, 3))
def test_depthwise_separable_conv2d_cost(s: dict, m: int) -> None:
    B, C, O, k, l = s["B"], s["C"], s["O"], s["k"], s["l"]
    x = randn(B, C, s["H"], s["W"])
    depthwise, pointwise = randn(C * m, 1, k, l), randn(O, C * m, 1, 1)
    module = nn.Sequential(
        conv(depthwise, stride=s["stride"], padding=s["padding"], groups=C), conv(pointwise)
    )
    expected = depthwise_separable_conv2d(x, depthwise, pointwise, s["stride"], s["padding"])
    cost = depthwise_separable_conv2d_cost(
        B, C, O, s["H"], s["W"], (k, l),
        stride=s["stride"], padding=s["padding"], depth_multiplier=m,
    )  # fmt: skip
    check(module, x, expected, cost)
    depthwise_only = depthwise_conv2d_cost(
        B, C, s["H"], s["W"], (k, l), stride=s["stride"], padding=s["padding"], depth_multiplier=m
    )
    assert count_conv_cost(module[0], tuple(x.shape)) == depthwise_only


@SWEEP
@given(s=layer())
def test_spatially_separable_conv2d_cost(s: dict) -> None:
    B, C, O, k, l = s["B"], s["C"], s["O"], s["k"], s["l"]
    (sh, sw), (ph, pw) = s["stride"], s["padding"]
    x = randn(B, C, s["H"], s["W"])
    vertical, horizontal = randn(O, C, k, 1), randn(O, C, 1, l)
    module = nn.Sequential(
        conv(
            vertical.transpose(0, 1).reshape(C * O, 1, k, 1),
            stride=(sh, 1),
            padding=(ph, 0),
            groups=C,
        ),
        nn.ChannelShuffle(C),
        conv(horizontal.reshape(O, C, 1, l), stride=(1, sw), padding=(0, pw), groups=O),
    )
    expected = spatially_separable_conv2d(x, vertical, horizontal, s["stride"], s["padding"])
    cost = spatially_separable_conv2d_cost(
        B, C, O, s["H"], s["W"], (k, l), stride=s["stride"], padding=s["padding"]
    )
    check(module, x, expected, cost)


@SWEEP
@given(s=layer(), M=st.integers(1, 5))
def test_asymmetric_conv2d_cost(s: dict, M: int) -> None:
    B, C, O, k, l = s["B"], s["C"], s["O"], s["k"], s["l"]
    (sh, sw), (ph, pw) = s["stride"], s["padding"]
    x = randn(B, C, s["H"], s["W"])
    vertical, horizontal = randn(M, C, k, 1), randn(O, M, 1, l)
    module = nn.Sequential(
        conv(vertical, stride=(sh, 1), padding=(ph, 0)),
        conv(horizontal, stride=(1, sw), padding=(0, pw)),
    )
    expected = asymmetric_conv2d(x, vertical, horizontal, s["stride"], s["padding"])
    cost = asymmetric_conv2d_cost(
        B, C, O, s["H"], s["W"], (k, l), mid_channels=M, stride=s["stride"], padding=s["padding"]
    )
    check(module, x, expected, cost)


@SWEEP
@given(s=layer())
def test_flattened_conv2d_cost(s: dict) -> None:
    B, C, O, k, l = s["B"], s["C"], s["O"], s["k"], s["l"]
    (sh, sw), (ph, pw) = s["stride"], s["padding"]
    x = randn(B, C, s["H"], s["W"])
    channel, vertical, horizontal = randn(O, C, 1, 1), randn(O, 1, k, 1), randn(O, 1, 1, l)
    module = nn.Sequential(
        conv(channel),
        conv(vertical, stride=(sh, 1), padding=(ph, 0), groups=O),
        conv(horizontal, stride=(1, sw), padding=(0, pw), groups=O),
    )
    expected = flattened_conv2d(x, channel, vertical, horizontal, s["stride"], s["padding"])
    cost = flattened_conv2d_cost(
        B, C, O, s["H"], s["W"], (k, l), stride=s["stride"], padding=s["padding"]
    )
    check(module, x, expected, cost)


@SWEEP
@given(s=layer(), g=st.integers(1, 4), with_bias=st.booleans())
def test_grouped_costs(s: dict, g: int, with_bias: bool) -> None:
    B, C, O, k, l = s["B"], s["C"] * g, s["O"] * g, s["k"], s["l"]
    x = randn(B, C, s["H"], s["W"])
    weight = randn(O, C // g, k, l)
    bias = randn(O) if with_bias else None
    module = conv(weight, stride=s["stride"], padding=s["padding"], groups=g, bias=bias)
    expected = grouped_conv2d(x, weight, g, bias, s["stride"], s["padding"])
    cost = grouped_conv2d_cost(
        B, C, O, s["H"], s["W"], (k, l), g,
        stride=s["stride"], padding=s["padding"], bias=with_bias,
    )  # fmt: skip
    check(module, x, expected, cost)
    pointwise = randn(O, C // g, 1, 1)
    check(
        conv(pointwise, groups=g, bias=bias),
        x,
        pointwise_grouped_conv2d(x, pointwise, g, bias),
        pointwise_grouped_conv2d_cost(B, C, O, s["H"], s["W"], g, bias=with_bias),
    )


@settings(max_examples=25, deadline=None)
@given(
    dims=st.integers(1, 3),
    data=st.data(),
    g=st.integers(1, 3),
    with_bias=st.booleans(),
)
def test_conv_cost_in_1d_2d_3d_with_dilation(
    dims: int, data: st.DataObject, g: int, with_bias: bool
) -> None:
    kernel = tuple(data.draw(st.integers(1, 3)) for _ in range(dims))
    dilation = tuple(data.draw(st.integers(1, 2)) for _ in range(dims))
    padding = tuple(data.draw(st.integers(0, 2)) for _ in range(dims))
    stride = tuple(data.draw(st.integers(1, 2)) for _ in range(dims))
    size = tuple(
        data.draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), 6))
        for k, d, p in zip(kernel, dilation, padding, strict=True)
    )
    C, O, B = g * data.draw(st.integers(1, 3)), g * data.draw(st.integers(1, 3)), 2
    # the measured MACs include output.numel(), so they also check the output size formula
    module = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1](
        C, O, kernel, stride, padding, dilation, groups=g, bias=with_bias, dtype=D
    )
    cost = conv_cost(
        B, C, O, size, kernel,
        stride=stride, padding=padding, dilation=dilation, groups=g, bias=with_bias,
    )  # fmt: skip
    assert count_conv_cost(module, (B, C, *size)) == cost
    # an independent reference: torch's own FLOP counter (2 FLOPs per multiply-accumulate)
    with FlopCounterMode(display=False) as flops:
        module(torch.zeros(B, C, *size, dtype=D))
    assert flops.get_total_flops() == 2 * cost.macs
    assert sum(p.numel() for p in module.parameters()) == cost.params


def test_count_conv_cost_counts_linear_layers_and_every_parameter() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )
    model.train()
    cost = count_conv_cost(model, (4, 3, 6, 6))
    assert model.training  # the flag is restored after the eval-mode pass
    conv_part = conv2d_cost(4, 3, 8, 6, 6, 3, padding=1, bias=True)
    assert cost.macs == conv_part.macs + 4 * 5 * 8
    assert cost.params == conv_part.params + 2 * 8 + (8 * 5 + 5)


# ---------------------------------------------------------------- closed-form ratios


ratios = given(
    C=st.integers(1, 512),
    O=st.integers(1, 512),
    k=st.sampled_from([1, 3, 5, 7]),
    l=st.sampled_from([1, 3, 5, 7]),
    H=st.integers(7, 64),
    B=st.integers(1, 4),
)


@settings(max_examples=60, deadline=None)
@ratios
def test_cost_ratios_to_a_full_conv_with_same_padding(
    C: int, O: int, k: int, l: int, H: int, B: int
) -> None:
    same = ((k - 1) // 2, (l - 1) // 2)
    full = conv2d_cost(B, C, O, H, H, (k, l), padding=same)
    ds = depthwise_separable_conv2d_cost(B, C, O, H, H, (k, l), padding=same)
    ss = spatially_separable_conv2d_cost(B, C, O, H, H, (k, l), padding=same)
    fl = flattened_conv2d_cost(B, C, O, H, H, (k, l), padding=same)
    asym = asymmetric_conv2d_cost(B, C, O, H, H, (k, l), padding=same)
    for cost, ratio in [
        (ds, Fraction(1, O) + Fraction(1, k * l)),
        (ss, Fraction(1, k) + Fraction(1, l)),
        (fl, Fraction(1, k * l) + Fraction(1, C * l) + Fraction(1, C * k)),
        (asym, Fraction(1, l) + Fraction(O, C * k)),
    ]:
        assert cost.params_ratio(full) == ratio
        assert cost.macs_ratio(full) == ratio  # the spatial size cancels with 'same' padding


@settings(max_examples=40, deadline=None)
@given(g=st.integers(1, 8), C=st.integers(1, 16), O=st.integers(1, 16), k=st.integers(1, 5))
def test_grouping_divides_the_cost_by_g(g: int, C: int, O: int, k: int) -> None:
    full = conv2d_cost(2, C * g, O * g, 9, 9, k)
    grouped = grouped_conv2d_cost(2, C * g, O * g, 9, 9, k, g)
    assert grouped.params_ratio(full) == grouped.macs_ratio(full) == Fraction(1, g)
    pointwise = pointwise_grouped_conv2d_cost(2, C * g, O * g, 9, 9, g)
    assert pointwise.macs_ratio(conv1x1_cost(2, C * g, O * g, 9, 9)) == Fraction(1, g)


def test_cost_addition() -> None:
    assert Cost(1, 2) + Cost(3, 4) == Cost(4, 6)
    with pytest.raises(TypeError, match=r"Cost.*int"):
        Cost(1, 2) + 3  # noqa: B018


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: conv2d_cost(0, 3, 4, 8, 8, 3), ValueError, r"batch.*\b0\b"),
        (lambda: conv2d_cost(1, 3.0, 4, 8, 8, 3), TypeError, r"in_channels must be an int"),
        (
            lambda: conv2d_cost(1, 3, 4, 8, 8, 9),
            ValueError,
            r"size=8.*span",
        ),
        (lambda: conv2d_cost(1, 3, 4, 8, 8, (3, 3, 3)), ValueError, r"kernel_size must be"),
        (lambda: conv2d_cost(1, 3, 4, 8, 8, 3, padding=-1), ValueError, r"padding must be >= 0"),
        (
            lambda: grouped_conv2d_cost(1, 6, 4, 8, 8, 3, 4),
            ValueError,
            r"groups=4.*in_channels=6",
        ),
        (
            lambda: pointwise_grouped_conv2d_cost(1, 6, 4, 8, 8, 3),
            ValueError,
            r"groups=3.*out_channels=4",
        ),
        (
            lambda: depthwise_separable_conv2d_cost(1, 3, 4, 8, 8, 3, depth_multiplier=0),
            ValueError,
            r"depth_multiplier must be >= 1",
        ),
        (
            lambda: asymmetric_conv2d_cost(1, 3, 4, 8, 8, 3, mid_channels=0),
            ValueError,
            r"mid_channels must be >= 1",
        ),
        (lambda: conv_cost(1, 3, 4, 8, 3), TypeError, r"input_size must be a sequence"),
        (lambda: count_conv_cost("conv", (1, 3, 8, 8)), TypeError, r"module must be a torch"),
        (
            lambda: count_conv_cost(nn.Conv2d(3, 4, 3), 8),
            TypeError,
            r"input_shape must be a sequence",
        ),
    ],
)
def test_bad_arguments_are_named(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()

"""The separable and grouped family against torch references built from F.conv2d."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ane_lib.functional.family import (
    asymmetric_conv2d,
    block_diagonal_weight,
    channel_shuffle,
    channel_shuffle_permutation,
    conv1x1,
    conv1x1_filter,
    conv1x1_scalar,
    depthwise_conv2d,
    depthwise_separable_conv2d,
    flattened_conv2d,
    grouped_conv2d,
    pointwise_grouped_conv2d,
    spatially_separable_conv2d,
)

D = torch.float64
ATOL = 1e-10
FAST = settings(max_examples=40, deadline=None)


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=D, generator=torch.Generator().manual_seed(seed))


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


@st.composite
def spatial(draw: st.DrawFn) -> dict[str, object]:
    """A stride-1-or-more, padded k x l setting whose kernel fits the padded input."""
    k = draw(st.integers(1, 4))
    l = draw(st.integers(1, 4))
    ph = draw(st.integers(0, 2))
    pw = draw(st.integers(0, 2))
    H = draw(st.integers(max(1, k - 2 * ph), 8))
    W = draw(st.integers(max(1, l - 2 * pw), 8))
    return {
        "B": draw(st.integers(1, 2)),
        "H": H,
        "W": W,
        "k": k,
        "l": l,
        "stride": (draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        "padding": (ph, pw),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


channels = st.integers(1, 5)


# -------------------------------------------------------------------------------- 1x1 forms


@FAST
@given(B=st.integers(1, 3), H=st.integers(1, 6), W=st.integers(1, 6), seed=st.integers(0, 999))
def test_conv1x1_scalar_is_a_one_channel_1x1_conv(B: int, H: int, W: int, seed: int) -> None:
    x = randn(B, 1, H, W, seed=seed)
    scale = randn(1, seed=seed + 1)
    reference = F.conv2d(x, scale.reshape(1, 1, 1, 1))
    for given_scale in (scale, scale.reshape(()), scale.reshape(1, 1, 1, 1)):
        close(conv1x1_scalar(x, given_scale), reference)
    close(conv1x1_scalar(x, float(scale)), reference)


@FAST
@given(
    B=st.integers(1, 3),
    C=channels,
    H=st.integers(1, 6),
    W=st.integers(1, 6),
    seed=st.integers(0, 999),
)
def test_conv1x1_filter(B: int, C: int, H: int, W: int, seed: int) -> None:
    x = randn(B, C, H, W, seed=seed)
    weight = randn(C, seed=seed + 1)
    reference = F.conv2d(x, weight.reshape(1, C, 1, 1))
    close(conv1x1_filter(x, weight), reference)
    close(conv1x1_filter(x, weight.reshape(1, C, 1, 1)), reference)


@FAST
@given(
    B=st.integers(1, 3),
    C=channels,
    O=channels,
    H=st.integers(1, 6),
    W=st.integers(1, 6),
    with_bias=st.booleans(),
    seed=st.integers(0, 999),
)
def test_conv1x1_is_conv2d_and_a_per_pixel_linear_layer(
    B: int, C: int, O: int, H: int, W: int, with_bias: bool, seed: int
) -> None:
    x = randn(B, C, H, W, seed=seed)
    weight = randn(O, C, seed=seed + 1)
    bias = randn(O, seed=seed + 2) if with_bias else None
    reference = F.conv2d(x, weight[:, :, None, None], bias)
    close(conv1x1(x, weight, bias), reference)
    close(conv1x1(x, weight[:, :, None, None], bias), reference)
    # the same numbers as nn.Linear applied to each pixel's channel vector (NHWC)
    close(F.linear(x.permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2), reference)


# -------------------------------------------------------------------------------- separable


@FAST
@given(s=spatial(), C=channels, m=st.integers(1, 3))
def test_depthwise_conv2d(s: dict, C: int, m: int) -> None:
    x = randn(s["B"], C, s["H"], s["W"], seed=s["seed"])
    weight = randn(C * m, 1, s["k"], s["l"], seed=s["seed"] + 1)
    reference = F.conv2d(x, weight, stride=s["stride"], padding=s["padding"], groups=C)
    close(depthwise_conv2d(x, weight, s["stride"], s["padding"]), reference)


@FAST
@given(s=spatial(), C=channels, O=channels, m=st.integers(1, 2))
def test_depthwise_separable_conv2d(s: dict, C: int, O: int, m: int) -> None:
    x = randn(s["B"], C, s["H"], s["W"], seed=s["seed"])
    depthwise = randn(C * m, 1, s["k"], s["l"], seed=s["seed"] + 1)
    pointwise = randn(O, C * m, seed=s["seed"] + 2)
    y = depthwise_separable_conv2d(x, depthwise, pointwise, s["stride"], s["padding"])
    filtered = F.conv2d(x, depthwise, stride=s["stride"], padding=s["padding"], groups=C)
    close(y, F.conv2d(filtered, pointwise[:, :, None, None]))
    close(
        depthwise_separable_conv2d(
            x, depthwise, pointwise[:, :, None, None], s["stride"], s["padding"]
        ),
        y,
    )
    # one full convolution with the merged kernel K[o, c] = sum_t P[o, c m + t] D[c m + t]
    merged = torch.einsum(
        "octs,ctij->ocij",
        pointwise.reshape(O, C, m, 1),
        depthwise.reshape(C, m, s["k"], s["l"]),
    )
    close(y, F.conv2d(x, merged, stride=s["stride"], padding=s["padding"]))


@FAST
@given(s=spatial(), C=channels, O=channels)
def test_spatially_separable_conv2d_is_a_conv_with_rank1_slices(s: dict, C: int, O: int) -> None:
    k, l, stride, padding = s["k"], s["l"], s["stride"], s["padding"]
    x = randn(s["B"], C, s["H"], s["W"], seed=s["seed"])
    vertical = randn(O, C, k, 1, seed=s["seed"] + 1)
    horizontal = randn(O, C, 1, l, seed=s["seed"] + 2)
    kernel = vertical * horizontal  # (C', C, k, l), the outer product per (o, c)
    assert int(torch.linalg.matrix_rank(kernel).max()) <= 1
    y = spatially_separable_conv2d(x, vertical, horizontal, stride, padding)
    close(y, F.conv2d(x, kernel, stride=stride, padding=padding))
    # as torch layers: grouped k x 1 (C -> C C'), channel shuffle, grouped 1 x l (C' C -> C')
    columns = F.conv2d(
        x,
        vertical.transpose(0, 1).reshape(C * O, 1, k, 1),
        stride=(stride[0], 1),
        padding=(padding[0], 0),
        groups=C,
    )
    rows = F.conv2d(
        torch.nn.ChannelShuffle(C)(columns),
        horizontal.reshape(O, C, 1, l),
        stride=(1, stride[1]),
        padding=(0, padding[1]),
        groups=O,
    )
    close(y, rows)


@FAST
@given(s=spatial(), C=channels, M=channels, O=channels)
def test_asymmetric_conv2d(s: dict, C: int, M: int, O: int) -> None:
    k, l, stride, padding = s["k"], s["l"], s["stride"], s["padding"]
    x = randn(s["B"], C, s["H"], s["W"], seed=s["seed"])
    vertical = randn(M, C, k, 1, seed=s["seed"] + 1)
    horizontal = randn(O, M, 1, l, seed=s["seed"] + 2)
    y = asymmetric_conv2d(x, vertical, horizontal, stride, padding)
    two_convs = F.conv2d(
        F.conv2d(x, vertical, stride=(stride[0], 1), padding=(padding[0], 0)),
        horizontal,
        stride=(1, stride[1]),
        padding=(0, padding[1]),
    )
    close(y, two_convs)
    merged = torch.einsum("mci,omj->ocij", vertical[..., 0], horizontal[:, :, 0, :])
    assert int(torch.linalg.matrix_rank(merged).max()) <= min(M, k, l)
    close(y, F.conv2d(x, merged, stride=stride, padding=padding))


@FAST
@given(s=spatial(), C=channels, O=channels)
def test_flattened_conv2d(s: dict, C: int, O: int) -> None:
    k, l, stride, padding = s["k"], s["l"], s["stride"], s["padding"]
    x = randn(s["B"], C, s["H"], s["W"], seed=s["seed"])
    channel = randn(O, C, seed=s["seed"] + 1)
    vertical = randn(O, 1, k, 1, seed=s["seed"] + 2)
    horizontal = randn(O, 1, 1, l, seed=s["seed"] + 3)
    y = flattened_conv2d(x, channel, vertical, horizontal, stride, padding)
    three_convs = F.conv2d(
        F.conv2d(
            F.conv2d(x, channel[:, :, None, None]),
            vertical,
            stride=(stride[0], 1),
            padding=(padding[0], 0),
            groups=O,
        ),
        horizontal,
        stride=(1, stride[1]),
        padding=(0, padding[1]),
        groups=O,
    )
    close(y, three_convs)
    rank1 = torch.einsum("oc,oi,oj->ocij", channel, vertical[:, 0, :, 0], horizontal[:, 0, 0, :])
    close(y, F.conv2d(x, rank1, stride=stride, padding=padding))
    close(flattened_conv2d(x, channel[:, :, None, None], vertical, horizontal, stride, padding), y)


# -------------------------------------------------------------------------------- grouped


@st.composite
def grouping(draw: st.DrawFn) -> tuple[int, int, int]:
    g = draw(st.integers(1, 4))
    return g, g * draw(st.integers(1, 3)), g * draw(st.integers(1, 3))


@FAST
@given(s=spatial(), gco=grouping(), with_bias=st.booleans())
def test_grouped_conv2d(s: dict, gco: tuple[int, int, int], with_bias: bool) -> None:
    g, C, O = gco
    x = randn(s["B"], C, s["H"], s["W"], seed=s["seed"])
    weight = randn(O, C // g, s["k"], s["l"], seed=s["seed"] + 1)
    bias = randn(O, seed=s["seed"] + 2) if with_bias else None
    reference = F.conv2d(x, weight, bias, stride=s["stride"], padding=s["padding"], groups=g)
    close(grouped_conv2d(x, weight, g, bias, s["stride"], s["padding"]), reference)


@FAST
@given(s=spatial(), C=channels)
def test_grouped_conv2d_with_one_channel_per_group_is_depthwise(s: dict, C: int) -> None:
    x = randn(s["B"], C, s["H"], s["W"], seed=s["seed"])
    weight = randn(C, 1, s["k"], s["l"], seed=s["seed"] + 1)
    close(
        grouped_conv2d(x, weight, C, stride=s["stride"], padding=s["padding"]),
        depthwise_conv2d(x, weight, s["stride"], s["padding"]),
    )


@FAST
@given(
    gco=grouping(),
    B=st.integers(1, 2),
    H=st.integers(1, 5),
    W=st.integers(1, 5),
    with_bias=st.booleans(),
    seed=st.integers(0, 999),
)
def test_pointwise_grouped_conv2d_and_its_block_diagonal_matrix(
    gco: tuple[int, int, int], B: int, H: int, W: int, with_bias: bool, seed: int
) -> None:
    g, C, O = gco
    x = randn(B, C, H, W, seed=seed)
    weight = randn(O, C // g, seed=seed + 1)
    bias = randn(O, seed=seed + 2) if with_bias else None
    reference = F.conv2d(x, weight[:, :, None, None], bias, groups=g)
    close(pointwise_grouped_conv2d(x, weight, g, bias), reference)
    close(pointwise_grouped_conv2d(x, weight[:, :, None, None], g, bias), reference)
    dense = block_diagonal_weight(weight, g)
    close(dense, torch.block_diag(*weight.reshape(g, O // g, C // g)))
    close(conv1x1(x, dense, bias), reference)


@FAST
@given(
    g=st.integers(1, 5),
    per_group=st.integers(1, 5),
    B=st.integers(1, 2),
    H=st.integers(1, 4),
    seed=st.integers(0, 999),
)
def test_channel_shuffle(g: int, per_group: int, B: int, H: int, seed: int) -> None:
    C = g * per_group
    x = randn(B, C, H, H + 1, seed=seed)
    y = channel_shuffle(x, g)
    # the reshape-transpose reference (ShuffleNet) and torch's own module
    close(y, x.reshape(B, g, per_group, H, H + 1).transpose(1, 2).reshape(B, C, H, H + 1))
    close(y, torch.nn.ChannelShuffle(g)(x))
    perm = channel_shuffle_permutation(C, g)
    assert sorted(perm.tolist()) == list(range(C))
    close(y, x[:, perm])
    # shuffling with C/g groups undoes a shuffle with g groups
    close(channel_shuffle(y, per_group), x)


def _dependency(
    groups: int, channels: int, shuffle: bool, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """|d out / d in| of grouped 1x1 -> (shuffle) -> grouped 1x1 at one pixel: (C, C)."""
    w1 = randn(channels, channels // groups, seed=seed)
    w2 = randn(channels, channels // groups, seed=seed + 1)

    def layers(x: torch.Tensor) -> torch.Tensor:
        hidden = pointwise_grouped_conv2d(x, w1, groups)
        if shuffle:
            hidden = channel_shuffle(hidden, groups)
        return pointwise_grouped_conv2d(hidden, w2, groups)

    x = randn(1, channels, 1, 1, seed=seed + 2)
    jac = torch.autograd.functional.jacobian(layers, x).reshape(channels, channels)
    group_of = torch.arange(channels) // (channels // groups)
    return jac, group_of


@settings(max_examples=25, deadline=None)
@given(g=st.integers(2, 4), m=st.integers(1, 2), seed=st.integers(0, 999))
def test_shuffle_lets_information_cross_groups(g: int, m: int, seed: int) -> None:
    C = g * g * m  # each group of the shuffled layer receives m channels from every group
    jac, group_of = _dependency(g, C, shuffle=False, seed=seed)
    same_group = group_of[:, None] == group_of[None, :]
    # without a shuffle an output depends only on the inputs of its own group
    assert torch.all(jac[~same_group] == 0)
    assert torch.all(jac[same_group] != 0)
    jac, _ = _dependency(g, C, shuffle=True, seed=seed)
    # with it, every output depends on inputs of every group
    for out in range(C):
        touched = {int(group_of[c]) for c in range(C) if jac[out, c] != 0}
        assert touched == set(range(g))


@pytest.mark.parametrize("member", ["depthwise_separable", "spatial", "asym", "flat", "grouped"])
def test_channels_last_and_strided_inputs_give_the_same_numbers(member: str) -> None:
    """The einsums read windows as views: a channels_last or sliced input must not matter."""
    x = randn(2, 6, 9, 8, seed=1)
    stride, padding = (2, 1), (1, 2)
    calls = {
        "depthwise_separable": lambda t: depthwise_separable_conv2d(
            t, randn(12, 1, 3, 4, seed=2), randn(5, 12, seed=3), stride, padding
        ),
        "spatial": lambda t: spatially_separable_conv2d(
            t, randn(4, 6, 3, 1, seed=2), randn(4, 6, 1, 4, seed=3), stride, padding
        ),
        "asym": lambda t: asymmetric_conv2d(
            t, randn(3, 6, 3, 1, seed=2), randn(4, 3, 1, 4, seed=3), stride, padding
        ),
        "flat": lambda t: flattened_conv2d(
            t, randn(4, 6, seed=2), randn(4, 1, 3, 1, seed=3), randn(4, 1, 1, 4, seed=4),
            stride, padding,
        ),
        "grouped": lambda t: grouped_conv2d(t, randn(9, 2, 3, 4, seed=2), 3, None, stride, padding),
    }  # fmt: skip
    reference = calls[member](x)
    as_channels_last = x.to(memory_format=torch.channels_last)
    sliced = randn(2, 6, 9, 16, seed=1)[..., ::2]  # every other column: a strided view
    assert not as_channels_last.is_contiguous() and not sliced.is_contiguous()
    close(calls[member](as_channels_last), reference)
    close(calls[member](sliced), calls[member](sliced.contiguous()))


# -------------------------------------------------------------------------------- errors


def _x(C: int = 4, H: int = 5, W: int = 5) -> torch.Tensor:
    return torch.zeros(1, C, H, W, dtype=D)


def _w(*shape: int) -> torch.Tensor:
    return torch.zeros(*shape, dtype=D)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: conv1x1(torch.zeros(4, 5, 5), _w(3, 4)), ValueError, r"x must have rank 4"),
        (lambda: conv1x1([1.0], _w(3, 4)), TypeError, r"x must be a torch.Tensor"),
        (lambda: conv1x1(_x(), _w(3, 5)), ValueError, r"weight.shape\[1\] must equal C=4"),
        (lambda: conv1x1(_x(), _w(3, 4, 3, 3)), ValueError, r"weight must be a 1x1 kernel"),
        (lambda: conv1x1(_x(), _w(3, 4), _w(4)), ValueError, r"bias must have shape"),
        (lambda: conv1x1_scalar(_x(), 2.0), ValueError, r"x must have one channel"),
        (lambda: conv1x1_scalar(_x(1), _w(2)), ValueError, r"scale must have one element"),
        (lambda: conv1x1_scalar(_x(1), "2"), TypeError, r"scale must be a float"),
        (lambda: conv1x1_filter(_x(), _w(3)), ValueError, r"weight must have shape \(C,\)"),
        (lambda: depthwise_conv2d(_x(), _w(6, 1, 3, 3)), ValueError, r"C=4 must divide"),
        (lambda: depthwise_conv2d(_x(), _w(4, 2, 3, 3)), ValueError, r"\(C\*m, 1, k, l\)"),
        (
            lambda: depthwise_conv2d(_x(), _w(4, 1, 7, 3)),
            ValueError,
            r"weight.*height 7.*\b5\b",
        ),
        (
            lambda: depthwise_conv2d(_x(), _w(4, 1, 8, 3), padding=1),
            ValueError,
            r"weight.*height 8.*\b7\b",
        ),
        (lambda: depthwise_conv2d(_x(), _w(4, 1, 3, 3), stride=0), ValueError, r"stride"),
        (lambda: depthwise_conv2d(_x(), _w(4, 1, 3, 3), padding=-1), ValueError, r"padding"),
        (
            lambda: depthwise_separable_conv2d(_x(), _w(4, 1, 3, 3), _w(2, 3)),
            ValueError,
            r"pointwise.shape\[1\] must equal C\*m=4",
        ),
        (
            lambda: spatially_separable_conv2d(_x(), _w(2, 4, 3, 1), _w(2, 3, 1, 3)),
            ValueError,
            r"horizontal must have shape",
        ),
        (
            lambda: spatially_separable_conv2d(_x(), _w(2, 4, 3, 2), _w(2, 4, 1, 3)),
            ValueError,
            r"vertical must have shape",
        ),
        (
            lambda: spatially_separable_conv2d(_x(), _w(2, 4, 3, 1), _w(2, 4, 1, 6)),
            ValueError,
            r"horizontal has kernel width 6, larger",
        ),
        (
            lambda: asymmetric_conv2d(_x(), _w(3, 4, 3, 1), _w(2, 2, 1, 3)),
            ValueError,
            r"horizontal must have shape \(C', M, 1, l\)",
        ),
        (
            lambda: flattened_conv2d(_x(), _w(2, 4), _w(3, 1, 3, 1), _w(2, 1, 1, 3)),
            ValueError,
            r"vertical must have shape \(C', 1, k, 1\)",
        ),
        (
            lambda: grouped_conv2d(_x(), _w(4, 2, 3, 3), 3),
            ValueError,
            r"groups=3.*C=4",
        ),
        (
            lambda: grouped_conv2d(_x(), _w(3, 2, 3, 3), 2),
            ValueError,
            r"groups=2.*C'=3",
        ),
        (
            lambda: grouped_conv2d(_x(), _w(4, 4, 3, 3), 2),
            ValueError,
            r"weight must have shape \(C', C/g, k, l\)",
        ),
        (lambda: grouped_conv2d(_x(), _w(4, 2, 3, 3), 0), ValueError, r"groups must be >= 1"),
        (lambda: grouped_conv2d(_x(), _w(4, 2, 3, 3), 2.0), TypeError, r"groups must be an int"),
        (
            lambda: pointwise_grouped_conv2d(_x(), _w(4, 4), 2),
            ValueError,
            r"weight.shape\[1\] must equal C/g=2",
        ),
        (lambda: channel_shuffle(_x(6), 4), ValueError, r"groups=4.*C=6"),
        (lambda: channel_shuffle_permutation(6, 4), ValueError, r"groups=4 must divide"),
        (lambda: block_diagonal_weight(_w(5, 2), 2), ValueError, r"groups=2 must divide"),
    ],
)
def test_bad_arguments_are_named(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()

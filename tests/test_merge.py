"""Merging convolutions and folding batch norms, against the sequential modules in float64."""

from __future__ import annotations

import copy
import math
from typing import Any, Literal, TypeVar

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from ane_lib.functional import (
    batchnorm_scale_shift,
    compose_conv_weights,
    conv_output_size,
    dense_conv_weight,
    merge_conv_kernels,
)
from ane_lib.nn import fold_batchnorm, merge_chain, merge_convs

D = torch.float64
M = TypeVar("M", bound=nn.Module)
ATOL = 1e-10
PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]
PADDING_MODES: list[PaddingMode] = ["zeros", "reflect", "replicate", "circular"]
CONVS: dict[int, Any] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
BNS: dict[int, type[_BatchNorm]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randomize(module: M, seed: int) -> M:
    """Random parameters and batch-norm statistics (float64, eval mode), returned."""
    g = gen(seed)
    module.to(D).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=D))
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                assert m.running_var is not None
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g, dtype=D))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g, dtype=D))
    return module


def close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> None:
    a, b = a.detach(), b.detach()
    assert a.shape == b.shape, (a.shape, b.shape)
    torch.testing.assert_close(a, b, atol=atol * max(1.0, float(b.abs().max())), rtol=0)


def state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def same_state(module: nn.Module, saved: dict[str, torch.Tensor]) -> bool:
    now = module.state_dict()
    return now.keys() == saved.keys() and all(torch.equal(now[k], saved[k]) for k in saved)


# --------------------------------------------------------------------------- the source note


def note_recipe(k1: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
    """The source note's merge: flip, permute, full convolution of the kernels."""
    padding = k2.shape[-1] - 1
    return torch.conv2d(k1.permute(1, 0, 2, 3), k2.flip(-1, -2), padding=padding).permute(
        1, 0, 2, 3
    )


def test_note_example_has_98_parameters_not_28() -> None:
    g = gen(0)
    k1 = torch.rand(100, 1, 3, 3, dtype=D, generator=g)
    k2 = torch.rand(2, 100, 5, 5, dtype=D, generator=g)
    k3 = merge_conv_kernels(k1, k2)
    assert k3.shape == (2, 1, 7, 7) and k3.numel() == 98 == 2 * 1 * 7 * 7
    close(k3, note_recipe(k1, k2))
    x = torch.rand(1, 1, 6, 6, dtype=D, generator=g) * 10
    sequential = F.conv2d(F.conv2d(x, k1, padding=2), k2, padding=4)
    close(F.conv2d(x, k3, padding=6), sequential)


@settings(max_examples=25, deadline=None)
@given(
    c=st.integers(1, 4),
    m=st.integers(1, 5),
    o=st.integers(1, 4),
    a=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    b=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    seed=st.integers(0, 2**31 - 1),
)
def test_merge_conv_kernels_equals_the_note_recipe_and_full_padding(
    c: int, m: int, o: int, a: tuple[int, int], b: tuple[int, int], seed: int
) -> None:
    g = gen(seed)
    k1 = torch.randn(m, c, *a, dtype=D, generator=g)
    k2 = torch.randn(o, m, *b, dtype=D, generator=g)
    k3 = merge_conv_kernels(k1, k2)
    assert k3.shape == (o, c, a[0] + b[0] - 1, a[1] + b[1] - 1)
    if a[0] == a[1] and b[0] == b[1]:  # the recipe pads both axes by k2.shape[-1] - 1
        close(k3, note_recipe(k1, k2))
    x = torch.randn(2, c, 5, 6, dtype=D, generator=g)
    full = tuple(k - 1 for k in a), tuple(k - 1 for k in b)
    sequential = F.conv2d(F.conv2d(x, k1, padding=full[0]), k2, padding=full[1])
    merged = F.conv2d(x, k3, padding=tuple(p + q for p, q in zip(*full, strict=True)))
    close(merged, sequential)


# --------------------------------------------------------------------------- merge_convs


def valid_sizes(pair: tuple[_ConvNd, _ConvNd], base: int, n: int) -> list[int]:
    """Input sizes >= base on which both convs produce at least one output, n of them."""
    c1, c2 = pair
    out: list[int] = []
    size = base
    while len(out) < n and size < base + 200:
        try:
            for axis in range(len(c1.kernel_size)):
                p1 = 0 if isinstance(c1.padding, str) else c1.padding[axis]
                p2 = 0 if isinstance(c2.padding, str) else c2.padding[axis]
                mid = conv_output_size(
                    size, c1.kernel_size[axis], c1.stride[axis], p1, c1.dilation[axis]
                )
                conv_output_size(mid, c2.kernel_size[axis], c2.stride[axis], p2, c2.dilation[axis])
            out.append(size)
        except ValueError:
            pass
        size += 1
    return out


@st.composite
def conv_pairs(draw: st.DrawFn, dims: int = 2, exact: bool = True) -> tuple[_ConvNd, _ConvNd]:
    """Two convs in a row. ``exact``: only configurations the merge accepts (conv2 pads only
    after a bias-free conv1 with full padding)."""
    g1 = draw(st.sampled_from([1, 1, 2, 3, 4]))
    g2 = draw(st.sampled_from([1, 1, 2, 3, 4]))
    mid = math.lcm(g1, g2) * draw(st.integers(1, 2))
    cin = g1 * draw(st.integers(1, 2))
    cout = g2 * draw(st.integers(1, 2))
    k1 = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    k2 = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    s1 = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    s2 = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    d1 = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    d2 = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    second_pads = draw(st.booleans())
    bias1 = draw(st.booleans()) and not (exact and second_pads)
    if second_pads:
        p2 = tuple(draw(st.integers(int(i == 0), 2)) for i in range(dims))
        full = [d * (k - 1) for d, k in zip(d1, k1, strict=True)]
        low = full if exact else [0] * dims
        p1 = tuple(draw(st.integers(lo, lo + 1)) for lo in low)
    else:
        p2 = (0,) * dims
        p1 = tuple(draw(st.integers(0, 2)) for _ in range(dims))
    conv: Any = CONVS[dims]
    c1 = conv(cin, mid, k1, stride=s1, padding=p1, dilation=d1, groups=g1, bias=bias1)
    c2 = conv(
        mid, cout, k2, stride=s2, padding=p2, dilation=d2, groups=g2, bias=draw(st.booleans())
    )
    seed = draw(st.integers(0, 2**31 - 1))
    return randomize(c1, seed), randomize(c2, seed + 1)


def check_merge(c1: _ConvNd, c2: _ConvNd, seed: int, sizes: int = 2) -> None:
    saved = state(c1), state(c2)
    merged = merge_convs(c1, c2)
    assert same_state(c1, saved[0]) and same_state(c2, saved[1])  # inputs untouched
    dims = len(c1.kernel_size)
    found = valid_sizes((c1, c2), 4, sizes + dims)
    assume(len(found) >= 2)
    g = gen(seed)
    for i in range(sizes):
        shape = [found[(i + a) % len(found)] for a in range(dims)]
        x = torch.randn(2, c1.in_channels, *shape, dtype=D, generator=g)
        with torch.no_grad():
            close(merged(x), c2(c1(x)))


@settings(max_examples=60, deadline=None)
@given(pair=conv_pairs(), seed=st.integers(0, 2**31 - 1))
def test_merge_convs_equals_the_pair_2d(pair: tuple[nn.Conv2d, nn.Conv2d], seed: int) -> None:
    c1, c2 = pair
    check_merge(c1, c2, seed)
    merged = merge_convs(c1, c2)
    assert merged.groups == math.gcd(c1.groups, c2.groups)
    assert merged.stride == tuple(x * y for x, y in zip(c1.stride, c2.stride, strict=True))
    assert (merged.bias is None) == (c1.bias is None and c2.bias is None)


@settings(max_examples=15, deadline=None)
@given(pair=conv_pairs(dims=1), seed=st.integers(0, 2**31 - 1))
def test_merge_convs_equals_the_pair_1d(pair: tuple[nn.Conv1d, nn.Conv1d], seed: int) -> None:
    check_merge(*pair, seed)


@settings(max_examples=8, deadline=None)
@given(pair=conv_pairs(dims=3), seed=st.integers(0, 2**31 - 1))
def test_merge_convs_equals_the_pair_3d(pair: tuple[nn.Conv3d, nn.Conv3d], seed: int) -> None:
    check_merge(*pair, seed, sizes=1)


def unchecked_merge(c1: nn.Conv1d, c2: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """The merged weights applied with the merged padding, whatever the conditions say."""
    merged = compose_conv_weights(
        c1.weight,
        c2.weight,
        bias1=c1.bias,
        bias2=c2.bias,
        stride1=c1.stride,
        dilation1=c1.dilation,
        dilation2=c2.dilation,
        groups1=c1.groups,
        groups2=c2.groups,
    )
    s1 = c1.stride[0]
    assert not isinstance(c1.padding, str) and not isinstance(c2.padding, str)
    left = c1.padding[0] + s1 * c2.padding[0]
    x = F.pad(x, (left, left))
    return F.conv1d(
        x,
        merged.weight,
        merged.bias,
        stride=s1 * c2.stride[0],
        dilation=merged.dilation,
        groups=merged.groups,
    )


@settings(max_examples=120, deadline=None)
@given(pair=conv_pairs(dims=1, exact=False), seed=st.integers(0, 2**31 - 1))
def test_merge_conditions_are_exactly_the_exact_cases(
    pair: tuple[nn.Conv1d, nn.Conv1d], seed: int
) -> None:
    """merge_convs refuses a pair exactly when the merged weights miss for some input size."""
    c1, c2 = pair
    s = c1.stride[0] * c2.stride[0]
    sizes = valid_sizes((c1, c2), 12, 2 * s + 2)
    g = gen(seed)
    exact = True
    with torch.no_grad():
        for size in sizes:
            x = torch.randn(1, c1.in_channels, size, dtype=D, generator=g)
            want, got = c2(c1(x)), unchecked_merge(c1, c2, x)
            exact &= want.shape == got.shape and bool(
                torch.allclose(got, want, atol=1e-9 * max(1.0, float(want.abs().max())))
            )
    try:
        merge_convs(c1, c2)
        refused = False
    except ValueError:
        refused = True
    event(f"refused={refused}")
    assert refused == (not exact), (c1, c2)


def test_depthwise_then_pointwise_becomes_dense() -> None:
    dw = randomize(nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False), 0)
    pw = randomize(nn.Conv2d(6, 4, 1), 1)
    merged = merge_convs(dw, pw)
    assert merged.groups == 1 and merged.weight.shape == (4, 6, 3, 3)
    x = torch.randn(1, 6, 7, 9, dtype=D, generator=gen(2))
    with torch.no_grad():
        close(merged(x), pw(dw(x)))


def test_grouped_then_grouped_keeps_groups() -> None:
    c1 = randomize(nn.Conv2d(8, 12, 3, groups=4), 0)
    c2 = randomize(nn.Conv2d(12, 8, 2, groups=4), 1)
    merged = merge_convs(c1, c2)
    assert merged.groups == 4 and merged.weight.shape == (8, 2, 4, 4)


def test_the_merged_bias_is_b2_plus_sum_w2_b1() -> None:
    c1 = randomize(nn.Conv2d(3, 5, 3), 0)
    c2 = randomize(nn.Conv2d(5, 2, 2), 1)
    merged = merge_convs(c1, c2)
    assert c1.bias is not None and c2.bias is not None and merged.bias is not None
    close(merged.bias, c2.bias + c2.weight.sum(dim=(2, 3)) @ c1.bias)


def test_same_padding_on_both_is_refused_and_wrong_only_on_a_border_band() -> None:
    c1 = randomize(nn.Conv2d(2, 3, 3, padding="same", bias=False), 0)
    c2 = randomize(nn.Conv2d(3, 2, 3, padding="same", bias=False), 1)
    with pytest.raises(ValueError, match=r"less than full"):
        merge_convs(c1, c2)
    # the unchecked merge differs from the pair on the outer ring of pixels only
    k = merge_conv_kernels(c1.weight, c2.weight)
    x = torch.randn(1, 2, 9, 9, dtype=D, generator=gen(3))
    with torch.no_grad():
        diff = (F.conv2d(x, k, padding=2) - c2(c1(x))).abs().amax(dim=(0, 1))
    assert float(diff[1:-1, 1:-1].max()) < 1e-12
    assert float(diff[0].min()) > 0 and float(diff[:, -1].min()) > 0


@pytest.mark.parametrize(
    ("c1", "c2", "words"),
    [
        (nn.Conv2d(2, 3, 3), nn.Conv2d(4, 2, 1), r"mismatched channels.*out_channels=3.*4"),
        (nn.Conv2d(2, 3, 3, padding=2), nn.Conv2d(3, 2, 3, padding=1), r"conv1 has a bias"),
        (
            nn.Conv2d(2, 3, 3, padding=1, bias=False),
            nn.Conv2d(3, 2, 3, padding=1),
            r"padding \(1, 1\).*less than full",
        ),
        (
            nn.Conv2d(2, 3, 3, padding=2, bias=False),
            nn.Conv2d(3, 2, 3, padding=1, padding_mode="reflect"),
            r"padding_mode='reflect'",
        ),
        (
            nn.Conv2d(2, 3, 3, padding=2, bias=False, padding_mode="reflect"),
            nn.Conv2d(3, 2, 3, padding=1),
            r"conv1 pads with padding_mode='reflect'",
        ),
        (
            nn.Conv2d(2, 3, 2, padding="same", bias=False),
            nn.Conv2d(3, 2, 2),
            r"asymmetric padding",
        ),
    ],
)
def test_merge_convs_names_the_failing_condition(c1: nn.Conv2d, c2: nn.Conv2d, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        merge_convs(c1, c2)


def test_merge_convs_rejects_other_modules() -> None:
    with pytest.raises(TypeError, match="conv1 must be"):
        merge_convs(nn.Linear(2, 2), nn.Conv2d(2, 2, 1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="same kind"):
        merge_convs(nn.Conv1d(2, 2, 1), nn.Conv2d(2, 2, 1))


def test_reflect_padding_on_the_first_conv_merges() -> None:
    c1 = randomize(nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), 0)
    c2 = randomize(nn.Conv2d(3, 2, 3), 1)
    merged = merge_convs(c1, c2)
    assert merged.padding_mode == "reflect"
    x = torch.randn(1, 2, 8, 7, dtype=D, generator=gen(1))
    with torch.no_grad():
        close(merged(x), c2(c1(x)))


def test_merge_keeps_float32_close_to_the_float64_merge() -> None:
    c1 = randomize(nn.Conv2d(4, 8, 3), 0).float()
    c2 = randomize(nn.Conv2d(8, 4, 3), 1).float()
    merged = merge_convs(c1, c2)
    assert merged.weight.dtype == torch.float32
    exact = merge_convs(c1.double(), c2.double()).weight.float()
    assert torch.equal(merged.weight, exact)  # rounded once, from float64


def test_dense_conv_weight_is_block_diagonal() -> None:
    w = torch.randn(6, 2, 3, 3, dtype=D, generator=gen(0))
    dense = dense_conv_weight(w, 3)
    x = torch.randn(1, 6, 5, 5, dtype=D, generator=gen(1))
    close(F.conv2d(x, dense), F.conv2d(x, w, groups=3))


# --------------------------------------------------------------------------- batch norms


def bn_for(kind: type[_BatchNorm], channels: int, seed: int, affine: bool = True) -> _BatchNorm:
    return randomize(kind(channels, eps=1e-3, affine=affine), seed)


@settings(max_examples=30, deadline=None)
@given(
    dims=st.sampled_from([1, 2, 3]),
    groups=st.sampled_from([1, 2, 3]),
    bias=st.booleans(),
    affine=st.booleans(),
    stride=st.integers(1, 2),
    padding=st.integers(0, 2),
    seed=st.integers(0, 2**31 - 1),
)
def test_fold_batchnorm_after_a_conv(
    dims: int, groups: int, bias: bool, affine: bool, stride: int, padding: int, seed: int
) -> None:
    conv = randomize(
        CONVS[dims](
            2 * groups, 3 * groups, 3, stride=stride, padding=padding, groups=groups, bias=bias
        ),
        seed,
    )
    bn = bn_for(BNS[dims], 3 * groups, seed + 1, affine)
    saved = state(conv), state(bn)
    folded = fold_batchnorm(conv, bn)
    assert same_state(conv, saved[0]) and same_state(bn, saved[1])
    x = torch.randn(2, 2 * groups, *([6] * dims), dtype=D, generator=gen(seed))
    with torch.no_grad():
        close(folded(x), bn(conv(x)))


@settings(max_examples=30, deadline=None)
@given(
    dims=st.sampled_from([1, 2, 3]),
    groups=st.sampled_from([1, 2, 3]),
    bias=st.booleans(),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    mode=st.sampled_from(PADDING_MODES),
    seed=st.integers(0, 2**31 - 1),
)
def test_fold_batchnorm_before_a_conv(
    dims: int, groups: int, bias: bool, kernel: int, stride: int, mode: PaddingMode, seed: int
) -> None:
    padding = 0 if mode == "zeros" else 1  # other modes copy input values: BN commutes
    conv = randomize(
        CONVS[dims](
            2 * groups,
            3 * groups,
            kernel,
            stride=stride,
            padding=padding,
            groups=groups,
            bias=bias,
            padding_mode=mode,
        ),
        seed,
    )
    bn = bn_for(BNS[dims], 2 * groups, seed + 1)
    folded = fold_batchnorm(bn, conv)
    x = torch.randn(2, 2 * groups, *([5] * dims), dtype=D, generator=gen(seed))
    with torch.no_grad():
        close(folded(x), conv(bn(x)))


def test_fold_batchnorm_with_linear_layers() -> None:
    lin = randomize(nn.Linear(5, 4), 0)
    x = torch.randn(7, 5, dtype=D, generator=gen(1))
    after, before = bn_for(nn.BatchNorm1d, 4, 2), bn_for(nn.BatchNorm1d, 5, 3)
    with torch.no_grad():
        close(fold_batchnorm(lin, after)(x), after(lin(x)))
        close(fold_batchnorm(before, lin)(x), lin(before(x)))


def test_batchnorm_scale_shift_is_the_eval_formula() -> None:
    bn = randomize(nn.BatchNorm2d(4, eps=1e-3), 0)
    assert bn.running_mean is not None and bn.running_var is not None
    scale, shift = batchnorm_scale_shift(bn.running_mean, bn.running_var, bn.weight, bn.bias, 1e-3)
    x = torch.randn(2, 4, 3, 3, dtype=D, generator=gen(1))
    with torch.no_grad():
        close(x * scale[:, None, None] + shift[:, None, None], bn(x))


@pytest.mark.parametrize(
    ("first", "second", "error", "words"),
    [
        (
            nn.BatchNorm2d(2),
            nn.Conv2d(2, 3, 3, padding=1),
            ValueError,
            r"zero-pads.*padding=\(1, 1\)",
        ),
        (nn.Conv2d(2, 3, 3), nn.BatchNorm2d(4), ValueError, r"num_features=4.*3 output"),
        (nn.Conv2d(2, 3, 3), nn.BatchNorm1d(3), TypeError, r"BatchNorm2d.*got BatchNorm1d"),
        (nn.Conv2d(2, 3, 3), nn.Conv2d(3, 3, 1), TypeError, r"data order.*Conv2d, Conv2d"),
        (nn.ReLU(), nn.BatchNorm2d(3), TypeError, r"data order"),
    ],
)
def test_fold_batchnorm_errors(
    first: nn.Module, second: nn.Module, error: type[Exception], words: str
) -> None:
    first.eval()
    second.eval()
    with pytest.raises(error, match=words):
        fold_batchnorm(first, second)


def test_fold_batchnorm_refuses_training_mode_and_batch_statistics() -> None:
    conv = nn.Conv2d(2, 3, 1)
    with pytest.raises(ValueError, match=r"training mode.*\.eval\(\)"):
        fold_batchnorm(conv, nn.BatchNorm2d(3).train())
    with pytest.raises(ValueError, match="track_running_stats=False"):
        fold_batchnorm(conv, nn.BatchNorm2d(3, track_running_stats=False).eval())


# --------------------------------------------------------------------------- chains


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 4),
    kernels=st.lists(st.integers(1, 3), min_size=4, max_size=4),
    bns=st.lists(st.booleans(), min_size=4, max_size=4),
    seed=st.integers(0, 2**31 - 1),
)
def test_merge_chain_of_convs_with_batch_norms(
    n: int, kernels: list[int], bns: list[bool], seed: int
) -> None:
    layers: list[nn.Module] = []
    width = 3
    for i in range(n):
        layers.append(nn.Conv2d(width, width + 1, kernels[i], stride=1 + (i == 0)))
        width += 1
        if bns[i]:
            layers.append(nn.BatchNorm2d(width))
        if i == 1:
            layers.append(nn.Identity())
    chain = randomize(nn.Sequential(*layers), seed)
    merged = merge_chain(chain)
    assert isinstance(merged, nn.Conv2d)
    assert merged.kernel_size[0] == kernels[0] + 2 * sum(k - 1 for k in kernels[1:n])
    side = merged.kernel_size[0] + 3  # the chain needs at least its merged kernel's extent
    x = torch.randn(2, 3, side + 1, side, dtype=D, generator=gen(seed))
    with torch.no_grad():
        close(merged(x), chain(x))


def test_a_chain_of_1x1_convs_is_a_product_of_matrices() -> None:
    chain = randomize(nn.Sequential(nn.Conv2d(4, 6, 1), nn.Conv2d(6, 5, 1), nn.Conv2d(5, 3, 1)), 0)
    merged = merge_chain(chain)
    w = [c.weight[:, :, 0, 0] for c in chain if isinstance(c, nn.Conv2d)]
    assert isinstance(merged, nn.Conv2d)
    close(merged.weight[:, :, 0, 0], w[2] @ w[1] @ w[0])


def test_merge_chain_of_linear_layers_and_a_leading_batch_norm() -> None:
    chain = randomize(
        nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3)), 0
    )
    merged = merge_chain(chain)
    assert isinstance(merged, nn.Linear)
    x = torch.randn(5, 4, dtype=D, generator=gen(1))
    with torch.no_grad():
        close(merged(x), chain(x))


def test_merge_chain_of_one_layer_is_a_copy() -> None:
    conv = nn.Conv2d(2, 2, 3)
    merged = merge_chain([conv])
    assert isinstance(merged, nn.Conv2d) and merged is not conv
    assert torch.equal(merged.weight, conv.weight)


@pytest.mark.parametrize(
    ("layers", "error", "words"),
    [
        ([nn.Conv2d(2, 2, 1), nn.ReLU(), nn.Conv2d(2, 2, 1)], TypeError, r"layers\[1\] is ReLU"),
        ([nn.Conv2d(2, 2, 1), nn.Linear(2, 2)], TypeError, "all convs of one kind"),
        ([nn.Identity()], ValueError, "no convolution"),
        ([nn.BatchNorm2d(2), nn.Conv2d(2, 2, 3, padding=1)], ValueError, "zero-pads"),
    ],
)
def test_merge_chain_errors(layers: list[nn.Module], error: type[Exception], words: str) -> None:
    for layer in layers:
        layer.eval()
    with pytest.raises(error, match=words):
        merge_chain(layers)


def test_merge_chain_leaves_the_chain_untouched() -> None:
    chain = randomize(nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Conv2d(3, 2, 3)), 0)
    before = copy.deepcopy(chain.state_dict())
    merge_chain(chain)
    assert same_state(chain, before)

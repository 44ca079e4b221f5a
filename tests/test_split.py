"""Splitting convolutions into exact chains of smaller ones, against the conv in float64."""

from __future__ import annotations

from typing import TypeVar

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ane_lib.functional import chain_offsets, split_conv_weight
from ane_lib.nn import dilation_factors, factor_dilation, merge_chain, split_conv

D = torch.float64
M = TypeVar("M", bound=nn.Module)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randomize(conv: M, seed: int) -> M:
    g = gen(seed)
    conv.to(D)
    with torch.no_grad():
        for p in conv.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=D))
    return conv


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    a, b = a.detach(), b.detach()
    assert a.shape == b.shape, (a.shape, b.shape)
    torch.testing.assert_close(a, b, atol=1e-10 * max(1.0, float(b.abs().max())), rtol=0)


def check_chain(conv: nn.Conv2d, chain: nn.Sequential, seed: int, size: int = 11) -> None:
    x = torch.randn(2, conv.in_channels, size, size + 1, dtype=D, generator=gen(seed))
    with torch.no_grad():
        close(chain(x), conv(x))


@settings(max_examples=40, deadline=None)
@given(
    kernel=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    cut=st.tuples(st.integers(0, 4), st.integers(0, 4)),
    three=st.booleans(),
    groups=st.sampled_from([1, 1, 2, 3]),
    stride=st.integers(1, 2),
    padding=st.integers(0, 2),
    dilation=st.integers(1, 2),
    bias=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_split_conv_equals_the_conv(
    kernel: tuple[int, int],
    cut: tuple[int, int],
    three: bool,
    groups: int,
    stride: int,
    padding: int,
    dilation: int,
    bias: bool,
    seed: int,
) -> None:
    first = tuple(1 + c % k for c, k in zip(cut, kernel, strict=True))
    rest = tuple(k - f + 1 for k, f in zip(kernel, first, strict=True))
    sizes: list[tuple[int, ...]] = [first, rest]
    if three:  # split the rest again into (r, 1) then (1, r') style pieces
        sizes = [first, (rest[0], 1), (1, rest[1])]
    conv = randomize(
        nn.Conv2d(
            2 * groups,
            3 * groups,
            kernel,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
        ),
        seed,
    )
    chain = split_conv(conv, sizes)
    assert [c.kernel_size for c in chain] == sizes
    assert all(c.groups == groups for c in chain)
    check_chain(conv, chain, seed, size=12)
    # merging the chain gives the conv back
    merged = merge_chain(chain)
    assert isinstance(merged, nn.Conv2d)
    close(merged.weight, conv.weight)


def test_rank_one_depthwise_kernel_splits_into_k_by_1_then_1_by_k() -> None:
    g = gen(0)
    column, row = torch.randn(6, 1, 5, 1, dtype=D, generator=g), torch.randn(6, 1, 1, 5, dtype=D)
    conv = nn.Conv2d(6, 6, 5, padding=2, groups=6, bias=False).to(D)
    with torch.no_grad():
        conv.weight.copy_(column * row)  # each channel's kernel is an outer product
    chain = split_conv(conv, [(5, 1), (1, 5)])
    assert [c.out_channels for c in chain] == [6, 6]  # one channel per group in between
    check_chain(conv, chain, 1)


def test_a_general_depthwise_kernel_needs_its_matrix_rank_in_channels() -> None:
    conv = randomize(nn.Conv2d(4, 4, 5, groups=4, bias=False), 0)
    chain = split_conv(conv, [(5, 1), (1, 5)])
    assert chain[0].out_channels == 4 * 5  # a random 5x5 matrix has rank 5
    check_chain(conv, chain, 1)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_the_intermediate_width_is_the_rank_of_the_lifted_matrix(rank: int) -> None:
    """W[o, c, i, j] = sum_r A[r, c, i] B[o, r, j]: a (C k) x (O k) matrix of rank r."""
    g = gen(rank)
    a, b = torch.randn(rank, 3, 4, dtype=D, generator=g), torch.randn(5, rank, 4, dtype=D)
    conv = nn.Conv2d(3, 5, 4, bias=False).to(D)
    with torch.no_grad():
        conv.weight.copy_(torch.einsum("rci,orj->ocij", a, b))
    chain = split_conv(conv, [(4, 1), (1, 4)])
    assert chain[0].out_channels == rank
    check_chain(conv, chain, 2)


def test_float32_rank_decisions_use_float32_precision() -> None:
    g = gen(0)
    conv = nn.Conv2d(3, 3, 3, groups=3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(3, 1, 3, 1, generator=g) * torch.randn(3, 1, 1, 3))
    chain = split_conv(conv, [(3, 1), (1, 3)])
    assert chain[0].weight.dtype == torch.float32 and chain[0].out_channels == 3


@settings(max_examples=12, deadline=None)
@given(dilation=st.integers(2, 8), seed=st.integers(0, 2**31 - 1))
def test_factor_dilation_is_exact_and_adds_up(dilation: int, seed: int) -> None:
    conv = randomize(nn.Conv2d(2, 2, 3, padding=dilation, dilation=dilation), seed)
    chain = [c for c in factor_dilation(conv) if isinstance(c, nn.Conv2d)]
    assert sum(c.dilation[0] for c in chain) == dilation
    assert all(c.dilation[0] in (2, 3) and c.kernel_size == (3, 3) for c in chain)
    check_chain(conv, nn.Sequential(*chain), seed, size=3 * dilation)


def test_apples_multiplied_dilations_span_fewer_pixels() -> None:
    """Three dilation-2 3x3 convs (2 x 2 x 2 = 8) reach 13 pixels; one dilation-8 conv 17."""
    assert max(chain_offsets([3, 3, 3], [2, 2, 2])) + 1 == 13
    assert max(chain_offsets([3], [8])) + 1 == 17
    conv = nn.Conv2d(2, 2, 3, dilation=8)
    with pytest.raises(ValueError, match=r"add up to 6, not to the conv's dilation 8"):
        factor_dilation(conv, [2, 2, 2])


def test_dilation_factors() -> None:
    assert dilation_factors(6) == [3, 3]
    assert dilation_factors(8) == [2, 2, 2, 2]
    assert dilation_factors(7) == [3, 2, 2]
    assert dilation_factors(5) == [3, 2]
    for d in range(2, 30):
        assert sum(dilation_factors(d)) == d
    with pytest.raises(ValueError, match="dilation must be >= 2"):
        dilation_factors(1)


def test_mixed_dilations_reach_every_tap() -> None:
    conv = randomize(nn.Conv2d(2, 2, 3, dilation=5), 0)
    chain = factor_dilation(conv, [2, 3])
    check_chain(conv, chain, 1, size=14)


@pytest.mark.parametrize(
    ("conv", "sizes", "dilations", "words"),
    [
        (nn.Conv2d(2, 2, 5), [3, 4], None, r"axis 0 the chain spans 6 pixels.*kernel spans 5"),
        (nn.Conv2d(2, 2, 3, dilation=3), [4], [2], r"taps at offsets \[3\] on axis 0"),
        (nn.Conv2d(2, 2, 3, dilation=3), [3, 2], [2, 2], r"offset 3 on axis 0 is not reached"),
        (nn.Conv2d(2, 2, 4, padding="same"), [2, 3], None, "asymmetric"),
    ],
)
def test_split_conv_errors(
    conv: nn.Conv2d, sizes: list[int], dilations: list[int] | None, words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        split_conv(conv, sizes, dilations)


def test_split_conv_weight_rejects_bad_arguments() -> None:
    w = torch.randn(2, 2, 3, 3)
    with pytest.raises(TypeError, match="kernel_sizes must be a non-empty sequence"):
        split_conv_weight(w, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one dilation per conv"):
        split_conv_weight(w, [2, 2], [1])
    with pytest.raises(TypeError, match="conv must be"):
        split_conv(nn.Linear(2, 2), [1])  # type: ignore[arg-type]


def test_a_padding_mode_stays_on_the_first_conv() -> None:
    conv = randomize(nn.Conv2d(3, 4, 5, padding=2, padding_mode="reflect"), 0)
    chain = split_conv(conv, [3, 3])
    assert [c.padding_mode for c in chain] == ["reflect", "zeros"]
    check_chain(conv, chain, 1, size=9)

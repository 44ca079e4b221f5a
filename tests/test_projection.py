"""ane_lib.functional.projection: a Linear by the 1x1-convolution route; the (B, C, 1, S) layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ane_lib.functional.projection import (
    bc1s_to_bsc,
    bsc_to_bc1s,
    conv1x1_weight_to_linear,
    linear_as_conv1x1,
    linear_weight_to_conv1x1,
)

SETTINGS = settings(max_examples=60, deadline=None)
sizes = st.integers(min_value=1, max_value=9)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@SETTINGS
@given(
    B=sizes,
    S=sizes,
    C=st.integers(1, 16),
    O=st.integers(1, 16),
    with_bias=st.booleans(),
    method=st.sampled_from(["conv", "einsum"]),
    weight_rank=st.sampled_from([2, 4]),
    seed=st.integers(0, 2**31 - 1),
)
def test_linear_as_conv1x1_equals_f_linear_float64(
    B: int, S: int, C: int, O: int, with_bias: bool, method: str, weight_rank: int, seed: int
) -> None:
    g = _gen(seed)
    x = torch.randn(B, S, C, generator=g, dtype=torch.float64)
    weight = torch.randn(O, C, generator=g, dtype=torch.float64)
    bias = torch.randn(O, generator=g, dtype=torch.float64) if with_bias else None
    w = weight if weight_rank == 2 else weight.reshape(O, C, 1, 1)
    got = linear_as_conv1x1(x, w, bias, method=method)
    assert got.shape == (B, S, O)
    torch.testing.assert_close(got, F.linear(x, weight, bias), rtol=0, atol=1e-12)


@SETTINGS
@given(
    N=sizes,
    C=st.integers(1, 16),
    O=st.integers(1, 16),
    with_bias=st.booleans(),
    method=st.sampled_from(["conv", "einsum"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_batch_of_vectors_as_one_pixel_images(
    N: int, C: int, O: int, with_bias: bool, method: str, seed: int
) -> None:
    g = _gen(seed)
    x = torch.randn(N, C, generator=g, dtype=torch.float64)
    weight = torch.randn(O, C, generator=g, dtype=torch.float64)
    bias = torch.randn(O, generator=g, dtype=torch.float64) if with_bias else None
    got = linear_as_conv1x1(x, weight, bias, method=method)
    assert got.shape == (N, O)
    torch.testing.assert_close(got, F.linear(x, weight, bias), rtol=0, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    B=sizes,
    S=st.integers(1, 64),
    C=st.integers(1, 64),
    O=st.integers(1, 64),
    with_bias=st.booleans(),
    method=st.sampled_from(["conv", "einsum"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_linear_as_conv1x1_equals_f_linear_float32(
    B: int, S: int, C: int, O: int, with_bias: bool, method: str, seed: int
) -> None:
    g = _gen(seed)
    x = torch.randn(B, S, C, generator=g)
    weight = torch.randn(O, C, generator=g) / C**0.5
    bias = torch.randn(O, generator=g) if with_bias else None
    got = linear_as_conv1x1(x, weight, bias, method=method)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)


@SETTINGS
@given(
    B=st.integers(1, 3),
    H=st.integers(1, 6),
    W=st.integers(1, 6),
    C=st.integers(1, 10),
    O=st.integers(1, 10),
    seed=st.integers(0, 2**31 - 1),
)
def test_conv1x1_treats_height_and_width_as_batch_axes(
    B: int, H: int, W: int, C: int, O: int, seed: int
) -> None:
    """A 1x1 conv on any (B, C, H, W) is the Linear applied to each of the B*H*W pixels."""
    g = _gen(seed)
    x = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    weight = torch.randn(O, C, generator=g, dtype=torch.float64)
    bias = torch.randn(O, generator=g, dtype=torch.float64)
    by_conv = F.conv2d(x, linear_weight_to_conv1x1(weight), bias)
    by_linear = F.linear(x.permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)
    torch.testing.assert_close(by_conv, by_linear, rtol=0, atol=1e-12)


@SETTINGS
@given(O=st.integers(1, 12), I=st.integers(1, 12), seed=st.integers(0, 2**31 - 1))
def test_weight_conversions_round_trip_exactly(O: int, I: int, seed: int) -> None:
    weight = torch.randn(O, I, generator=_gen(seed), dtype=torch.float64)
    conv_weight = linear_weight_to_conv1x1(weight)
    assert conv_weight.shape == (O, I, 1, 1)
    assert torch.equal(conv_weight, weight.reshape(O, I, 1, 1))
    assert torch.equal(conv1x1_weight_to_linear(conv_weight), weight)
    # views, not copies: converting a checkpoint costs no memory
    assert conv_weight.data_ptr() == weight.data_ptr()


def test_conv_weight_from_nn_conv2d_drives_f_linear() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(7, 5, kernel_size=1, dtype=torch.float64)
    x = torch.randn(3, 4, 7, dtype=torch.float64)
    expected = bc1s_to_bsc(conv(bsc_to_bc1s(x)))
    got = F.linear(x, conv1x1_weight_to_linear(conv.weight), conv.bias)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@SETTINGS
@given(B=sizes, S=sizes, C=sizes, seed=st.integers(0, 2**31 - 1))
def test_layout_helpers(B: int, S: int, C: int, seed: int) -> None:
    x = torch.randn(B, S, C, generator=_gen(seed))
    y = bsc_to_bc1s(x)
    assert y.shape == (B, C, 1, S)
    b, s, c = B - 1, S // 2, C - 1
    assert y[b, c, 0, s] == x[b, s, c]
    assert torch.equal(y, x.permute(0, 2, 1).reshape(B, C, 1, S))
    back = bc1s_to_bsc(y)
    assert back.shape == (B, S, C)
    assert torch.equal(back, x)
    assert y.data_ptr() == x.data_ptr()  # a view


def test_rank_errors() -> None:
    with pytest.raises(ValueError, match=r"weight.*rank 2.*rank 4"):
        linear_weight_to_conv1x1(torch.zeros(3, 2, 1, 1))
    with pytest.raises(ValueError, match=r"weight.*rank 4.*rank 2"):
        conv1x1_weight_to_linear(torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"x.*rank 3.*rank 4"):
        bsc_to_bc1s(torch.zeros(1, 2, 3, 4))
    with pytest.raises(ValueError, match=r"x.*rank 4.*rank 3"):
        bc1s_to_bsc(torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match=r"x must have rank 2 or 3"):
        linear_as_conv1x1(torch.zeros(1, 2, 3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"weight must have rank 2 or 4"):
        linear_as_conv1x1(torch.zeros(1, 2, 3), torch.zeros(2, 3, 1))
    with pytest.raises(ValueError, match=r"bias.*rank 1.*rank 2"):
        linear_as_conv1x1(torch.zeros(1, 2, 3), torch.zeros(4, 3), torch.zeros(4, 1))


def test_type_errors() -> None:
    with pytest.raises(TypeError, match=r"weight.*Tensor.*list"):
        linear_weight_to_conv1x1([[1.0, 2.0]])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"x.*Tensor.*ndarray"):
        bsc_to_bc1s(np.zeros((1, 2, 3)))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"bias.*Tensor.*float"):
        linear_as_conv1x1(torch.zeros(1, 2, 3), torch.zeros(4, 3), 0.5)  # type: ignore[arg-type]
    x64 = torch.zeros(1, 2, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"weight.*float32.*x.*float64"):
        linear_as_conv1x1(x64, torch.zeros(4, 3))
    with pytest.raises(TypeError, match=r"bias.*float32.*x.*float64"):
        linear_as_conv1x1(x64, torch.zeros(4, 3, dtype=torch.float64), torch.zeros(4))


def test_kernel_not_1x1_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"1x1.*3x3"):
        conv1x1_weight_to_linear(torch.zeros(4, 2, 3, 3))
    with pytest.raises(ValueError, match=r"got kernel 1x2"):
        linear_as_conv1x1(torch.zeros(1, 5, 2), torch.zeros(4, 2, 1, 2))


def test_shape_mismatches_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"x.*\(B, C, 1, S\).*\(1, 2, 3, 4\)"):
        bc1s_to_bsc(torch.zeros(1, 2, 3, 4))
    with pytest.raises(ValueError, match=r"x.*\b3\b.*weight.*\(4, 5\)"):
        linear_as_conv1x1(torch.zeros(2, 6, 3), torch.zeros(4, 5))
    with pytest.raises(ValueError, match=r"bias.*\(4,\).*\(5,\)"):
        linear_as_conv1x1(torch.zeros(2, 6, 3), torch.zeros(4, 3), torch.zeros(5))


def test_unknown_method_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"method.*'einsum'.*'matmul'"):
        linear_as_conv1x1(torch.zeros(1, 2, 3), torch.zeros(4, 3), method="matmul")

"""Position embeddings: relative position index/bias, absolute embedding layouts, LePE conv."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ane_lib.nn.position import (
    PE_TYPES,
    AbsolutePositionEmbedding,
    LePEConv,
    RelativePositionBias,
    relative_position_index,
)


def _brute_force_bias(table: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
    """bias[h, q, k] = table[h, qi - ki + gh - 1, qj - kj + gw - 1], by explicit loops."""
    n = gh * gw
    out = torch.empty(table.shape[0], n, n, dtype=table.dtype)
    for q in range(n):
        for k in range(n):
            qi, qj = divmod(q, gw)
            ki, kj = divmod(k, gw)
            out[:, q, k] = table[:, qi - ki + gh - 1, qj - kj + gw - 1]
    return out


def test_pe_type_names() -> None:
    assert PE_TYPES == ("rpe", "single_rpe", "lepe", "none")


@settings(max_examples=25, deadline=None)
@given(gh=st.integers(1, 5), gw=st.integers(1, 5))
def test_relative_position_index_is_query_minus_key(gh: int, gw: int) -> None:
    index = relative_position_index((gh, gw))
    n = gh * gw
    assert index.shape == (n, n) and index.dtype == torch.int64
    for q in range(n):
        for k in range(n):
            qi, qj = divmod(q, gw)
            ki, kj = divmod(k, gw)
            assert index[q, k] == (qi - ki + gh - 1) * (2 * gw - 1) + (qj - kj + gw - 1)
    # every offset of the (2gh-1)(2gw-1) table is used, and nothing outside it
    assert set(index.flatten().tolist()) == set(range((2 * gh - 1) * (2 * gw - 1)))


@settings(max_examples=20, deadline=None)
@given(
    gh=st.integers(1, 4), gw=st.integers(1, 4), heads=st.integers(1, 3), seed=st.integers(0, 999)
)
def test_relative_position_bias_gathers_the_table(gh: int, gw: int, heads: int, seed: int) -> None:
    rpe = RelativePositionBias((gh, gw), heads).double()
    assert rpe.table.shape == (heads, 2 * gh - 1, 2 * gw - 1)
    with torch.no_grad():
        rpe.table.copy_(
            torch.randn(rpe.table.shape, generator=torch.Generator().manual_seed(seed)).double()
        )
    expected = _brute_force_bias(rpe.table.detach(), gh, gw)
    torch.testing.assert_close(rpe(), expected, rtol=0, atol=0)
    # key-major layout for split-head ANE attention: [h, k, 0, q] == [h, q, k]
    key_major = rpe.key_major()
    assert key_major.shape == (heads, gh * gw, 1, gh * gw)
    torch.testing.assert_close(key_major[:, :, 0, :], expected.transpose(1, 2), rtol=0, atol=0)


def test_relative_position_bias_state_dict_holds_the_table_only() -> None:
    rpe = RelativePositionBias((3, 5), 4)
    assert list(rpe.state_dict()) == ["table"]
    assert sum(p.numel() for p in rpe.parameters()) == 4 * 5 * 9


def test_relative_position_bias_gradient_reaches_the_table() -> None:
    rpe = RelativePositionBias(3, 2).double()
    weights = torch.randn(2, 9, 9, dtype=torch.float64)
    (rpe() * weights).sum().backward()
    assert rpe.table.grad is not None
    # the gradient of an entry is the sum of the weights of the pairs that use it
    index = relative_position_index(3).flatten()
    expected = torch.zeros(2, 25, dtype=torch.float64).index_add_(1, index, weights.flatten(1))
    torch.testing.assert_close(rpe.table.grad.flatten(1), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("layout", ["bsc", "bc1s"])
def test_absolute_embedding_adds_without_touching_the_input(layout: str) -> None:
    ape = AbsolutePositionEmbedding(6, 4, layout=layout).double()
    x = torch.randn((2, 6, 4) if layout == "bsc" else (2, 4, 1, 6), dtype=torch.float64)
    before = x.clone()
    y = ape(x)
    torch.testing.assert_close(x, before, rtol=0, atol=0)  # never in place
    torch.testing.assert_close(y, before + ape.weight, rtol=0, atol=0)


def test_absolute_embedding_loads_the_other_layout() -> None:
    standard = AbsolutePositionEmbedding(6, 4, layout="bsc").double()
    ane = AbsolutePositionEmbedding(6, 4, layout="bc1s").double()
    ane.load_state_dict(standard.state_dict())
    tokens = torch.randn(3, 6, 4, dtype=torch.float64)
    got = ane(tokens.transpose(1, 2).unsqueeze(2)).squeeze(2).transpose(1, 2)
    torch.testing.assert_close(got, standard(tokens), rtol=0, atol=0)
    back = AbsolutePositionEmbedding(6, 4, layout="bsc").double()
    back.load_state_dict(ane.state_dict())
    torch.testing.assert_close(back.weight, standard.weight, rtol=0, atol=0)


def test_lepe_conv_is_a_zero_padded_depthwise_3x3() -> None:
    conv = LePEConv(5).double()
    assert conv.weight.shape == (5, 1, 3, 3) and conv.bias is not None
    v = torch.randn(2, 5, 4, 6, dtype=torch.float64)
    expected = F.conv2d(F.pad(v, (1, 1, 1, 1)), conv.weight, conv.bias, groups=5)
    torch.testing.assert_close(conv(v), expected, rtol=0, atol=1e-14)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"grid_size must be >= 1"):
        RelativePositionBias((0, 3), 2)
    with pytest.raises(ValueError, match=r"num_heads.*\b0\b"):
        RelativePositionBias(3, 0)
    with pytest.raises(ValueError, match=r"layout.*'bc1s'.*'nchw'"):
        AbsolutePositionEmbedding(4, 4, layout="nchw")
    with pytest.raises(ValueError, match=r"x must have rank 3"):
        AbsolutePositionEmbedding(4, 4)(torch.zeros(1, 4, 1, 4))
    with pytest.raises(ValueError, match=r"dim must be >= 1"):
        LePEConv(0)

"""Multi-head attention: standard form against torch's attention, ANE form against the standard."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _reference import randomize
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ane_lib.nn.attention import MultiHeadAttention, MultiHeadAttentionANE
from ane_lib.nn.position import PE_TYPES


def _reference(attn: MultiHeadAttention, x: torch.Tensor) -> torch.Tensor:
    """The same layer written with torch's scaled_dot_product_attention and plain convolutions."""
    B, N, C = x.shape
    heads, d = attn.num_heads, attn.head_dim
    if attn.ape is not None:
        x = x + attn.ape.weight
    q, k, v = F.linear(x, attn.qkv.weight, attn.qkv.bias).split(C, dim=-1)

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(B, N, heads, d).transpose(1, 2)

    mask = None if attn.rpe is None else attn.rpe().expand(heads, N, N)
    out = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask)
    out = out.transpose(1, 2).reshape(B, N, C)
    if attn.lepe is not None:
        assert attn.grid_size is not None
        v_map = v.transpose(1, 2).reshape(B, C, *attn.grid_size)
        lepe = F.conv2d(v_map, attn.lepe.weight, attn.lepe.bias, padding=1, groups=C)
        out = out + lepe.flatten(2).transpose(1, 2)
    return F.linear(out, attn.proj.weight, attn.proj.bias)


def _to_bc1s(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).unsqueeze(2)


def _from_bc1s(x: torch.Tensor) -> torch.Tensor:
    return x.squeeze(2).transpose(1, 2)


cases = st.fixed_dictionaries(
    {
        "heads": st.integers(1, 4),
        "head_dim": st.sampled_from([1, 4, 8]),
        "gh": st.integers(1, 4),
        "gw": st.integers(1, 4),
        "batch": st.integers(1, 3),
        "pe": st.sampled_from(PE_TYPES),
        "seed": st.integers(0, 2**16),
    }
)


@settings(max_examples=30, deadline=None)
@given(cases)
def test_standard_form_equals_torch_scaled_dot_product_attention(case: dict) -> None:
    dim = case["heads"] * case["head_dim"]
    grid = (case["gh"], case["gw"])
    attn = MultiHeadAttention(dim, case["heads"], grid_size=grid, pe=case["pe"]).double()
    randomize(attn, case["seed"])
    x = torch.randn(case["batch"], grid[0] * grid[1], dim, dtype=torch.float64)
    torch.testing.assert_close(attn(x), _reference(attn, x), rtol=0, atol=1e-12)


def test_standard_form_without_pe_equals_nn_multiheadattention() -> None:
    attn = MultiHeadAttention(24, 3).double()
    randomize(attn, 0)
    torch_attn = nn.MultiheadAttention(24, 3, batch_first=True).double()
    torch_attn.in_proj_weight.data.copy_(attn.qkv.weight)
    torch_attn.in_proj_bias.data.copy_(attn.qkv.bias)
    torch_attn.out_proj.weight.data.copy_(attn.proj.weight)
    torch_attn.out_proj.bias.data.copy_(attn.proj.bias)
    x = torch.randn(2, 11, 24, dtype=torch.float64)
    expected, _ = torch_attn(x, x, x, need_weights=False)
    torch.testing.assert_close(attn(x), expected, rtol=0, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(cases)
def test_ane_form_equals_standard_form(case: dict) -> None:
    dim = case["heads"] * case["head_dim"]
    grid = (case["gh"], case["gw"])
    standard = MultiHeadAttention(dim, case["heads"], grid_size=grid, pe=case["pe"]).double()
    randomize(standard, case["seed"])
    ane = MultiHeadAttentionANE(dim, case["heads"], grid_size=grid, pe=case["pe"]).double()
    ane.load_state_dict(standard.state_dict())
    x = torch.randn(case["batch"], grid[0] * grid[1], dim, dtype=torch.float64)
    torch.testing.assert_close(_from_bc1s(ane(_to_bc1s(x))), standard(x), rtol=0, atol=1e-12)
    # and the way back: the standard form loads the ANE state dict
    back = MultiHeadAttention(dim, case["heads"], grid_size=grid, pe=case["pe"]).double()
    back.load_state_dict(ane.state_dict())
    for name, tensor in standard.state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], tensor, rtol=0, atol=0)


@settings(max_examples=15, deadline=None)
@given(cases)
def test_ane_form_backward_equals_standard_form(case: dict) -> None:
    """Input gradients and every parameter gradient agree; the ANE gradients, read back in the
    standard layout through load_state_dict, equal the standard ones."""
    dim = case["heads"] * case["head_dim"]
    grid = (case["gh"], case["gw"])
    standard = MultiHeadAttention(dim, case["heads"], grid_size=grid, pe=case["pe"]).double()
    randomize(standard, case["seed"])
    ane = MultiHeadAttentionANE(dim, case["heads"], grid_size=grid, pe=case["pe"]).double()
    ane.load_state_dict(standard.state_dict())
    g = torch.Generator().manual_seed(case["seed"])
    n = grid[0] * grid[1]
    x = torch.randn(case["batch"], n, dim, dtype=torch.float64, generator=g, requires_grad=True)
    x_ane = _to_bc1s(x.detach()).requires_grad_(True)
    upstream = torch.randn(case["batch"], n, dim, dtype=torch.float64, generator=g)
    (standard(x) * upstream).sum().backward()
    (_from_bc1s(ane(x_ane)) * upstream).sum().backward()
    assert x.grad is not None and x_ane.grad is not None
    torch.testing.assert_close(_from_bc1s(x_ane.grad), x.grad, rtol=0, atol=1e-12)
    grads = MultiHeadAttention(dim, case["heads"], grid_size=grid, pe=case["pe"]).double()
    grads.load_state_dict({n_: p.grad for n_, p in ane.named_parameters()})  # type: ignore[misc]
    for name, p in standard.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(grads.state_dict()[name], p.grad, rtol=0, atol=1e-12)


@settings(max_examples=10, deadline=None)
@given(cases)
def test_ane_form_equals_standard_form_in_float32(case: dict) -> None:
    dim = case["heads"] * case["head_dim"]
    grid = (case["gh"], case["gw"])
    standard = MultiHeadAttention(dim, case["heads"], grid_size=grid, pe=case["pe"])
    randomize(standard, case["seed"])
    ane = MultiHeadAttentionANE(dim, case["heads"], grid_size=grid, pe=case["pe"])
    ane.load_state_dict(standard.state_dict())
    x = torch.randn(case["batch"], grid[0] * grid[1], dim)
    with torch.no_grad():
        assert (_from_bc1s(ane(_to_bc1s(x))) - standard(x)).abs().max() <= 1e-4


def test_weight_layouts_of_the_two_forms() -> None:
    standard = MultiHeadAttention(64, 2, grid_size=(2, 3), pe="lepe")
    ane = MultiHeadAttentionANE(64, 2, grid_size=(2, 3), pe="lepe")
    s, a = standard.state_dict(), ane.state_dict()
    assert s["qkv.weight"].shape == (192, 64) and s["proj.weight"].shape == (64, 64)
    assert s["ape.weight"].shape == (1, 6, 64) and a["ape.weight"].shape == (1, 64, 1, 6)
    for name in ("q_proj", "k_proj", "v_proj", "proj"):
        assert a[f"{name}.weight"].shape == (64, 64, 1, 1) and a[f"{name}.bias"].shape == (64,)
    assert sum(p.numel() for p in standard.parameters()) == sum(p.numel() for p in ane.parameters())
    keys_before = list(s)
    ane.load_state_dict(s)
    assert list(s) == keys_before  # the caller's state dict is not modified


def test_single_head_rpe_shares_one_table() -> None:
    per_head = MultiHeadAttention(32, 4, grid_size=3, pe="rpe")
    shared = MultiHeadAttention(32, 4, grid_size=3, pe="single_rpe")
    assert per_head.rpe is not None and per_head.rpe.table.shape == (4, 5, 5)
    assert shared.rpe is not None and shared.rpe.table.shape == (1, 5, 5)
    with pytest.raises(RuntimeError, match=r"size mismatch for rpe.table"):
        shared.load_state_dict(per_head.state_dict())


def test_ane_form_trains() -> None:
    ane = MultiHeadAttentionANE(16, 2, grid_size=(2, 2), pe="rpe").double()
    x = torch.randn(3, 16, 1, 4, dtype=torch.float64, requires_grad=True)
    ane(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in ane.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"num_heads=3.*dim=32"):
        MultiHeadAttention(32, 3)
    with pytest.raises(ValueError, match=r"num_heads=5.*dim=64"):
        MultiHeadAttentionANE(64, 5)
    with pytest.raises(ValueError, match=r"pe.*'lepe'.*'abs'"):
        MultiHeadAttention(32, 1, grid_size=2, pe="abs")
    with pytest.raises(ValueError, match=r"grid_size.*pe='rpe'"):
        MultiHeadAttentionANE(32, 1, pe="rpe")
    attn = MultiHeadAttention(8, 2, grid_size=(2, 2), pe="rpe")
    with pytest.raises(ValueError, match=r"x.*\b5\b.*grid_size=\(2, 2\)"):
        attn(torch.zeros(1, 5, 8))
    with pytest.raises(ValueError, match=r"x must have rank 3 \(B, N, C\)"):
        attn(torch.zeros(1, 8, 1, 4))
    ane = MultiHeadAttentionANE(8, 2, grid_size=(2, 2), pe="none")
    with pytest.raises(ValueError, match=r"x.*\(B, 8, 1, N\).*\(1, 8, 2, 2\)"):
        ane(torch.zeros(1, 8, 2, 2))

"""MOAT block: the standard block against deeplab2's definition, the ANE block against it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _reference import deeplab2_mbconv, randomize
from hypothesis import given, settings
from hypothesis import strategies as st

from ane_lib.nn.moat_block import MOATBlock, MOATBlockANE
from ane_lib.nn.position import PE_TYPES


def _attend_one_grid(block: MOATBlock, t: torch.Tensor) -> torch.Tensor:
    """Attention over one (gh, gw, C) grid of tokens, from the block's weights and torch's SDPA."""
    attn = block.attention
    gh, gw, C = t.shape
    x = t.reshape(1, gh * gw, C)
    if attn.ape is not None:
        x = x + attn.ape.weight
    q, k, v = F.linear(x, attn.qkv.weight, attn.qkv.bias).split(C, dim=-1)
    heads = attn.num_heads

    def split(z: torch.Tensor) -> torch.Tensor:
        return z.reshape(1, gh * gw, heads, C // heads).transpose(1, 2)

    mask = None if attn.rpe is None else attn.rpe().expand(heads, -1, -1)
    out = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask)
    out = out.transpose(1, 2).reshape(1, gh * gw, C)
    if attn.lepe is not None:
        v_map = v.transpose(1, 2).reshape(1, C, gh, gw)
        out = out + F.conv2d(v_map, attn.lepe.weight, attn.lepe.bias, padding=1, groups=C).flatten(
            2
        ).transpose(1, 2)
    return F.linear(out, attn.proj.weight, attn.proj.bias).reshape(gh, gw, C)


def deeplab2_moat_block(block: MOATBlock, x: torch.Tensor) -> torch.Tensor:
    """deeplab2's MOATBlock.call (eval mode); windows cut out one by one with slicing."""
    assert block.mbconv.se is None  # deeplab2's MOAT block uses MBConv without SE
    y = deeplab2_mbconv(block.mbconv, x)
    norm = block.attention_norm
    t = F.layer_norm(y.permute(0, 2, 3, 1), norm.normalized_shape, norm.weight, norm.bias, 1e-5)
    B, H, W, _ = t.shape
    wh, ww = block.window or (H, W)
    out = torch.empty_like(t)
    for b in range(B):
        for i in range(0, H, wh):
            for j in range(0, W, ww):
                out[b, i : i + wh, j : j + ww] = _attend_one_grid(
                    block, t[b, i : i + wh, j : j + ww]
                )
    return y + out.permute(0, 3, 1, 2)


cases = st.fixed_dictionaries(
    {
        "cin": st.sampled_from([4, 8]),
        "heads": st.integers(1, 3),
        "stride": st.sampled_from([1, 2]),
        "size": st.sampled_from([(4, 4), (8, 4), (8, 8)]),
        "window": st.sampled_from([None, (2, 2), (2, 1), "map"]),
        "pe": st.sampled_from(PE_TYPES),
        "seed": st.integers(0, 2**16),
    }
)


def _build(case: dict) -> tuple[int, tuple[int, int], dict]:
    cout = 4 * case["heads"]
    h, w = case["size"]
    out_size = (h // case["stride"], w // case["stride"])
    window = out_size if case["window"] == "map" else case["window"]
    kwargs = dict(
        input_size=(h, w), stride=case["stride"], head_size=4, window=window, pe=case["pe"]
    )
    return cout, out_size, kwargs


@settings(max_examples=25, deadline=None)
@given(cases)
def test_standard_block_equals_deeplab2_definition(case: dict) -> None:
    cout, _, kwargs = _build(case)
    block = MOATBlock(case["cin"], cout, **kwargs).double().eval()
    randomize(block, case["seed"])
    x = torch.randn(2, case["cin"], *case["size"], dtype=torch.float64)
    torch.testing.assert_close(block(x), deeplab2_moat_block(block, x), rtol=0, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(cases, st.sampled_from([(False, False), (False, True), (True, True)]))
def test_ane_block_equals_standard_in_every_layout(case: dict, flat: tuple[bool, bool]) -> None:
    cout, (oh, ow), kwargs = _build(case)
    in_flat, out_flat = flat
    standard = MOATBlock(case["cin"], cout, **kwargs).double().eval()
    randomize(standard, case["seed"])
    ane = MOATBlockANE(case["cin"], cout, **kwargs, in_flat=in_flat, out_flat=out_flat)
    ane = ane.double().eval()
    ane.load_state_dict(standard.state_dict())
    h, w = case["size"]
    x = torch.randn(2, case["cin"], h, w, dtype=torch.float64)
    got = ane(x.reshape(2, case["cin"], 1, h * w) if in_flat else x)
    assert got.shape == ((2, cout, 1, oh * ow) if out_flat else (2, cout, oh, ow))
    torch.testing.assert_close(got.reshape(2, cout, oh, ow), standard(x), rtol=0, atol=1e-12)
    # the standard block loads the ANE block's weights back
    back = MOATBlock(case["cin"], cout, **kwargs).double().eval()
    back.load_state_dict(ane.state_dict())
    torch.testing.assert_close(back(x), standard(x), rtol=0, atol=0)


def test_global_attention_sizes_the_rpe_from_the_feature_map() -> None:
    block = MOATBlock(64, 128, input_size=(28, 28), stride=2)  # stage 3 of MOAT at 224
    assert block.attention.rpe is not None
    assert block.attention.rpe.table.shape == (4, 27, 27)  # P = 14
    local = MOATBlock(64, 128, input_size=(32, 32), stride=2, window=8)
    assert local.attention.rpe is not None and local.attention.rpe.table.shape == (4, 15, 15)


def test_ane_block_trains() -> None:
    ane = MOATBlockANE(8, 8, input_size=(4, 4), head_size=4, window=2, pe="lepe", out_flat=True)
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    ane(x).square().mean().backward()
    assert x.grad is not None
    for name, p in ane.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"head_size=32.*out_channels=48"):
        MOATBlock(16, 48, input_size=8)
    with pytest.raises(ValueError, match=r"window=3\b.*\(4, 4\)"):
        MOATBlockANE(16, 32, input_size=8, stride=2, window=3)
    with pytest.raises(ValueError, match=r"stride=2.*input_size=\(5, 6\)"):
        MOATBlock(16, 32, input_size=(5, 6), stride=2)
    block = MOATBlock(8, 8, input_size=4, head_size=4)
    with pytest.raises(ValueError, match=r"x.*\(4, 4\).*\(1, 8, 6, 6\)"):
        block(torch.zeros(1, 8, 6, 6))

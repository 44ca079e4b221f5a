"""Pre-norm transformer block against torch's nn.TransformerEncoderLayer, ANE form against it."""

from __future__ import annotations

import pytest
import torch
from _reference import randomize
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ane_lib.nn.transformer import Mlp, MlpANE, TransformerBlock, TransformerBlockANE


def _torch_layer(block: TransformerBlock, heads: int) -> nn.TransformerEncoderLayer:
    dim = block.norm1.normalized_shape[0]
    layer = nn.TransformerEncoderLayer(
        dim,
        heads,
        dim_feedforward=block.mlp.fc1.out_features,
        dropout=0.0,
        activation="gelu",
        layer_norm_eps=block.norm1.eps,
        batch_first=True,
        norm_first=True,
    ).double()
    with torch.no_grad():
        layer.self_attn.in_proj_weight.copy_(block.attn.qkv.weight)
        layer.self_attn.in_proj_bias.copy_(block.attn.qkv.bias)
        layer.self_attn.out_proj.weight.copy_(block.attn.proj.weight)
        layer.self_attn.out_proj.bias.copy_(block.attn.proj.bias)
        layer.linear1.load_state_dict(block.mlp.fc1.state_dict())
        layer.linear2.load_state_dict(block.mlp.fc2.state_dict())
        layer.norm1.load_state_dict(block.norm1.state_dict())
        layer.norm2.load_state_dict(block.norm2.state_dict())
    return layer.eval()


@settings(max_examples=15, deadline=None)
@given(
    heads=st.integers(1, 3),
    head_dim=st.sampled_from([2, 8]),
    tokens=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_standard_block_equals_torch_encoder_layer_and_ane_equals_it(
    heads: int, head_dim: int, tokens: int, seed: int
) -> None:
    dim = heads * head_dim
    block = TransformerBlock(dim, heads).double().eval()
    randomize(block, seed)
    x = torch.randn(2, tokens, dim, dtype=torch.float64)
    with torch.no_grad():
        expected = _torch_layer(block, heads)(x)
        torch.testing.assert_close(block(x), expected, rtol=0, atol=1e-12)
        ane = TransformerBlockANE(dim, heads).double().eval()
        ane.load_state_dict(block.state_dict())
        got = ane(x.transpose(1, 2).unsqueeze(2)).squeeze(2).transpose(1, 2)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_mlp_forms_load_each_other() -> None:
    mlp = Mlp(6, 10).double()
    randomize(mlp, 1)
    ane = MlpANE(6, 10).double()
    ane.load_state_dict(mlp.state_dict())
    assert ane.fc1.weight.shape == (10, 6, 1, 1)
    x = torch.randn(3, 5, 6, dtype=torch.float64)
    got = ane(x.transpose(1, 2).unsqueeze(2)).squeeze(2).transpose(1, 2)
    torch.testing.assert_close(got, mlp(x), rtol=0, atol=1e-13)
    back = Mlp(6, 10).double()
    back.load_state_dict(ane.state_dict())
    torch.testing.assert_close(back(x), mlp(x), rtol=0, atol=0)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"num_heads=5.*dim=192"):
        TransformerBlockANE(192, 5)
    with pytest.raises(ValueError, match=r"mlp_ratio.*\b0\b"):
        TransformerBlock(8, 2, mlp_ratio=0)
    with pytest.raises(ValueError, match=r"hidden.*\b0\b"):
        MlpANE(8, 0)

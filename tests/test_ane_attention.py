"""ane_lib.functional.attention: split-head attention and ANE masks against PyTorch's attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ane_lib.functional.attention import (
    MASK_VALUE,
    ane_attention_mask,
    ane_causal_mask,
    ane_key_padding_mask,
    merge_ane_masks,
    split_head_attention,
)

f64 = torch.float64


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, C, 1, S) -> the standard (B, N_h, S, d_h)."""
    b, c, _, s = x.shape
    return x.reshape(b, num_heads, c // num_heads, s).transpose(2, 3)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3),
    num_heads=st.integers(1, 4),
    head_dim=st.integers(1, 6),
    s_q=st.integers(1, 9),
    s_k=st.integers(1, 9),
    mask_kind=st.sampled_from(["none", "padding", "query_key", "per_head"]),
    seed=st.integers(0, 2**16),
)
def test_split_head_attention_equals_sdpa(
    batch: int, num_heads: int, head_dim: int, s_q: int, s_k: int, mask_kind: str, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    c = num_heads * head_dim
    q = torch.randn(batch, c, 1, s_q, generator=g, dtype=f64)
    k = torch.randn(batch, c, 1, s_k, generator=g, dtype=f64)
    v = torch.randn(batch, c, 1, s_k, generator=g, dtype=f64)
    # a boolean pattern in the standard layout (B, N_h, S_q, S_k), True = blocked, never a
    # whole row blocked (PyTorch gives NaN there)
    blocked = torch.rand(batch, num_heads, s_q, s_k, generator=g) < 0.4
    if mask_kind == "padding":
        blocked = blocked[:, :1, :1, :].expand_as(blocked)
    elif mask_kind == "query_key":
        blocked = blocked[:1, :1].expand_as(blocked)
    elif mask_kind == "none":
        blocked = torch.zeros_like(blocked)
    blocked = blocked.clone()
    blocked[..., 0] = False
    if mask_kind == "padding":
        mask = ane_key_padding_mask(blocked[:, 0, 0, :], f64)
    elif mask_kind == "query_key":
        mask = ane_attention_mask(blocked[0, 0], dtype=f64)
    elif mask_kind == "per_head":
        mask = ane_attention_mask(blocked.reshape(-1, s_q, s_k), num_heads, f64)
    else:
        mask = None
    out, weights = split_head_attention(q, k, v, num_heads, mask=mask, return_weights=True)
    ref = F.scaled_dot_product_attention(
        _heads(q, num_heads), _heads(k, num_heads), _heads(v, num_heads), attn_mask=~blocked
    )  # (B, N_h, S_q, d_h)
    expected = ref.transpose(2, 3).reshape(batch, c, 1, s_q)
    assert out.shape == (batch, c, 1, s_q)
    assert (out - expected).abs().max() <= 1e-12
    assert weights.shape == (batch, s_k, num_heads, s_q)
    # blocked keys get exactly zero weight; each query's weights sum to one over the keys
    assert torch.all(weights.permute(0, 2, 3, 1)[blocked] == 0)
    assert torch.allclose(weights.sum(dim=1), torch.ones((), dtype=f64))


def test_masks_layouts_and_values() -> None:
    causal = ane_causal_mask(4)
    assert causal.shape == (1, 4, 1, 4)
    expected = torch.tensor(
        [[0.0, MASK_VALUE, MASK_VALUE, MASK_VALUE], [0.0, 0.0, MASK_VALUE, MASK_VALUE]]
    )
    # row q of the standard causal mask is column q here: key k blocked when k > q
    assert torch.equal(causal[0, :, 0, :].T[:2], expected)
    standard = torch.nn.Transformer.generate_square_subsequent_mask(4)  # -inf above diagonal
    assert torch.equal(ane_attention_mask(standard), causal)
    padding = torch.tensor([[False, True]])
    assert ane_key_padding_mask(padding).flatten().tolist() == [0.0, MASK_VALUE]
    both = merge_ane_masks(causal, ane_key_padding_mask(torch.ones(1, 4, dtype=torch.bool)))
    assert both is not None and both.min() == MASK_VALUE  # clamped, not -80000
    assert merge_ane_masks(None, None) is None


def test_minus_40000_survives_fp16_where_minus_inf_does_not() -> None:
    """-inf in an fp16 softmax row that is fully blocked gives NaN; -40000 gives finite weights,
    and adding it to the logits stays inside fp16's range."""
    logits = torch.tensor([[1.0, -3.0, 2.0]], dtype=torch.float16)
    inf_mask = torch.full_like(logits, -torch.inf)
    assert torch.isnan((logits + inf_mask).float().softmax(-1)).all()
    mask = torch.full_like(logits, MASK_VALUE)
    shifted = logits + mask
    assert torch.isfinite(shifted).all()
    assert torch.isfinite(shifted.float().softmax(-1)).all()
    # two -40000 masks added without the clamp overflow fp16 to -inf
    assert torch.isinf(mask + mask).all()


def test_bad_arguments() -> None:
    x = torch.zeros(1, 4, 1, 3)
    with pytest.raises(ValueError, match="num_heads=3 must divide C=4"):
        split_head_attention(x, x, x, 3)
    with pytest.raises(ValueError, match=r"mask must broadcast to \(B, S_k, N_h, S_q\)"):
        split_head_attention(x, x, x, 2, mask=torch.zeros(1, 2, 1, 3))
    with pytest.raises(ValueError, match="height of 1"):
        split_head_attention(torch.zeros(1, 4, 2, 3), x, x, 2)
    with pytest.raises(TypeError, match="bool tensor .* or a float tensor"):
        ane_key_padding_mask(torch.zeros(1, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="num_heads must be given"):
        ane_attention_mask(torch.zeros(4, 3, 3, dtype=torch.bool))

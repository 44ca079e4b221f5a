"""LayerNormANE against nn.LayerNorm over the last axis of the permuted tensor."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ane_lib.nn.norm import LayerNormANE


def _reference(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """nn.LayerNorm over channels: NCHW -> NHWC -> LayerNorm -> NCHW."""
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 40),
    height=st.integers(1, 5),
    width=st.integers(1, 9),
    eps=st.sampled_from([1e-5, 1e-6, 1e-3]),
    seed=st.integers(0, 2**16),
)
def test_equals_layernorm_over_permuted_last_axis(
    batch: int, channels: int, height: int, width: int, eps: float, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    reference = nn.LayerNorm(channels, eps=eps).double()
    with torch.no_grad():
        reference.weight.copy_(torch.randn(channels, generator=g, dtype=torch.float64))
        reference.bias.copy_(torch.randn(channels, generator=g, dtype=torch.float64))
    ane = LayerNormANE(channels, eps=eps).double()
    ane.load_state_dict(reference.state_dict())  # same names and shapes
    x = 3 * torch.randn(batch, channels, height, width, generator=g, dtype=torch.float64) + 1
    torch.testing.assert_close(ane(x), _reference(x, reference), rtol=0, atol=1e-12)


def test_sequence_layout_b_c_1_s_equals_layernorm_of_b_s_c() -> None:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 17, 24, generator=g, dtype=torch.float64)  # (B, S, C)
    reference = nn.LayerNorm(24).double()
    with torch.no_grad():
        reference.weight.uniform_(0.5, 2.0, generator=g)
        reference.bias.normal_(generator=g)
    ane = LayerNormANE(24).double()
    ane.load_state_dict(reference.state_dict())
    got = ane(tokens.transpose(1, 2).unsqueeze(2))  # (B, C, 1, S)
    torch.testing.assert_close(
        got.squeeze(2).transpose(1, 2), reference(tokens), rtol=0, atol=1e-12
    )


def test_affine_is_x_hat_times_weight_plus_bias_not_apples_order() -> None:
    """(x_hat + bias) * weight (apple/ml-ane-transformers) differs; ours matches nn.LayerNorm."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 1, 5, generator=g, dtype=torch.float64)
    ane = LayerNormANE(8).double()
    with torch.no_grad():
        ane.weight.copy_(torch.linspace(0.5, 2.0, 8, dtype=torch.float64))
        ane.bias.copy_(torch.linspace(-1.0, 1.0, 8, dtype=torch.float64))
    plain = LayerNormANE(8, elementwise_affine=False).double()
    x_hat = plain(x)
    w, b = ane.weight[:, None, None], ane.bias[:, None, None]
    torch.testing.assert_close(ane(x), x_hat * w + b, rtol=0, atol=1e-14)
    assert (ane(x) - (x_hat + b) * w).abs().max() > 1e-3


def test_without_affine_has_no_parameters_and_unit_statistics() -> None:
    norm = LayerNormANE(16, elementwise_affine=False).double()
    assert list(norm.parameters()) == []
    x = torch.randn(3, 16, 2, 4, dtype=torch.float64) * 5 + 2
    y = norm(x)
    torch.testing.assert_close(
        y.mean(dim=1), torch.zeros(3, 2, 4, dtype=torch.float64), atol=1e-12, rtol=0
    )
    torch.testing.assert_close(
        y.var(dim=1, unbiased=False), torch.ones(3, 2, 4, dtype=torch.float64), atol=1e-4, rtol=0
    )


def test_backward_matches_layernorm() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 6, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    reference = nn.LayerNorm(6).double()
    with torch.no_grad():  # not the defaults (1, 0): a swapped or dropped gain must show
        reference.weight.copy_(torch.randn(6, generator=g, dtype=torch.float64))
        reference.bias.copy_(torch.randn(6, generator=g, dtype=torch.float64))
    ane = LayerNormANE(6).double()
    ane.load_state_dict(reference.state_dict())
    upstream = torch.randn(2, 6, 3, 4, generator=g, dtype=torch.float64)
    (ane(x) * upstream).sum().backward()
    (_reference(x_ref, reference) * upstream).sum().backward()
    assert x.grad is not None and x_ref.grad is not None
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-12)
    assert reference.weight.grad is not None and ane.weight.grad is not None
    torch.testing.assert_close(ane.weight.grad, reference.weight.grad, rtol=0, atol=1e-12)
    assert reference.bias.grad is not None and ane.bias.grad is not None
    torch.testing.assert_close(ane.bias.grad, reference.bias.grad, rtol=0, atol=1e-12)


def test_bad_inputs_are_rejected() -> None:
    norm = LayerNormANE(8)
    with pytest.raises(ValueError, match=r"x must have rank 4"):
        norm(torch.zeros(2, 8, 5))
    with pytest.raises(ValueError, match=r"\b8\b.*\(2, 5, 1, 3\)"):
        norm(torch.zeros(2, 5, 1, 3))
    with pytest.raises(ValueError, match=r"num_channels.*\b0\b"):
        LayerNormANE(0)
    with pytest.raises(TypeError, match=r"num_channels must be an int"):
        LayerNormANE(2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"eps.*-1"):
        LayerNormANE(4, eps=-1.0)

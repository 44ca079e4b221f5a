"""to_ane on torch's nn.TransformerEncoder(Layer): same call, same outputs, ANE form inside."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ane_lib.models import to_ane
from ane_lib.models._encoder_weights import UnsupportedModuleError
from ane_lib.models.torch_transformer import TransformerEncoderANE, TransformerEncoderLayerANE
from ane_lib.nn import EncoderLayerANE, LayerNormANE

f64 = torch.float64


def _randomize(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        for m in model.modules():
            if isinstance(m, nn.LayerNorm) and m.weight is not None:
                m.weight.add_(1.0)


def _encoder_layer(dim: int, heads: int, **kw: object) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(dim, heads, dtype=f64, **kw)  # type: ignore[arg-type]


@pytest.fixture
def math_path() -> Iterator[None]:
    """PyTorch's documented computation, not its fused fast path: in torch 2.13 on the CPU,
    nn.TransformerEncoder's fast path returns NaN for some attention masks with an even number
    of heads (and zeros at padded positions), while the layer-by-layer path does not."""
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(True)


configs = st.fixed_dictionaries(
    {
        "num_layers": st.integers(1, 3),
        "heads": st.integers(1, 4),
        "head_dim": st.integers(1, 5),
        "ffn": st.integers(1, 12),
        "seq_len": st.integers(1, 9),
        "batch": st.integers(1, 3),
        "batch_first": st.booleans(),
        "norm_first": st.booleans(),
        "activation": st.sampled_from(["relu", "gelu", nn.GELU(approximate="tanh"), nn.ReLU()]),
        "bias": st.booleans(),
        "final_norm": st.booleans(),
        "padding": st.booleans(),
        "attn_mask": st.sampled_from(["none", "causal", "bool", "float", "per_head"]),
        "seed": st.integers(0, 2**16),
    }
)


@settings(max_examples=40, deadline=None)
@given(cfg=configs)
@pytest.mark.usefixtures("math_path")
def test_encoder_equals_torch_on_real_positions(cfg: dict) -> None:  # type: ignore[type-arg]
    dim = cfg["heads"] * cfg["head_dim"]
    layer = _encoder_layer(
        dim,
        cfg["heads"],
        dim_feedforward=cfg["ffn"],
        activation=cfg["activation"],
        batch_first=cfg["batch_first"],
        norm_first=cfg["norm_first"],
        bias=cfg["bias"],
    )
    norm = nn.LayerNorm(dim, dtype=f64, bias=cfg["bias"]) if cfg["final_norm"] else None
    encoder = nn.TransformerEncoder(
        layer, cfg["num_layers"], norm=norm, enable_nested_tensor=False
    ).eval()
    _randomize(encoder, cfg["seed"])
    ane = to_ane(encoder)
    assert isinstance(ane, TransformerEncoderANE)
    assert all(isinstance(m, EncoderLayerANE) for m in ane.layers)
    assert not any(isinstance(m, (nn.Linear, nn.LayerNorm)) for m in ane.modules())

    g = torch.Generator().manual_seed(cfg["seed"])
    b, s = cfg["batch"], cfg["seq_len"]
    src = torch.randn(b, s, dim, generator=g, dtype=f64)
    if not cfg["batch_first"]:
        src = src.transpose(0, 1).contiguous()
    kwargs: dict[str, torch.Tensor] = {}
    padding = torch.zeros(b, s, dtype=torch.bool)
    if cfg["padding"]:
        lengths = torch.randint(1, s + 1, (b,), generator=g)
        padding = torch.arange(s)[None, :] >= lengths[:, None]
        kwargs["src_key_padding_mask"] = padding
    blocked = torch.rand(s, s, generator=g) < 0.3
    blocked[:, 0] = False  # every query keeps a key that is never padding
    if cfg["attn_mask"] == "causal":
        kwargs["mask"] = nn.Transformer.generate_square_subsequent_mask(s, dtype=f64)
    elif cfg["attn_mask"] == "bool":
        kwargs["mask"] = blocked
    elif cfg["attn_mask"] == "float":
        kwargs["mask"] = torch.randn(s, s, generator=g, dtype=f64).masked_fill(blocked, -torch.inf)
    elif cfg["attn_mask"] == "per_head":
        per_head = torch.rand(b * cfg["heads"], s, s, generator=g) < 0.3
        per_head[..., 0] = False
        kwargs["mask"] = per_head
    if cfg["padding"] and cfg["attn_mask"] in ("bool", "per_head"):
        kwargs["src_key_padding_mask"] = padding  # both bool: PyTorch wants matching types
    elif cfg["padding"] and cfg["attn_mask"] != "none":
        kwargs["src_key_padding_mask"] = torch.zeros(b, s, dtype=f64).masked_fill(
            padding, -torch.inf
        )
    with torch.no_grad():
        expected = encoder(src, **kwargs)
        got = ane(src, **kwargs)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    real = ~padding if cfg["batch_first"] else ~padding.T
    assert (got - expected).abs()[real].max() <= 1e-9


@settings(max_examples=10, deadline=None)
@given(batch_first=st.booleans(), norm_first=st.booleans(), seed=st.integers(0, 2**16))
def test_layer_equals_torch_batched_and_unbatched(
    batch_first: bool, norm_first: bool, seed: int
) -> None:
    layer = _encoder_layer(
        8, 2, dim_feedforward=6, batch_first=batch_first, norm_first=norm_first
    ).eval()
    _randomize(layer, seed)
    ane = to_ane(layer)
    assert isinstance(ane, TransformerEncoderLayerANE)
    g = torch.Generator().manual_seed(seed)
    for shape in ((2, 5, 8) if batch_first else (5, 2, 8), (5, 8)):
        src = torch.randn(*shape, generator=g, dtype=f64)
        causal = nn.Transformer.generate_square_subsequent_mask(5, dtype=f64)
        with torch.no_grad():
            for kwargs in ({}, {"src_mask": causal, "is_causal": True}):
                expected = layer(src, **kwargs)
                assert (ane(src, **kwargs) - expected).abs().max() <= 1e-9
    assert isinstance(ane.layer.norm1, LayerNormANE)


def test_float32_outputs_and_is_causal_alone() -> None:
    torch.manual_seed(0)
    encoder = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(16, 4, 32, batch_first=True), 2, enable_nested_tensor=False
    ).eval()
    ane = to_ane(encoder)
    src = torch.randn(2, 6, 16)
    causal = nn.Transformer.generate_square_subsequent_mask(6)
    with torch.no_grad():
        expected = encoder(src, mask=causal, is_causal=True)
        assert (ane(src, is_causal=True) - expected).abs().max() < 1e-5
        assert (ane(src, mask=causal) - expected).abs().max() < 1e-5


class _OtherAttention(nn.Module):
    def forward(self, *args: object, **kwargs: object) -> None:
        return None


class _MyLayer(nn.TransformerEncoderLayer):
    pass


def test_unsupported_sources_are_named() -> None:
    layer = nn.TransformerEncoderLayer(8, 2, 16).eval()
    layer.self_attn = _OtherAttention()  # type: ignore[assignment]
    with pytest.raises(UnsupportedModuleError, match=r"'layer.self_attn' is a .*_OtherAttention"):
        to_ane(layer)
    with pytest.raises(UnsupportedModuleError, match=r"'layer' is a .*_MyLayer"):
        to_ane(_MyLayer(8, 2, 16).eval())
    training = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1)  # training mode
    with pytest.raises(ValueError, match=r"'layer.dropout' is a Dropout\(p=0.1\) in training"):
        to_ane(training)
    silu = nn.TransformerEncoderLayer(8, 2, 16, activation=nn.SiLU()).eval()
    with pytest.raises(UnsupportedModuleError, match=r"'layer.activation' is SiLU"):
        to_ane(silu)
    kdim = nn.TransformerEncoderLayer(8, 2, 16).eval()
    kdim.self_attn = nn.MultiheadAttention(8, 2, kdim=4, vdim=4)
    with pytest.raises(UnsupportedModuleError, match="kdim/vdim"):
        to_ane(kdim)
    ane = to_ane(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True).eval())
    nested = torch.nested.nested_tensor([torch.randn(3, 8), torch.randn(2, 8)])
    with pytest.raises(TypeError, match="nested tensor"):
        ane(nested)
    ane.train()
    with pytest.raises(RuntimeError, match="no dropout"):
        ane(torch.randn(1, 3, 8))
    with pytest.raises(TypeError, match="TransformerEncoderLayer.*got Linear"):
        to_ane(nn.Linear(2, 2))

"""DeiT-tiny: parameter count, standard form against torch's encoder, ANE form against it."""

from __future__ import annotations

import pytest
import torch
from _reference import randomize_model
from torch import nn

from ane_lib.models import DeiT, DeiTANE, create_model, to_ane, to_standard


def test_parameter_count_is_deit_tiny() -> None:
    model = create_model("deit_tiny", device="meta")
    count = sum(p.numel() for p in model.parameters())
    assert abs(count / 1e6 - 5.72) <= 0.002 * 5.72
    assert count == 5_717_416  # timm's deit_tiny_patch16_224
    ane = create_model("deit_tiny", form="ane", device="meta")
    assert sum(p.numel() for p in ane.parameters()) == count


def _torch_reference(model: DeiT, x: torch.Tensor) -> torch.Tensor:
    """The same network from torch's own layers: patch conv, nn.TransformerEncoderLayer x 12."""
    c = model.config
    tokens = nn.functional.conv2d(
        x, model.patch_embed.weight, model.patch_embed.bias, stride=c.patch_size
    )
    tokens = tokens.flatten(2).transpose(1, 2)
    tokens = torch.cat([model.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
    tokens = tokens + model.pos_embed.weight
    for block in model.blocks:
        layer = (
            nn.TransformerEncoderLayer(
                c.width,
                c.num_heads,
                c.mlp_ratio * c.width,
                dropout=0.0,
                activation="gelu",
                layer_norm_eps=c.ln_eps,
                batch_first=True,
                norm_first=True,
            )
            .to(x.dtype)
            .eval()
        )
        with torch.no_grad():
            layer.self_attn.in_proj_weight.copy_(block.attn.qkv.weight)
            layer.self_attn.in_proj_bias.copy_(block.attn.qkv.bias)
            layer.self_attn.out_proj.load_state_dict(block.attn.proj.state_dict())
            layer.linear1.load_state_dict(block.mlp.fc1.state_dict())
            layer.linear2.load_state_dict(block.mlp.fc2.state_dict())
            layer.norm1.load_state_dict(block.norm1.state_dict())
            layer.norm2.load_state_dict(block.norm2.state_dict())
        tokens = layer(tokens)
    cls = nn.functional.layer_norm(
        tokens[:, 0], (c.width,), model.norm.weight, model.norm.bias, c.ln_eps
    )
    return nn.functional.linear(cls, model.head.weight, model.head.bias)


def test_standard_form_equals_torch_transformer_encoder() -> None:
    model = create_model("deit_tiny", image_size=32, num_classes=7, dtype=torch.float64).eval()
    randomize_model(model)
    assert isinstance(model, DeiT)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _torch_reference(model, x), rtol=0, atol=1e-10)


@pytest.mark.parametrize("size", [32, 64])
def test_to_ane_equals_the_standard_form(size: int) -> None:
    standard = create_model("deit_tiny", image_size=size, num_classes=10, dtype=torch.float64)
    randomize_model(standard, size)
    standard.eval()
    ane = to_ane(standard)
    assert isinstance(ane, DeiTANE)
    assert ane.cls_token.shape == (1, 192, 1, 1)
    assert ane.pos_embed.weight.shape == (1, 192, 1, (size // 16) ** 2 + 1)
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        expected = standard(x)
        assert (ane(x) - expected).abs().max() <= 1e-9
        assert (ane.float()(x.float()) - standard.float()(x.float())).abs().max() <= 1e-4
    back = to_standard(ane)
    for name, tensor in standard.state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], tensor, rtol=0, atol=0, msg=name)


def test_both_forms_train() -> None:
    for form in ("standard", "ane"):
        model = create_model("deit_tiny", form=form, image_size=32, num_classes=3)
        loss = nn.functional.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 2]))
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), (form, name)


def test_bad_input_is_rejected() -> None:
    model = create_model("deit_tiny", image_size=32, form="ane")
    with pytest.raises(ValueError, match=r"x.*\(B, 3, 32, 32\).*\(1, 3, 48, 48\)"):
        model(torch.zeros(1, 3, 48, 48))
    with pytest.raises(TypeError, match=r"config.*DeiTConfig.*str"):
        DeiTANE("deit_tiny")  # type: ignore[arg-type]

"""perturb_weights_: a deterministic stand-in for training that leaves no two constants equal;
unit_variance_init_: every linear and conv layer rescaled to unit output scale."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ane_lib.models import (
    create_model,
    perturb_weights_,
    to_ane,
    to_standard,
    unit_variance_init_,
)
from ane_lib.nn import LayerNormANE


def small_model(dtype: torch.dtype = torch.float32) -> nn.Module:
    """A few hundred values, most of them equal at initialisation (norm scales, shifts, stats)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False),
        nn.BatchNorm2d(8),
        nn.GELU(),
        nn.Conv2d(8, 8, 1),
        LayerNormANE(8),
        nn.BatchNorm2d(8),
    ).to(dtype)


def float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def count_equal_pairs(tensors: list[torch.Tensor]) -> int:
    """Pairs of tensors with the same shape and the same values (what the converter merges)."""
    return sum(
        a.shape == b.shape and bool(torch.equal(a, b))
        for i, a in enumerate(tensors)
        for b in tensors[i + 1 :]
    )


def test_no_two_values_equal_in_a_small_model() -> None:
    model = small_model()
    values = torch.cat([t.flatten() for t in float_state(model).values()])
    norm_values = 4 * 8 + 2 * 8 + 4 * 8  # two batch norms and a layer norm: all ones and zeros
    assert values.numel() - values.unique().numel() >= norm_values - 2
    perturb_weights_(model)
    values = torch.cat([t.flatten() for t in float_state(model).values()])
    assert values.unique().numel() == values.numel()


def test_no_two_tensors_equal_in_a_moat() -> None:
    model = create_model("tiny_moat_0", form="ane", pe="lepe", image_size=64, num_classes=10)
    tensors = list(float_state(model).values())
    assert count_equal_pairs(tensors) > 50  # every norm's scale and shift, every BN's statistics
    perturb_weights_(model)
    assert count_equal_pairs(list(float_state(model).values())) == 0


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32), scale=st.floats(0.01, 1.0), noise=st.floats(0.001, 0.5))
def test_deterministic_and_changes_every_float_value(seed: int, scale: float, noise: float) -> None:
    model, twin = small_model(), small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert perturb_weights_(model, seed=seed, scale=scale, noise=noise) is model
    perturb_weights_(twin, seed=seed, scale=scale, noise=noise)
    after, twin_after = model.state_dict(), twin.state_dict()
    for name, old in before.items():
        torch.testing.assert_close(after[name], twin_after[name], rtol=0, atol=0)
        if old.is_floating_point():
            assert (after[name] != old).all(), name
        else:
            assert torch.equal(after[name], old), name  # num_batches_tracked
    other = perturb_weights_(small_model(), seed=seed + 1, scale=scale, noise=noise)
    assert not torch.equal(other[0].weight, model[0].weight)


def test_scale_and_noise_are_what_they_say() -> None:
    model = nn.Linear(200, 300, dtype=torch.float64)
    w0 = model.weight.detach().clone()
    perturb_weights_(model, seed=3, scale=0.1, noise=0.0)
    ratio = model.weight.detach() / w0
    assert (ratio >= 1).all() and (ratio < 1.1).all() and ratio.std() > 0.02
    w1 = model.weight.detach().clone()
    perturb_weights_(model, seed=3, scale=0.0, noise=0.05)
    shift = model.weight.detach() - w1
    assert abs(shift.mean().item()) < 0.002 and abs(shift.std().item() / 0.05 - 1) < 0.02
    w2 = model.weight.detach().clone()
    perturb_weights_(model, seed=3, scale=0.0, noise=0.0)
    assert torch.equal(model.weight, w2)


def test_running_variances_stay_positive() -> None:
    norm = nn.BatchNorm2d(64)
    norm.running_var.fill_(1e-4)
    perturb_weights_(norm, noise=10.0)
    var = norm.running_var
    assert var is not None and (var > 1e-4).all() and (var < 1.1e-4).all()
    assert norm.running_mean is not None and norm.running_mean.abs().max() > 5  # shifted


def test_keeps_dtype_device_requires_grad_and_tied_weights() -> None:
    model = small_model(torch.float64)
    model[0].weight.requires_grad_(False)
    model.add_module("head", nn.Linear(8, 8, dtype=torch.float64))
    model.add_module("tied", nn.Linear(8, 8, dtype=torch.float64))
    model.tied.weight = model.head.weight  # one tensor, two names in the state dict
    w = model.head.weight.detach().clone()
    perturb_weights_(model, noise=0.0, scale=0.1)
    assert model.tied.weight is model.head.weight
    ratio = model.head.weight.detach() / w
    assert (ratio >= 1).all() and (ratio < 1.1).all()  # changed once, not twice
    assert not model[0].weight.requires_grad and model[3].weight.requires_grad
    assert all(p.dtype == torch.float64 for p in model.parameters())
    meta = nn.Linear(4, 4, device="meta")
    perturb_weights_(meta)
    assert meta.weight.device.type == "meta" and isinstance(meta.weight, nn.Parameter)


def test_leaves_non_persistent_buffers_alone() -> None:
    model = nn.Module()
    model.register_buffer("derived", torch.ones(5), persistent=False)
    model.register_buffer("learnt", torch.ones(5))
    perturb_weights_(model)
    assert torch.equal(model.derived, torch.ones(5)) and (model.learnt != 1).all()


@pytest.mark.parametrize(
    "name,options",
    [
        ("tiny_moat_0", dict(pe="rpe", attention="local", window=2, image_size=64)),
        ("deit_tiny", dict(image_size=32)),
    ],
)
def test_both_forms_stay_equivalent(name: str, options: dict[str, object]) -> None:
    x = torch.randn(2, 3, options["image_size"], options["image_size"], dtype=torch.float64)
    for form, convert in (("standard", to_ane), ("ane", to_standard)):
        model = create_model(name, form=form, num_classes=10, dtype=torch.float64, **options)
        perturb_weights_(model.eval(), seed=4)
        other = convert(model)
        with torch.no_grad():
            expected = model(x)
            assert (other(x) - expected).abs().max() <= 1e-9 * expected.abs().max()


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match=r"model.*Module.*Tensor"):
        perturb_weights_(torch.ones(3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"seed.*int.*1\.5"):
        perturb_weights_(nn.Linear(2, 2), seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"seed.*-1"):
        perturb_weights_(nn.Linear(2, 2), seed=-1)
    with pytest.raises(ValueError, match=r"scale.*-0\.1"):
        perturb_weights_(nn.Linear(2, 2), scale=-0.1)
    with pytest.raises(ValueError, match=r"noise.*nan"):
        perturb_weights_(nn.Linear(2, 2), noise=float("nan"))
    with pytest.raises(TypeError, match=r"noise.*float.*'0\.1'"):
        perturb_weights_(nn.Linear(2, 2), noise="0.1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"scale.*float.*True"):
        perturb_weights_(nn.Linear(2, 2), scale=True)  # type: ignore[arg-type]


class Standardised(nn.Conv2d):
    """A conv that overrides forward (weight standardisation): not rescaled."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / w.std((1, 2, 3), keepdim=True)
        return self._conv_forward(x, w, self.bias)


def deep_model() -> nn.Module:
    """Convs drawn with std 0.02 whatever their fan-in and zero biases (Hugging Face's habit):
    the output shrinks about fivefold per layer."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(8):
        conv = nn.Conv2d(3 if i == 0 else 16, 16, 3, padding=1)
        nn.init.normal_(conv.weight, std=0.02)
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.ReLU()]
    shared = nn.Linear(16, 16)
    return nn.Sequential(
        *layers,
        nn.Flatten(2),
        Transpose(),
        shared,
        nn.GELU(),
        shared,
        Transpose(),
        nn.Unflatten(2, (8, 8)),
        Standardised(16, 4, 1),
    )


class Transpose(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


def test_unit_variance_init_gives_every_layer_unit_scale() -> None:
    model = deep_model()
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert float(model[:16](x).std()) < 1e-4  # vanishing before
    weights = {n: p.clone() for n, p in model.named_parameters()}
    assert unit_variance_init_(model, x) is model
    stds: dict[str, float] = {}

    def measure(name: str) -> Any:
        def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
            stds.setdefault(name, float(out.std()))

        return hook

    hooks = [
        m.register_forward_hook(measure(n))
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    for name, std in stds.items():
        if name != "23":  # the standardising conv is left alone
            assert std == pytest.approx(1.0, rel=1e-4), name
    # a rescale divides weight and bias by one number per layer; a layer run twice (the shared
    # linear) is rescaled once; the conv that overrides forward is untouched
    for name, p in model.named_parameters():
        if name.endswith("weight"):
            scale = weights[name].flatten()[0] / p.flatten()[0]
            torch.testing.assert_close(weights[name], p * scale)
            bias = name.replace("weight", "bias")
            torch.testing.assert_close(weights[bias], model.get_parameter(bias) * scale)
    assert torch.equal(model[23].weight, weights["23.weight"])
    assert not model.training


def test_unit_variance_init_is_exactly_one_forward_pass_of_the_rescaled_model() -> None:
    model, x = deep_model(), torch.rand(1, 3, 8, 8)
    seen: list[torch.Tensor] = []
    hook = model.register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    unit_variance_init_(model, x)
    with torch.no_grad():
        model(x)
    hook.remove()
    torch.testing.assert_close(seen[0], seen[1], rtol=1e-4, atol=1e-4)  # float32 rounding


def test_unit_variance_init_leaves_a_constant_layer_and_checks_its_argument() -> None:
    zero = nn.Linear(4, 4)
    nn.init.zeros_(zero.weight)
    nn.init.zeros_(zero.bias)
    unit_variance_init_(zero, torch.rand(2, 4))
    assert torch.count_nonzero(zero.weight) == 0
    with pytest.raises(TypeError, match="model"):
        unit_variance_init_("model")  # type: ignore[arg-type]

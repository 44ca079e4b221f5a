"""perturb_weights_: a deterministic stand-in for training that leaves no two constants equal."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ane_lib.models import create_model, perturb_weights_, to_ane, to_standard
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

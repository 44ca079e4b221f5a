"""Re-parameterisable blocks and reparameterize(model): same outputs in eval mode, fewer ops."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ane_lib.coreml import export, read_export_metadata, report, run
from ane_lib.models import create_model
from ane_lib.nn import MBConvBlock, MBConvBlockANE, RepConv2d, reparameterize

D = torch.float64
M = TypeVar("M", bound=nn.Module)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randomize(module: M, seed: int, dtype: torch.dtype = D) -> M:
    """Random parameters and batch-norm statistics, eval mode."""
    g = gen(seed)
    module.to(dtype).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=dtype))
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(0.3 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.weight.add_(1.0)
    return module


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-10) -> None:
    a, b = a.detach(), b.detach()
    assert a.shape == b.shape, (a.shape, b.shape)
    torch.testing.assert_close(a, b, atol=rtol * max(1.0, float(b.abs().max())), rtol=0)


def count(model: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


# --------------------------------------------------------------------------- RepConv2d


@settings(max_examples=30, deadline=None)
@given(
    groups=st.sampled_from([1, 2, 4]),
    widths=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    kernel=st.sampled_from([1, 3, 5]),
    stride=st.integers(1, 2),
    branches=st.integers(1, 3),
    scale=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_repconv_reparameterizes_to_one_equal_conv(
    groups: int,
    widths: tuple[int, int],
    kernel: int,
    stride: int,
    branches: int,
    scale: bool,
    seed: int,
) -> None:
    cin, cout = groups * widths[0], groups * widths[1]
    block = RepConv2d(
        cin, cout, kernel, stride=stride, groups=groups, num_branches=branches, scale_branch=scale
    )
    randomize(block, seed)
    assert (block.identity is not None) == (cin == cout and stride == 1)
    before = copy.deepcopy(block.state_dict())
    conv = block.reparameterize()
    assert all(torch.equal(v, before[k]) for k, v in block.state_dict().items())
    assert conv.kernel_size == (kernel, kernel) and conv.groups == groups
    x = torch.randn(2, cin, 7, 8, dtype=D, generator=gen(seed))
    with torch.no_grad():
        close(conv(x), block(x))


def test_repconv_trained_then_reparameterized() -> None:
    """A few SGD steps move the weights and the running statistics; the conv still matches."""
    torch.manual_seed(0)
    block = RepConv2d(4, 4, 3, num_branches=2).double()
    head = nn.Conv2d(4, 1, 1).double()
    opt = torch.optim.SGD([*block.parameters(), *head.parameters()], lr=0.1)
    for step in range(5):
        x = torch.randn(8, 4, 6, 6, dtype=D, generator=gen(step))
        loss = head(F.relu(block(x))).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    block.eval()
    assert block.identity is not None and block.identity.running_mean is not None
    assert not torch.equal(block.identity.running_mean, torch.zeros(4, dtype=D))
    x = torch.randn(2, 4, 9, 9, dtype=D, generator=gen(99))
    with torch.no_grad():
        close(block.reparameterize()(x), block(x))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"in_channels": 2, "out_channels": 2, "kernel_size": 4}, "kernel_size must be odd"),
        ({"in_channels": 2, "out_channels": 2, "stride": 2, "identity": True}, "identity=True"),
        ({"in_channels": 3, "out_channels": 2, "groups": 2}, "groups=2 must divide"),
        ({"in_channels": 0, "out_channels": 2}, "in_channels must be >= 1"),
    ],
)
def test_repconv_rejects_bad_arguments(kwargs: dict[str, int | bool], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        RepConv2d(**kwargs)  # type: ignore[arg-type]


def test_repconv_reparameterize_needs_eval_mode() -> None:
    with pytest.raises(ValueError, match=r"eval mode.*\.eval\(\)"):
        RepConv2d(2, 2).train().reparameterize()


# --------------------------------------------------------------------------- reparameterize


def test_reparameterize_a_sequential_model() -> None:
    model = nn.Sequential(
        RepConv2d(3, 4, 3),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.BatchNorm2d(4),  # BN -> 1x1 conv without padding: folded forward
        nn.Conv2d(4, 2, 1),
    )
    randomize(model, 0)
    before = copy.deepcopy(model.state_dict())
    folded = reparameterize(model)
    assert count(folded, nn.BatchNorm2d) == 0 and count(folded, RepConv2d) == 0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    x = torch.randn(2, 3, 8, 8, dtype=D, generator=gen(1))
    with torch.no_grad():
        close(folded(x), model(x))


@pytest.mark.parametrize("flat", [False, True])
def test_reparameterize_folds_every_batch_norm_of_an_mbconv(flat: bool) -> None:
    """Pre-norm -> 1x1 conv and conv -> BN twice, in the grid and in the flat layout."""
    block: nn.Module
    if flat:
        block = MBConvBlockANE(4, 8, input_size=8, stride=2, in_flat=True, out_flat=True)
        x = torch.randn(2, 4, 1, 64, dtype=D, generator=gen(0))
    else:
        block = MBConvBlock(4, 8, stride=2)
        x = torch.randn(2, 4, 8, 8, dtype=D, generator=gen(0))
    randomize(block, 1)
    assert count(reparameterize(block), nn.BatchNorm2d) == 3  # without the graph: none known
    folded = reparameterize(block, x)
    assert count(folded, nn.BatchNorm2d) == 0
    with torch.no_grad():
        close(folded(x), block(x))


class ConvReshapeNorm(nn.Module):
    """Depthwise conv on the grid -> reshape -> BN. ``mix=False`` reshapes to the flat
    ``(B, C, 1, H*W)``, keeping the batch and channel axes; ``mix=True`` to
    ``(B, C / 2, 1, 2*H*W)``, which changes what a channel is: that BN must stay."""

    def __init__(self, mix: bool) -> None:
        super().__init__()
        self.mix = mix
        self.conv = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
        self.bn = nn.BatchNorm2d(2 if mix else 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)  # (B, 4, H, W)
        channels = 2 if self.mix else 4
        return self.bn(y.reshape(y.shape[0], channels, 1, -1))


@pytest.mark.parametrize("mix", [False, True])
def test_reparameterize_folds_through_channel_keeping_reshapes_only(mix: bool) -> None:
    model = randomize(ConvReshapeNorm(mix), 0)
    x = torch.randn(2, 4, 5, 6, dtype=D, generator=gen(1))
    folded = reparameterize(model, x)
    assert count(folded, nn.BatchNorm2d) == (1 if mix else 0)
    with torch.no_grad():
        close(folded(x), model(x))


class Residual(nn.Module):
    """conv -> BN whose conv output is also added back: folding the BN would change the sum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)
        self.pre = nn.BatchNorm2d(3)
        self.padded = nn.Conv2d(3, 3, 3, padding=1)
        self.shared = nn.Conv2d(3, 3, 1)
        self.shared_bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        y = self.bn(y) + y
        y = self.padded(self.pre(y))  # BN before a zero-padded conv: not exact
        return self.shared_bn(self.shared(self.shared(y)))  # a conv called twice


def test_reparameterize_leaves_what_is_not_exact() -> None:
    model = randomize(Residual(), 0)
    x = torch.randn(1, 3, 6, 6, dtype=D, generator=gen(1))
    folded = reparameterize(model, x)
    assert count(folded, nn.BatchNorm2d) == 3
    with torch.no_grad():
        close(folded(x), model(x))


class VAE(nn.Module):
    """Has a method named reparameterize that takes arguments: not a re-param block."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.exp(0.5 * logvar)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class InPlaceBlock(nn.Module):
    """MobileOne's convention: reparameterize() rewrites the block itself and returns None."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 2, 3, padding=1)
        self.b: nn.Conv2d | None = nn.Conv2d(2, 2, 3, padding=1)

    def reparameterize(self) -> None:
        assert self.b is not None
        with torch.no_grad():
            self.a.weight += self.b.weight
            self.a.bias += self.b.bias  # type: ignore[operator]
        self.b = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) if self.b is None else self.a(x) + self.b(x)


def test_reparameterize_block_conventions() -> None:
    vae = VAE()
    assert isinstance(reparameterize(vae), VAE)
    model = randomize(nn.Sequential(InPlaceBlock(), nn.ReLU()), 0)
    folded = reparameterize(model)
    assert isinstance(folded, nn.Sequential)
    assert folded[0].b is None and model[0].b is not None
    x = torch.randn(1, 2, 5, 5, dtype=D, generator=gen(1))
    with torch.no_grad():
        close(folded(x), model(x))
    assert isinstance(reparameterize(randomize(RepConv2d(2, 2), 0)), nn.Conv2d)


def test_reparameterize_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        reparameterize("model")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="example_input must be a tensor"):
        reparameterize(nn.Conv2d(1, 1, 1), [torch.zeros(1)])  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="could not capture the model"):
        reparameterize(nn.Conv2d(1, 1, 1), torch.zeros(1, 2, 3, 3))


@pytest.mark.parametrize("form", ["standard", "ane"])
def test_reparameterize_a_moat_in_float64(form: str) -> None:
    torch.manual_seed(0)
    model = create_model(
        "tiny_moat_0",
        form=form,
        pe="lepe",
        attention="local",
        window=2,
        image_size=64,
        num_classes=10,
    )
    randomize(model, 0)
    x = torch.randn(1, 3, 64, 64, dtype=D, generator=gen(1))
    folded = reparameterize(model, x)
    assert count(model, nn.BatchNorm2d) > 0 and count(folded, nn.BatchNorm2d) == 0
    with torch.no_grad():
        close(folded(x), model(x), rtol=1e-9)


# --------------------------------------------------------------------------- export


class PreNorm(nn.Module):
    """BN -> 1x1 conv, the pattern coremltools leaves as a batch_norm op; then conv -> BN."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(3)
        self.proj = nn.Conv2d(3, 8, 1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.bn(self.conv(self.proj(self.norm(x)))))


def test_export_reparameterize_removes_the_batch_norms(tmp_path: Path) -> None:
    model = randomize(PreNorm(), 0, dtype=torch.float32)
    shape = (1, 3, 8, 8)
    plain = export(model, shape, tmp_path / "plain.mlpackage", precision="fp32")
    folded = export(
        model, shape, tmp_path / "folded.mlpackage", precision="fp32", reparameterize=True
    )
    assert count(model, nn.BatchNorm2d) == 2  # the user's model is untouched
    hist_plain, hist_folded = report(plain).op_histogram, report(folded).op_histogram
    assert hist_plain.get("batch_norm", 0) == 1  # the pre-norm
    assert hist_folded.get("batch_norm", 0) == 0
    assert sum(hist_folded.values()) == sum(hist_plain.values()) - 1
    assert read_export_metadata(folded)["reparameterized"] is True
    x = torch.rand(shape, generator=gen(3))
    with torch.no_grad():
        want = model(x).numpy()
    for package in (plain, folded):
        got = next(iter(run(package, {"image": x.numpy()}, precision="fp32").values()))
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()

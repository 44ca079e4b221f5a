"""MOAT: published parameter counts, and the ANE form equal to the standard form."""

from __future__ import annotations

import pytest
import torch
from _reference import randomize_model
from torch import nn

from ane_lib.functional import RankRecorder
from ane_lib.models import MOAT, MOATANE, create_model, flat_layout, to_ane, to_standard
from ane_lib.models.config import MOAT_PE_TYPES

# Published parameter counts (M) with per-head RPE, global attention, 224 input, 1000 classes
# (deeplab2 moat.py / MOAT paper).
PUBLISHED_M = {
    "tiny_moat_0": 3.36,
    "tiny_moat_1": 5.12,
    "tiny_moat_2": 9.77,
    "tiny_moat_3": 19.53,
    "moat_0": 27.85,
    "moat_1": 41.60,
    "moat_2": 73.42,
    "moat_3": 189.96,
    "moat_4": 483.21,
}


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(PUBLISHED_M))
def test_parameter_count_matches_the_paper_within_0_2_percent(name: str) -> None:
    # The meta device holds shapes only: MOAT-4's 483M parameters cost no memory.
    standard = create_model(name, form="standard", pe="rpe", attention="global", device="meta")
    count = _count(standard)
    assert abs(count / 1e6 - PUBLISHED_M[name]) <= 0.002 * PUBLISHED_M[name], count
    assert _count(create_model(name, form="ane", device="meta")) == count


def test_meta_count_equals_the_count_of_a_real_model() -> None:
    real = create_model("tiny_moat_0")
    assert next(real.parameters()).device.type == "cpu"
    assert _count(real) == _count(create_model("tiny_moat_0", device="meta")) == 3_355_348


def test_position_embedding_sizes_at_224() -> None:
    model = create_model("tiny_moat_0", device="meta")
    assert isinstance(model, MOAT)
    tables = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.endswith("rpe.table")}
    assert tables["stages.2.0.attention.rpe.table"] == (4, 27, 27)  # P = 14 at stride 16
    assert tables["stages.3.0.attention.rpe.table"] == (8, 13, 13)  # P = 7 at stride 32
    lepe = create_model("tiny_moat_0", pe="lepe", attention="local", window=7, device="meta")
    shapes = {k: tuple(v.shape) for k, v in lepe.state_dict().items()}
    assert shapes["stages.2.0.attention.ape.weight"] == (1, 49, 128)
    assert shapes["stages.2.0.attention.lepe.weight"] == (128, 1, 3, 3)
    none = create_model("tiny_moat_0", pe="none", device="meta")
    single = create_model("tiny_moat_0", pe="single_rpe", device="meta")
    per_head_rpe = 7 * 4 * 27 * 27 + 2 * 8 * 13 * 13
    shared_rpe = 7 * 27 * 27 + 2 * 13 * 13
    assert _count(model) - _count(none) == per_head_rpe
    assert _count(single) - _count(none) == shared_rpe


# (image size, window): stage 3 is size/16, stage 4 size/32; the window 2 at 64 partitions
# stage 3 (4x4 -> 4 windows) and covers stage 4 (2x2) whole; at 128 the window 4 does likewise.
SIZES = [(64, 2), (128, 4)]


@pytest.mark.parametrize("size,window", SIZES)
@pytest.mark.parametrize("attention", ["global", "local"])
@pytest.mark.parametrize("pe", MOAT_PE_TYPES)
def test_to_ane_equals_the_standard_form(pe: str, attention: str, size: int, window: int) -> None:
    standard = create_model(
        "tiny_moat_0",
        pe=pe,
        attention=attention,
        window=window if attention == "local" else None,
        image_size=size,
        num_classes=10,
        dtype=torch.float64,
    )
    randomize_model(standard)
    standard.eval()
    ane = to_ane(standard)
    assert isinstance(ane, MOATANE) and not ane.training and ane.config == standard.config
    x = torch.randn(
        2, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        expected = standard(x)
        assert expected.shape == (2, 10) and expected.abs().max() > 0.1
        assert (ane(x) - expected).abs().max() <= 1e-9
        standard32, ane32 = standard.float(), ane.float()
        assert (ane32(x.float()) - standard32(x.float())).abs().max() <= 1e-4


def test_windows_on_every_attention_stage() -> None:
    """Window 2 at 128 partitions stage 3 (8x8) into 16 windows and stage 4 (4x4) into 4."""
    standard = create_model(
        "tiny_moat_0", pe="rpe", attention="local", window=2, image_size=128, dtype=torch.float64
    )
    randomize_model(standard, 5)
    standard.eval()
    ane = to_ane(standard)
    x = torch.randn(1, 3, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        assert (ane(x) - standard(x)).abs().max() <= 1e-9


def test_flat_layout_is_chosen_where_the_width_is_not_a_multiple_of_32() -> None:
    assert [flat_layout(w) for w in (8, 16, 28, 32, 56, 64)] == [
        True,
        True,
        True,
        False,
        True,
        False,
    ]
    ane = create_model("tiny_moat_1", form="ane", image_size=256, device="meta")
    assert isinstance(ane, MOATANE)
    assert ane.stage_flat == (False, False, True, True)  # 64, 32 | 16, 8
    ane224 = create_model("tiny_moat_1", form="ane", image_size=224, device="meta")
    assert ane224.stage_flat == (True, True, True, True)  # type: ignore[union-attr]


def test_ane_form_never_uses_a_tensor_of_rank_above_5() -> None:
    standard = create_model("tiny_moat_0", pe="lepe", attention="local", window=2, image_size=64)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        recorder = RankRecorder()
        with recorder:
            standard.eval()(x)
        assert recorder.max_rank == 6  # the standard form's window partition is rank 6
        recorder = RankRecorder()
        with recorder:
            to_ane(standard)(x)
        assert recorder.max_rank == 5


def test_forward_and_backward_run_in_both_forms_and_agree_in_training() -> None:
    standard = create_model(
        "tiny_moat_0", pe="lepe", attention="local", window=2, image_size=64, num_classes=5
    ).double()
    randomize_model(standard, 2)
    ane = to_ane(standard)
    assert standard.training and ane.training
    x = torch.randn(4, 3, 64, 64, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 3])
    losses = []
    for model in (standard, ane):
        loss = nn.functional.cross_entropy(model(x), target)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=0, atol=1e-10)
    ane_grads = dict(ane.named_parameters())
    checked = 0
    for name, p in standard.named_parameters():
        assert p.grad is not None, name
        twin = ane_grads.get(name)
        if twin is not None and twin.shape == p.shape:  # same layout: compare directly
            assert twin.grad is not None, name
            torch.testing.assert_close(twin.grad, p.grad, rtol=1e-7, atol=1e-10, msg=name)
            checked += 1
    assert checked > 100
    # every gradient, the relaid ones too: the ANE gradients read back in the standard layout
    # through to_standard's state-dict conversion equal the standard gradients
    ane_grads_as_state = {
        **{k: v for k, v in ane.state_dict().items() if k not in ane_grads},
        **{k: p.grad for k, p in ane_grads.items()},
    }
    grads_back = to_standard(ane)
    grads_back.load_state_dict(ane_grads_as_state)  # type: ignore[arg-type]
    back_state = grads_back.state_dict()
    for name, p in standard.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(back_state[name], p.grad, rtol=1e-7, atol=1e-10, msg=name)
    for name, p in ane.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # both forms updated their batch statistics alike, and to_standard carries them back
    back = to_standard(ane)
    ane_state = ane.state_dict()
    for (name, a), b in zip(standard.state_dict().items(), back.state_dict().values(), strict=True):
        torch.testing.assert_close(b.double(), a.double(), rtol=0, atol=1e-12, msg=name)
        if name in ane_state and ane_state[name].shape == b.shape:
            torch.testing.assert_close(b, ane_state[name], rtol=0, atol=0, msg=name)


def test_input_of_the_wrong_size_is_rejected() -> None:
    model = create_model("tiny_moat_0", image_size=64, form="ane")
    with pytest.raises(ValueError, match=r"x.*\(B, 3, 64, 64\).*\(1, 3, 96, 96\)"):
        model(torch.zeros(1, 3, 96, 96))
    with pytest.raises(ValueError, match=r"x must have rank 4"):
        model(torch.zeros(3, 64, 64))
    with pytest.raises(TypeError, match=r"config.*MOATConfig.*dict"):
        MOAT({})  # type: ignore[arg-type]

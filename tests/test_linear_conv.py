"""ane_lib.nn.linear_conv: Linear <-> 1x1 Conv2d modules; weights loaded across the two by type."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Sequence

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ane_lib.functional.projection import bc1s_to_bsc, bsc_to_bc1s
from ane_lib.nn.linear_conv import (
    Conv1x1LoadHooks,
    conv1x1_from_linear,
    linear_from_conv1x1,
    load_linear_state_dict,
    register_linear_to_conv1x1_hook,
    register_projection_layout_hooks,
)

SETTINGS = settings(max_examples=25, deadline=None)


# --- twin models: the same architecture written with nn.Linear on (B, S, C) and with 1x1 nn.Conv2d
# on (B, C, 1, S). Their module names match, so one's state dict is meant for the other.


class LinearMLP(nn.Module):
    """Linear layers with GELU between them, then a head named ``head_name``. x: (B, S, C)."""

    def __init__(
        self, widths: Sequence[int], n_out: int, head_name: str, bias: bool = True
    ) -> None:
        super().__init__()
        self.head_name = head_name
        self.layers = nn.ModuleList(
            nn.Linear(a, b, bias=bias) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        setattr(self, head_name, nn.Linear(widths[-1], n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = nn.functional.gelu(layer(x))
        return getattr(self, self.head_name)(x)


class ConvMLP(nn.Module):
    """The twin of :class:`LinearMLP` with 1x1 convolutions. x: (B, C, 1, S)."""

    def __init__(
        self, widths: Sequence[int], n_out: int, head_name: str, bias: bool = True
    ) -> None:
        super().__init__()
        self.head_name = head_name
        self.layers = nn.ModuleList(
            nn.Conv2d(a, b, 1, bias=bias) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        setattr(self, head_name, nn.Conv2d(widths[-1], n_out, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = nn.functional.gelu(layer(x))
        return getattr(self, self.head_name)(x)


def _twins(
    widths: Sequence[int], n_out: int, head_name: str, bias: bool = True
) -> tuple[LinearMLP, ConvMLP]:
    lin = LinearMLP(widths, n_out, head_name, bias).double()
    conv = ConvMLP(widths, n_out, head_name, bias).double()
    return lin, conv


def _assert_twins_agree(lin: nn.Module, conv: nn.Module, x: torch.Tensor) -> None:
    expected = lin(x)
    got = bc1s_to_bsc(conv(bsc_to_bc1s(x)))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


# --- module conversions


@SETTINGS
@given(
    I=st.integers(1, 12),
    O=st.integers(1, 12),
    bias=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**31 - 1),
)
def test_conv1x1_from_linear_matches_linear(
    I: int, O: int, bias: bool, dtype: torch.dtype, seed: int
) -> None:
    torch.manual_seed(seed)
    linear = nn.Linear(I, O, bias=bias, dtype=dtype)
    conv = conv1x1_from_linear(linear)
    assert isinstance(conv, nn.Conv2d)
    assert conv.weight.shape == (O, I, 1, 1)
    assert (conv.bias is None) == (not bias)
    assert conv.weight.dtype == dtype and conv.weight.device == linear.weight.device
    x = torch.randn(2, 3, 5, I, dtype=dtype)  # (B, H, W, I): any spatial size works
    tol = {"rtol": 0, "atol": 1e-12} if dtype == torch.float64 else {}
    torch.testing.assert_close(conv(x.permute(0, 3, 1, 2)), linear(x).permute(0, 3, 1, 2), **tol)


@SETTINGS
@given(
    I=st.integers(1, 12),
    O=st.integers(1, 12),
    bias=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16]),
    seed=st.integers(0, 2**31 - 1),
)
def test_round_trips_are_exact(I: int, O: int, bias: bool, dtype: torch.dtype, seed: int) -> None:
    torch.manual_seed(seed)
    linear = nn.Linear(I, O, bias=bias, dtype=dtype)
    back = linear_from_conv1x1(conv1x1_from_linear(linear))
    assert isinstance(back, nn.Linear) and back.weight.dtype == dtype
    assert torch.equal(back.weight, linear.weight)
    assert (back.bias is None) == (not bias)
    if bias:
        assert torch.equal(back.bias, linear.bias)

    conv = nn.Conv2d(I, O, 1, bias=bias, dtype=dtype)
    again = conv1x1_from_linear(linear_from_conv1x1(conv))
    assert torch.equal(again.weight, conv.weight)
    if bias:
        assert torch.equal(again.bias, conv.bias)


def test_linear_from_conv1x1_matches_conv() -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(6, 4, kernel_size=1, dtype=torch.float64)
    linear = linear_from_conv1x1(conv)
    x = torch.randn(2, 6, 1, 9, dtype=torch.float64)
    torch.testing.assert_close(bsc_to_bc1s(linear(bc1s_to_bsc(x))), conv(x), rtol=0, atol=1e-12)


def test_conversions_copy_and_keep_flags() -> None:
    linear = nn.Linear(3, 2)
    linear.weight.requires_grad_(False)
    linear.eval()
    conv = conv1x1_from_linear(linear)
    assert conv.weight.data_ptr() != linear.weight.data_ptr()  # independent storage
    assert not conv.weight.requires_grad and conv.bias.requires_grad
    assert not conv.training
    with torch.no_grad():
        conv.weight.zero_()
    assert linear.weight.abs().sum() > 0  # editing the copy left the source alone
    back = linear_from_conv1x1(conv)
    assert not back.weight.requires_grad and not back.training


def test_padding_same_and_valid_are_accepted() -> None:
    for padding in ("same", "valid"):
        conv = nn.Conv2d(3, 2, 1, padding=padding)
        assert torch.equal(linear_from_conv1x1(conv).weight, conv.weight[:, :, 0, 0])


def test_conversion_errors() -> None:
    with pytest.raises(TypeError, match=r"linear.*Linear.*Conv2d"):
        conv1x1_from_linear(nn.Conv2d(3, 2, 1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uninitialized lazy layer"):
        conv1x1_from_linear(nn.LazyLinear(4))
    with pytest.raises(TypeError, match=r"conv.*Conv2d.*Linear"):
        linear_from_conv1x1(nn.Linear(3, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"kernel_size.*\(1, 1\).*\(3, 3\)"):
        linear_from_conv1x1(nn.Conv2d(3, 2, 3))
    with pytest.raises(ValueError, match=r"groups.*groups=2"):
        linear_from_conv1x1(nn.Conv2d(4, 2, 1, groups=2))
    with pytest.raises(ValueError, match=r"stride.*\(2, 2\)"):
        linear_from_conv1x1(nn.Conv2d(3, 2, 1, stride=2))
    with pytest.raises(ValueError, match=r"padding.*\(1, 1\)"):
        linear_from_conv1x1(nn.Conv2d(3, 2, 1, padding=1))


# --- loading Linear checkpoints into 1x1 convolutions


@SETTINGS
@given(
    widths=st.lists(st.integers(1, 10), min_size=1, max_size=4),
    n_out=st.integers(1, 6),
    head_name=st.sampled_from(["classifier", "proj_out", "fc_final", "head"]),
    bias=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_conv_twin_loads_linear_state_dict(
    widths: list[int], n_out: int, head_name: str, bias: bool, seed: int
) -> None:
    torch.manual_seed(seed)
    lin, conv = _twins(widths, n_out, head_name, bias)
    result = load_linear_state_dict(conv, lin.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    x = torch.randn(2, 5, widths[0], dtype=torch.float64)
    _assert_twins_agree(lin, conv, x)


@pytest.mark.parametrize("head_name", ["proj_out", "fc_final"])
def test_heads_without_lin_or_classifier_in_their_names_load(head_name: str) -> None:
    """Apple's rule reshapes keys containing "lin" or "classifier"; these heads have neither."""
    torch.manual_seed(2)
    lin, conv = _twins([8, 16], 3, head_name)
    state = lin.state_dict()
    head_key = f"{head_name}.weight"
    assert "lin" not in head_key and "classifier" not in head_key
    with pytest.raises(RuntimeError, match=f"size mismatch for {head_key}"):
        conv.load_state_dict(state)  # without the hook
    hooks = register_linear_to_conv1x1_hook(conv)
    assert head_name in hooks.module_names
    conv.load_state_dict(state)
    hooks.remove()
    _assert_twins_agree(lin, conv, torch.randn(3, 4, 8, dtype=torch.float64))


class TimelineTagger(nn.Module):
    """A module mix: an embedding whose name contains "lin", a 3x3 conv, a grouped 1x1 conv."""

    def __init__(self, proj: type[nn.Linear] | type[nn.Conv2d]) -> None:
        super().__init__()
        self.timeline_embed = nn.Embedding(10, 4)
        self.stem = nn.Conv2d(4, 4, 3, padding=1)
        self.mixer = nn.Conv2d(4, 4, 1, groups=2)
        self.proj_out = proj(4, 6, 1) if proj is nn.Conv2d else proj(4, 6)


def test_only_dense_1x1_convs_are_hooked_and_other_weights_load_unchanged() -> None:
    source = TimelineTagger(nn.Linear).double()
    target = TimelineTagger(nn.Conv2d).double()
    hooks = register_linear_to_conv1x1_hook(target)
    assert hooks.module_names == ("proj_out",)  # not the embedding, the 3x3 or the grouped conv
    target.load_state_dict(source.state_dict())
    hooks.remove()
    for key, value in source.state_dict().items():
        loaded = target.state_dict()[key]
        if key == "proj_out.weight":
            assert torch.equal(loaded, value[:, :, None, None])
        else:
            assert torch.equal(loaded, value), key
    assert target.timeline_embed.weight.ndim == 2


def test_nested_modules_use_their_own_prefix() -> None:
    torch.manual_seed(3)
    lin_block, conv_block = _twins([6, 12], 6, "proj_out")
    lin = nn.ModuleDict({"blocks": nn.Sequential(lin_block), "fc_final": nn.Linear(6, 2)}).double()
    conv = nn.ModuleDict(
        {"blocks": nn.Sequential(conv_block), "fc_final": nn.Conv2d(6, 2, 1)}
    ).double()
    hooks = register_linear_to_conv1x1_hook(conv)
    assert set(hooks.module_names) == {"blocks.0.layers.0", "blocks.0.proj_out", "fc_final"}
    hooks.remove()
    # hooks registered on an inner module still work when the outer model loads
    with (
        register_linear_to_conv1x1_hook(conv_block),
        register_linear_to_conv1x1_hook(conv["fc_final"]) as root_hooks,
    ):
        assert root_hooks.module_names == ("",)
        conv.load_state_dict(lin.state_dict())
    x = torch.randn(2, 7, 6, dtype=torch.float64)
    expected = lin["fc_final"](lin["blocks"](x))
    got = bc1s_to_bsc(conv["fc_final"](conv["blocks"](bsc_to_bc1s(x))))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_caller_state_dict_is_not_modified_and_hooks_are_removed() -> None:
    lin, conv = _twins([4, 5], 2, "proj_out")
    state = lin.state_dict()
    before = {k: (v.shape, v.clone()) for k, v in state.items()}
    load_linear_state_dict(conv, state)
    for key, (shape, value) in before.items():
        assert state[key].shape == shape and torch.equal(state[key], value)
    with pytest.raises(RuntimeError, match="size mismatch"):
        conv.load_state_dict(state)  # load_linear_state_dict removed its hooks


def test_conv_checkpoints_still_load_with_the_hook() -> None:
    _, conv = _twins([4, 5], 2, "proj_out")
    _, other = _twins([4, 5], 2, "proj_out")
    load_linear_state_dict(other, conv.state_dict())
    for key, value in conv.state_dict().items():
        assert torch.equal(other.state_dict()[key], value)


def test_strict_loading_reports_missing_and_unexpected_keys() -> None:
    lin, conv = _twins([4, 5], 2, "proj_out")
    state = lin.state_dict()
    missing = {k: v for k, v in state.items() if k != "proj_out.bias"}
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "proj_out.bias"'):
        load_linear_state_dict(conv, missing)
    extra = {**state, "fc_extra.weight": torch.zeros(2, 5)}
    with pytest.raises(RuntimeError, match=r'Unexpected key\(s\) in state_dict: "fc_extra.weight"'):
        load_linear_state_dict(conv, extra)
    result = load_linear_state_dict(
        conv, {**missing, "fc_extra.weight": torch.zeros(2)}, strict=False
    )
    assert result.missing_keys == ["proj_out.bias"]
    assert result.unexpected_keys == ["fc_extra.weight"]
    assert torch.equal(conv.proj_out.weight, state["proj_out.weight"][:, :, None, None])


def test_wrong_linear_shape_names_key_and_both_shapes() -> None:
    lin, conv = _twins([4, 5], 2, "proj_out")
    state = {**lin.state_dict(), "proj_out.weight": torch.zeros(3, 5, dtype=torch.float64)}
    with pytest.raises(
        ValueError,
        match=r"state_dict\['proj_out.weight'\].*\(3, 5\).*\(2, 5, 1, 1\).*\(2, 5\)",
    ):
        load_linear_state_dict(conv, state)


def test_hook_argument_errors() -> None:
    with pytest.raises(TypeError, match=r"model.*Module.*dict"):
        register_linear_to_conv1x1_hook({})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Sequential.*1x1"):
        register_linear_to_conv1x1_hook(nn.Sequential(nn.Linear(2, 2), nn.Conv2d(2, 2, 3)))
    _, conv = _twins([4, 5], 2, "proj_out")
    with pytest.raises(TypeError, match=r"state_dict.*mapping.*list"):
        load_linear_state_dict(conv, [])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"strict.*bool.*\b1\b"):
        load_linear_state_dict(conv, {}, strict=1)  # type: ignore[arg-type]


def test_hooks_object() -> None:
    _, conv = _twins([3, 3], 1, "proj_out")
    hooks = register_linear_to_conv1x1_hook(conv)
    assert isinstance(hooks, Conv1x1LoadHooks)
    assert "proj_out" in repr(hooks)
    hooks.remove()
    hooks.remove()  # idempotent
    assert all(len(m._load_state_dict_pre_hooks) == 0 for m in conv.modules())


# --- hooks in both directions: each Linear and each dense 1x1 conv loads the other's weight


@SETTINGS
@given(
    widths=st.lists(st.integers(1, 10), min_size=1, max_size=4),
    n_out=st.integers(1, 6),
    head_name=st.sampled_from(["classifier", "proj_out", "fc_final", "head"]),
    bias=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_twins_load_each_others_state_dicts(
    widths: list[int], n_out: int, head_name: str, bias: bool, seed: int
) -> None:
    torch.manual_seed(seed)
    lin, conv = _twins(widths, n_out, head_name, bias)
    names = tuple(f"layers.{i}" for i in range(len(widths) - 1)) + (head_name,)
    for model in (lin, conv):
        assert register_projection_layout_hooks(model).module_names == names
    conv_state = conv.state_dict()
    before = {k: v.clone() for k, v in conv_state.items()}
    lin.load_state_dict(conv_state)  # conv -> Linear
    for key, value in before.items():  # the caller's state dict is left as it was
        assert conv_state[key].shape == value.shape and torch.equal(conv_state[key], value)
    x = torch.randn(2, 5, widths[0], dtype=torch.float64)
    _assert_twins_agree(lin, conv, x)
    torch.manual_seed(seed + 1)
    fresh_lin, _ = _twins(widths, n_out, head_name, bias)
    conv.load_state_dict(fresh_lin.state_dict())  # Linear -> conv
    _assert_twins_agree(fresh_lin, conv, x)


def test_projection_hooks_choose_modules_by_type() -> None:
    for proj in (nn.Linear, nn.Conv2d):
        assert register_projection_layout_hooks(TimelineTagger(proj)).module_names == ("proj_out",)
    source = TimelineTagger(nn.Conv2d).double()
    target = TimelineTagger(nn.Linear).double()
    register_projection_layout_hooks(target)
    target.load_state_dict(source.state_dict())
    for key, value in source.state_dict().items():
        expected = value[:, :, 0, 0] if key == "proj_out.weight" else value
        assert torch.equal(target.state_dict()[key], expected), key


def test_wrong_conv_shape_for_a_linear_names_key_and_both_shapes() -> None:
    lin, conv = _twins([4, 5], 2, "proj_out")
    register_projection_layout_hooks(lin)
    for bad in ((3, 5, 1, 1), (2, 5, 3, 3)):
        state = {**conv.state_dict(), "proj_out.weight": torch.zeros(bad, dtype=torch.float64)}
        shape = ", ".join(map(str, bad))
        with pytest.raises(
            ValueError,
            match=rf"state_dict\['proj_out.weight'\].*\({shape}\).*\(2, 5\).*\(2, 5, 1, 1\)",
        ):
            lin.load_state_dict(state)
    register_projection_layout_hooks(conv)
    state = {**lin.state_dict(), "proj_out.weight": torch.zeros(2, 4, dtype=torch.float64)}
    with pytest.raises(
        ValueError,
        match=r"state_dict\['proj_out.weight'\].*\(2, 4\).*\(2, 5, 1, 1\).*\(2, 5\)",
    ):
        conv.load_state_dict(state)


def test_projection_hooks_survive_deepcopy_and_pickle() -> None:
    torch.manual_seed(4)
    lin, conv = _twins([3, 6], 2, "head")
    register_projection_layout_hooks(lin)
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    for clone in (copy.deepcopy(lin), pickle.loads(pickle.dumps(lin))):
        clone.load_state_dict(conv.state_dict())  # the copy's own hooks convert the weights
        _assert_twins_agree(clone, conv, x)


def test_projection_hook_registration_errors_and_removal() -> None:
    with pytest.raises(TypeError, match=r"model.*Module.*list"):
        register_projection_layout_hooks([])  # type: ignore[arg-type]
    with pytest.raises(
        ValueError,
        match=r"Sequential.*Linear.*1x1",
    ):
        register_projection_layout_hooks(
            nn.Sequential(nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 1, groups=2))
        )
    lin, conv = _twins([4, 5], 2, "proj_out")
    hooks = register_projection_layout_hooks(lin)
    hooks.remove()
    assert all(len(m._load_state_dict_pre_hooks) == 0 for m in lin.modules())
    with pytest.raises(RuntimeError, match="size mismatch for proj_out.weight"):
        lin.load_state_dict(conv.state_dict())

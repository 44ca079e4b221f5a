"""MBConv with SE: the standard block against deeplab2's definition, the ANE block against it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _reference import deeplab2_mbconv, randomize
from hypothesis import given, settings
from hypothesis import strategies as st

from ane_lib.nn.mbconv import MBConvBlock, MBConvBlockANE, SqueezeExcitation


def test_parameter_shapes_follow_deeplab2() -> None:
    block = MBConvBlock(32, 64, stride=2)
    shapes = {k: tuple(v.shape) for k, v in block.named_parameters()}
    assert shapes["shortcut_conv.weight"] == (64, 32, 1, 1)
    assert shapes["expand_conv.weight"] == (256, 32, 1, 1)  # 4 x out, from the input width
    assert "expand_conv.bias" not in shapes and "depthwise_conv.bias" not in shapes
    assert shapes["depthwise_conv.weight"] == (256, 1, 3, 3)
    assert shapes["se.reduce.weight"] == (16, 256, 1, 1)  # int(64 * 0.25) from the output width
    assert shapes["se.expand.weight"] == (256, 16, 1, 1)
    assert shapes["shrink_conv.weight"] == (64, 256, 1, 1) and "shrink_conv.bias" in shapes
    assert MBConvBlock(64, 64).shortcut_conv is None
    assert MBConvBlock(8, 8, se_ratio=None).se is None
    assert MBConvBlock(2, 2, se_ratio=0.25).se.hidden == 1  # type: ignore[union-attr]  # max(1, .)
    assert block.pre_norm.eps == 1e-3


blocks = st.fixed_dictionaries(
    {
        "cin": st.integers(1, 12),
        "cout": st.integers(1, 12),
        "stride": st.sampled_from([1, 2]),
        "se": st.sampled_from([0.25, None]),
        "h": st.sampled_from([2, 4, 6]),
        "w": st.sampled_from([2, 4, 8]),
        "seed": st.integers(0, 2**16),
    }
)


@settings(max_examples=25, deadline=None)
@given(blocks)
def test_standard_block_equals_deeplab2_definition(case: dict) -> None:
    block = MBConvBlock(case["cin"], case["cout"], stride=case["stride"], se_ratio=case["se"])
    block = block.double().eval()
    randomize(block, case["seed"])
    x = torch.randn(2, case["cin"], case["h"], case["w"], dtype=torch.float64)
    torch.testing.assert_close(block(x), deeplab2_mbconv(block, x), rtol=0, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(blocks, st.sampled_from([(False, False), (False, True), (True, True), (True, False)]))
def test_ane_block_equals_standard_in_every_layout(case: dict, flat: tuple[bool, bool]) -> None:
    in_flat, out_flat = flat
    cin, cout, s, h, w = case["cin"], case["cout"], case["stride"], case["h"], case["w"]
    standard = MBConvBlock(cin, cout, stride=s, se_ratio=case["se"]).double().eval()
    randomize(standard, case["seed"])
    ane = (
        MBConvBlockANE(
            cin,
            cout,
            input_size=(h, w),
            stride=s,
            se_ratio=case["se"],
            in_flat=in_flat,
            out_flat=out_flat,
        )
        .double()
        .eval()
    )
    ane.load_state_dict(standard.state_dict())
    x = torch.randn(2, cin, h, w, dtype=torch.float64)
    got = ane(x.reshape(2, cin, 1, h * w) if in_flat else x)
    expected = standard(x)
    assert got.shape == ((2, cout, 1, (h // s) * (w // s)) if out_flat else expected.shape)
    torch.testing.assert_close(got.reshape(expected.shape), expected, rtol=0, atol=1e-12)


def test_training_mode_forward_and_backward_agree() -> None:
    standard = MBConvBlock(6, 8, stride=2).double().train()
    randomize(standard, 3)
    ane = MBConvBlockANE(6, 8, input_size=(4, 4), stride=2, in_flat=True, out_flat=True)
    ane = ane.double().train()
    ane.load_state_dict(standard.state_dict())
    x = torch.randn(3, 6, 4, 4, dtype=torch.float64, requires_grad=True)
    x_flat = x.detach().reshape(3, 6, 1, 16).requires_grad_(True)
    y, y_ane = standard(x), ane(x_flat)
    torch.testing.assert_close(y_ane.reshape(y.shape), y, rtol=0, atol=1e-12)
    y.sum().backward()
    y_ane.sum().backward()
    assert x.grad is not None and x_flat.grad is not None
    torch.testing.assert_close(x_flat.grad.reshape(x.grad.shape), x.grad, rtol=0, atol=1e-12)
    for (name, p), p_ane in zip(standard.named_parameters(), ane.parameters(), strict=True):
        assert p.grad is not None and p_ane.grad is not None
        torch.testing.assert_close(p_ane.grad, p.grad, rtol=0, atol=1e-10, msg=name)
    # batch statistics were updated identically
    torch.testing.assert_close(ane.pre_norm.running_mean, standard.pre_norm.running_mean)


def test_flat_block_exports_with_its_depthwise_norm_folded(tmp_path: Path) -> None:
    """The depthwise batch norm runs on the grid, right after its conv, so coremltools folds it
    into the conv: the one batch_norm op left is the pre-norm (before a conv, which the converter
    does not fold), and the only layout ops are the two reshapes around the grid."""
    from ane_lib.coreml import export, report

    block = MBConvBlockANE(8, 8, input_size=(4, 4), in_flat=True, out_flat=True).eval()
    randomize(block, 0)
    rep = report(export(block, (1, 8, 1, 16), tmp_path / "block.mlpackage"))
    norms = [o.module for o in rep.ops if o.op_type == "batch_norm"]
    assert norms == ["pre_norm"]
    assert rep.op_histogram["conv"] == 5  # expand, depthwise (+ its norm), SE x 2, shrink
    assert rep.layout_ops == 2


def test_squeeze_excitation_gates_channels() -> None:
    se = SqueezeExcitation(4, 2).double()
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    gate = torch.sigmoid(se.expand(F.silu(se.reduce(x.mean(dim=(2, 3), keepdim=True)))))
    torch.testing.assert_close(se(x), x * gate, rtol=0, atol=1e-15)
    # flat layout: the same gate
    torch.testing.assert_close(se(x.reshape(2, 4, 1, 9)), (x * gate).reshape(2, 4, 1, 9))


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"kernel_size.*odd.*\b4\b"):
        MBConvBlock(4, 4, kernel_size=4)
    with pytest.raises(ValueError, match=r"se_ratio.*1\.5"):
        MBConvBlock(4, 4, se_ratio=1.5)
    with pytest.raises(ValueError, match=r"stride=2.*input_size=\(5, 4\)"):
        MBConvBlockANE(4, 4, input_size=(5, 4), stride=2)
    ane = MBConvBlockANE(4, 8, input_size=(4, 4), in_flat=True)
    with pytest.raises(ValueError, match=r"x.*\(B, 4, 1, 16\).*\(1, 4, 4, 4\)"):
        ane(torch.zeros(1, 4, 4, 4))
    with pytest.raises(ValueError, match=r"x must have rank 4"):
        MBConvBlock(4, 4)(torch.zeros(4, 4, 4))

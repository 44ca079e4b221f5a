"""The executor's answers are Core ML's: every symptom issue 15 listed, reproduced and passing.

Where each symptom is tested:

- nearest-neighbour upsampling by a fractional scale read the wrong source pixel (off by 6 on a
  3-wide input scaled by 1.12): ``conformance/test_image_resizing.py``
  ``test_upsample_nearest_neighbor_matches_core_ml_outputs`` and
  ``test_upsample_nearest_neighbor``;
- ``topk(return_indices=False)`` returned indices too: ``conformance/test_tensor_operation.py``
  ``test_topk_values_only_and_all_of_them``;
- shape arithmetic on 0-d values crashed, ``fill`` with a shape of unknown rank was called an
  executor bug: here, ``test_dynamic_shape_conversion_runs`` and
  ``test_fill_with_a_shape_of_unknown_rank``;
- one global precision switch instead of each variable's type: here, the ``mode`` tests;
- ``load_program`` could not read some packages coremltools wrote: ``test_program.py``;
- missing op families: ``conformance/`` (one module per family) and
  ``test_every_coremltools_op_is_run_or_declined`` here;
- no per-op report of subnormal values: here, the ``numeric_health`` tests;
- programs Core ML rejects were run: here, the validation tests.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from ane_lib.coreml import (
    MODES,
    ProgramValidationError,
    load_program,
    numeric_health,
    run,
)
from ane_lib.coreml.executor.health import FP16_SMALLEST_NORMAL
from ane_lib.coreml.program import import_coremltools, quiet_coremltools

ct = import_coremltools()
from coremltools.converters.mil import Builder as mb  # noqa: E402, N813
from coremltools.converters.mil.mil import get_new_symbol, types  # noqa: E402


def _fp16(a: Any) -> np.ndarray:
    return np.asarray(a, np.float32).astype(np.float16).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# shape arithmetic of dynamic-shape conversions


class Dynamic(nn.Module):
    """x: (1, 3, H, W), H and W dynamic: reshape by the runtime shape, and a range over W."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        y = x.reshape(B, C, H * W).softmax(-1)
        return y.reshape(B, C, H, W) * torch.arange(W, dtype=x.dtype)


def test_dynamic_shape_conversion_runs(tmp_path: Path) -> None:
    # torch.export with dynamic axes -> coremltools: shape, gather of one axis (a 0-d value),
    # concat of those scalars, range_1d; each input size gives PyTorch's answer
    x = torch.randn(1, 3, 4, 5)
    h, w = torch.export.Dim("h", min=2, max=32), torch.export.Dim("w", min=2, max=32)
    with quiet_coremltools(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.export(Dynamic(), (x,), dynamic_shapes=({2: h, 3: w},))
        mlmodel = ct.convert(
            ep.run_decompositions({}),
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT32,
            minimum_deployment_target=ct.target.iOS17,
            inputs=[ct.TensorType(name="x", shape=(1, 3, ct.RangeDim(2, 32), ct.RangeDim(2, 32)))],
            skip_model_load=True,
        )
    path = tmp_path / "dynamic.mlpackage"
    mlmodel.save(str(path))
    program = load_program(path)
    ops = {op.op_type for op in program.functions["main"].operations}
    assert {"shape", "gather", "concat", "range_1d"} <= ops
    for shape in [(1, 3, 4, 5), (1, 3, 7, 3), (1, 3, 2, 9)]:
        xi = torch.randn(*shape)
        (got,) = run(program, {"x": xi.numpy()}).values()
        np.testing.assert_allclose(got, Dynamic()(xi).numpy(), rtol=1e-6, atol=1e-7)


def test_fill_with_a_shape_of_unknown_rank() -> None:
    # the shape's length is a symbol: the output's rank is known only at run time
    n = get_new_symbol()

    @mb.program(input_specs=[mb.TensorSpec((n,), dtype=types.int32)], opset_version=ct.target.iOS17)
    def program(shape: Any) -> Any:
        return mb.fill(shape=shape, value=2.5)

    for shape in ([2, 3], [4], [1, 2, 3]):
        (got,) = run(program, {"shape": np.array(shape, np.int32)}).values()
        np.testing.assert_array_equal(got, np.full(shape, 2.5, np.float32))


# ---------------------------------------------------------------------------------------------
# per-variable dtypes (mode)


def _mixed() -> Any:
    """x: fp32 (2, 8) -> an fp32 linear with fp16 weights, an fp16 branch through an explicit
    cast, and an fp32 op beside it: the types iOS17 lets a program mix."""
    w16 = (np.arange(24, dtype=np.float32).reshape(3, 8) / 7 - 1.3).astype(np.float16)

    @mb.program(
        input_specs=[mb.TensorSpec((2, 8), dtype=types.fp32)], opset_version=ct.target.iOS17
    )
    def program(x: Any) -> Any:
        y32 = mb.linear(x=x, weight=w16, name="y32")  # fp32 activations, fp16 weights
        x16 = mb.cast(x=x, dtype="fp16", name="x16")
        y16 = mb.mul(x=x16, y=np.float16(1.1), name="y16")  # computed and stored in fp16
        back = mb.cast(x=y16, dtype="fp32", name="back")
        return y32, mb.add(x=back, y=np.float32(1e-4), name="z32")

    return program, w16.astype(np.float64)


X = (np.arange(16, dtype=np.float32).reshape(2, 8) - 7.3) / 3.1


def test_declared_mode_follows_each_variables_type() -> None:
    program, w = _mixed()
    out = run(program, {"x": X}, outputs=["y32", "y16", "z32"])
    # fp32 where declared fp32: exact float32 products of fp16-valued weights
    np.testing.assert_allclose(out["y32"], X.astype(np.float64) @ w.T, rtol=1e-6)
    assert out["y32"].dtype == np.float32
    # fp16 where declared fp16: the rounding of an fp16 multiply
    np.testing.assert_array_equal(out["y16"], (_fp16(X) * _fp16(1.1)).astype(np.float16))
    assert out["y16"].dtype == np.float16
    # and back in fp32: 1e-4 is not lost, as it would be in fp16
    expected = out["y16"].astype(np.float64) + np.float32(1e-4)
    np.testing.assert_allclose(out["z32"], expected, rtol=1e-7)
    assert not np.allclose(_fp16(out["z32"]), out["z32"], rtol=0, atol=0)


def test_neural_engine_mode_rounds_every_value_to_fp16() -> None:
    program, w = _mixed()
    out = run(program, {"x": X}, "neural_engine_fp16", outputs=["y32", "z32"])
    for name, value in out.items():
        assert value.dtype == np.float32  # declared fp32, holding fp16 values
        np.testing.assert_array_equal(_fp16(value), value, err_msg=name)
    ref = (_fp16(X) @ w.T).astype(np.float16)  # fp16 input, fp16 result
    np.testing.assert_allclose(out["y32"], ref, rtol=2**-10)


def test_fp32_reference_mode_keeps_fp32_even_where_fp16_is_declared() -> None:
    program, _ = _mixed()
    out = run(program, {"x": X}, "fp32_reference", outputs=["y16"])
    # the input unrounded; the constant is the fp16 value the program holds
    np.testing.assert_allclose(out["y16"], X.astype(np.float64) * _fp16(1.1), rtol=1e-6)
    assert out["y16"].dtype == np.float32


def test_precision_is_an_alias_of_two_modes() -> None:
    program, _ = _mixed()
    for precision, mode in (("fp16", "neural_engine_fp16"), ("fp32", "fp32_reference")):
        a = run(program, {"x": X}, precision=precision)
        b = run(program, {"x": X}, mode)
        c = run(program, {"x": X}, precision)  # type: ignore[arg-type]  # the positional form
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
            np.testing.assert_array_equal(c[k], b[k])
    with pytest.raises(ValueError, match="precision='fp16' means mode='neural_engine_fp16'"):
        run(program, {"x": X}, "declared", precision="fp16")
    with pytest.raises(ValueError, match=r"mode must be one of .*'declared'.*got 'fp8'"):
        run(program, {"x": X}, "fp8")  # type: ignore[arg-type]
    assert MODES == ("declared", "neural_engine_fp16", "fp32_reference")


# ---------------------------------------------------------------------------------------------
# what Core ML validates


def test_a_constant_input_computed_at_run_time_is_rejected() -> None:
    # coremltools' builder accepts stack's axis from shape arithmetic it can evaluate now; a
    # saved program would bind it to a runtime variable, which Core ML rejects
    @mb.program(input_specs=[mb.TensorSpec((2, 3))], opset_version=ct.target.iOS17)
    def program(x: Any) -> Any:
        axis = mb.sub(x=mb.gather(x=mb.shape(x=x), indices=0), y=np.int32(2), name="axis")
        return mb.stack(values=[x, x], axis=axis, name="stacked")

    with pytest.raises(ProgramValidationError, match="input 'axis' must be a constant") as err:
        run(program, {"x": np.ones((2, 3), np.float32)})
    assert err.value.op_name == "stacked" and "'axis'" in str(err.value)


def test_rank_above_five_is_rejected() -> None:
    @mb.program(input_specs=[mb.TensorSpec((1, 2, 1, 2, 1, 2))], opset_version=ct.target.iOS17)
    def program(x: Any) -> Any:
        return mb.relu(x=x)

    with pytest.raises(ProgramValidationError, match="rank 6"):
        run(program, {"x": np.ones((1, 2, 1, 2, 1, 2), np.float32)})


# ---------------------------------------------------------------------------------------------
# numeric health: subnormal values, per op


def test_numeric_health_reports_the_subnormal_share_of_each_op() -> None:
    # x * 1e-3: 1e-3 is normal in fp16, its product with values below 0.061 is subnormal
    x = np.array([[1.0, 0.05, 0.01, 0.0, -0.02, 2.0]], np.float32)

    @mb.program(
        input_specs=[mb.TensorSpec(x.shape, dtype=types.fp16)], opset_version=ct.target.iOS17
    )
    def program(x: Any) -> Any:
        small = mb.mul(x=x, y=np.float16(1e-3), name="small")
        return mb.relu(x=small, name="rectified")

    health = numeric_health(program, {"x": x})
    small, rectified = (h for h in health.ops if h.op_name in ("small", "rectified"))
    products = np.abs(_fp16(_fp16(x) * _fp16(1e-3)))
    expected = float(np.mean((products > 0) & (products < FP16_SMALLEST_NORMAL)))
    assert small.subnormal == pytest.approx(expected) and expected == pytest.approx(3 / 6)
    assert small.zero == pytest.approx(1 / 6) and small.storage == "fp16"
    assert rectified.subnormal == pytest.approx(2 / 6)  # relu keeps the positive ones
    assert health.first_subnormal is small
    assert health.subnormal_share == pytest.approx((3 + 2) / 12)
    assert "small" in str(health) and health.to_dict()["first_subnormal"] == "small"
    # the same program declared fp16, forced to fp32 storage: no fp16 values to report
    assert numeric_health(program, {"x": x}, "fp32_reference").fp16_ops == ()


def test_numeric_health_names_the_first_overflow_without_stopping() -> None:
    x = np.array([[300.0, 1.0]], np.float32)

    @mb.program(
        input_specs=[mb.TensorSpec(x.shape, dtype=types.fp16)], opset_version=ct.target.iOS17
    )
    def program(x: Any) -> Any:
        return mb.mul(
            x=mb.mul(x=x, y=np.float16(300.0), name="big"), y=np.float16(2.0), name="bigger"
        )

    health = numeric_health(program, {"x": x})
    assert health.first_nonfinite is not None and health.first_nonfinite.op_name == "big"
    assert health.first_nonfinite.nonfinite == 1


def test_every_coremltools_op_is_run_or_declined() -> None:
    from ane_lib.coreml.executor.coverage import coverage

    report = coverage()
    assert report.missing == (), report.missing  # every op type is run, or declined with a reason

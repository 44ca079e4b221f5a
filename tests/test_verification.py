"""Tests for ane_lib.coreml.verification: PSNR, and a real package checked against its model."""

from __future__ import annotations

import math
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from _toy_models import Classifier
from hypothesis import given, settings
from hypothesis import strategies as st

from ane_lib.coreml import Verification, export, psnr, verify


@settings(max_examples=30, deadline=None)
@given(
    values=hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
        elements=st.floats(-100, 100, allow_nan=False),
    ),
    offset=st.floats(1e-3, 10),
)
def test_psnr_of_a_constant_offset(values: np.ndarray, offset: float) -> None:
    """A constant error c gives RMSE |c|, so PSNR = 20 log10(max|ref| / |c|)."""
    peak = np.max(np.abs(values))
    if peak / offset == 0:  # a zero (or subnormal) peak: the ratio is 0
        assert psnr(values, values + offset) == -math.inf
    else:
        assert psnr(values, values + offset) == pytest.approx(20 * math.log10(peak / offset))
    assert psnr(values, values.copy()) == math.inf


def test_psnr_shape_mismatch() -> None:
    with pytest.raises(ValueError, match=r"candidate must have the reference's shape \(2,\)"):
        psnr(np.zeros(2), np.zeros(3))


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    torch.manual_seed(1)
    model = Classifier(num_classes=5, width=8)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        model.norm.running_mean.uniform_(-0.5, 0.5)
        model.norm.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="module")
def exported_classifier(
    tmp_path_factory: pytest.TempPathFactory, classifier: Classifier
) -> tuple[Path, Classifier]:
    path = export(classifier, (1, 3, 16, 16), tmp_path_factory.mktemp("v") / "cls.mlpackage")
    return path, classifier


def test_verify_fp16_package_shows_the_deployment_error(
    exported_classifier: tuple[Path, Classifier],
) -> None:
    path, model = exported_classifier
    for precision in ("fp16", "fp32"):
        result = verify(path, model, samples=3, precision=precision)
        assert isinstance(result, Verification)
        assert result.samples == 3 and result.precision == precision
        assert result.mode == {"fp16": "neural_engine_fp16", "fp32": "fp32_reference"}[precision]
        # fp16 weights (and, in fp16 mode, activations): about 11 bits of agreement at least
        assert 55 < result.psnr_db < 120
        assert result.max_rel_error < 3e-3
        assert result.top1_agreement == 1.0
        assert result.passed(min_psnr=50)
        assert set(result.to_dict()) >= {"psnr_db", "max_abs_error", "top1_agreement"}
        assert "PSNR" in str(result)


def test_verify_fp32_package_proves_the_executor(tmp_path: Path, classifier: Classifier) -> None:
    """An fp32 package holds the float32 weights: executor fp32 == PyTorch fp32 to ~1e-6."""
    path = export(classifier, (1, 3, 16, 16), tmp_path / "cls32.mlpackage", precision="fp32")
    result = verify(path, classifier, samples=3, precision="fp32")
    assert result.max_rel_error < 1e-5
    assert result.top1_agreement == 1.0
    fp16 = verify(path, classifier, samples=3, precision="fp16")
    assert fp16.max_rel_error > 10 * result.max_rel_error  # fp16 storage is visible


def test_verify_other_weights_fail(exported_classifier: tuple[Path, Classifier]) -> None:
    path, _ = exported_classifier
    torch.manual_seed(2)
    other = Classifier(num_classes=5, width=8)
    result = verify(path, other, samples=2)
    assert result.psnr_db < 30
    assert not result.passed(min_psnr=40)


def test_verify_bad_arguments(exported_classifier: tuple[Path, Classifier]) -> None:
    path, model = exported_classifier
    with pytest.raises(ValueError, match="precision must be one of"):
        verify(path, model, precision="int8")
    with pytest.raises(ValueError, match="samples must be >= 1"):
        verify(path, model, samples=0)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        verify(path, "model")  # type: ignore[arg-type]


def test_verify_arguments_both_stacks_share() -> None:
    from ane_lib.verification import check_verify_arguments

    model = torch.nn.Identity()
    assert check_verify_arguments(model, None, 0, None) == 2
    assert check_verify_arguments(model, 5, 3, None) == 5
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got str"):
        check_verify_arguments("model", None, 0, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not both"):
        check_verify_arguments(model, 2, 0, [torch.zeros(1)])
    with pytest.raises(ValueError, match="samples must be >= 1"):
        check_verify_arguments(model, 0, 0, None)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        check_verify_arguments(model, None, -1, None)


def test_recorded_specs_prefer_what_export_recorded() -> None:
    from ane_lib.signature import TensorSpec
    from ane_lib.verification import recorded_specs

    ids = TensorSpec((1, 8), torch.int32, high=100)
    declared = {"input_ids": ((1, 8), "INT32")}
    # export recorded the value range of the token ids: they can be drawn
    assert recorded_specs([{"name": "input_ids", **ids.to_dict()}], declared, source="p") == {
        "input_ids": ids
    }
    # nothing recorded: a float input is drawn in [0, 1), an integer one cannot be
    image = {"image": ((1, 3, 4, 4), torch.float16)}
    assert recorded_specs(None, image, source="p") == {
        "image": TensorSpec((1, 3, 4, 4), torch.float16)
    }
    with pytest.raises(ValueError, match="input 'input_ids' of p is INT32 and the program"):
        recorded_specs({}, declared, source="p", noun="program")

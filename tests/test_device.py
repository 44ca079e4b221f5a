"""Tests for ane_lib.coreml.device: Core ML on a Mac, and a clear error everywhere else."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ane_lib.coreml import compute_plan, export, predict_on_device
from ane_lib.coreml.device import COMPUTE_UNITS, ComputePlan, compute_unit, macos_version
from ane_lib.coreml.export import example_input
from ane_lib.coreml.program import import_coremltools

ON_MAC = sys.platform == "darwin"
needs_mac = pytest.mark.skipif(not ON_MAC, reason="Core ML prediction needs macOS")
needs_plan = pytest.mark.skipif(
    not ON_MAC or macos_version() < (14, 4), reason="MLComputePlan needs macOS 14.4 or later"
)


class Small(nn.Module):
    """x: (1, 3, 8, 8) -> (1, 4): 1x1 conv, ReLU, spatial mean."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Small]:
    torch.manual_seed(0)
    model = Small().eval()
    path = export(model, (1, 3, 8, 8), tmp_path_factory.mktemp("dev") / "small.mlpackage")
    return path, model


@pytest.mark.skipif(ON_MAC, reason="checks the error raised off macOS")
def test_predict_off_macos_says_it_needs_macos(package: tuple[Path, Small]) -> None:
    path, _ = package
    x = example_input((1, 3, 8, 8)).numpy()
    with pytest.raises(RuntimeError, match=r"predict_on_device needs macOS.*ane_lib\.coreml\.run"):
        predict_on_device(path, {"image": x})


@pytest.mark.skipif(ON_MAC, reason="checks the error raised off macOS")
def test_compute_plan_off_macos_says_it_needs_macos(package: tuple[Path, Small]) -> None:
    path, _ = package
    with pytest.raises(RuntimeError, match=r"compute_plan needs macOS"):
        compute_plan(path)
    # The platform is checked first: even a bad argument gets the platform error.
    with pytest.raises(RuntimeError, match="needs macOS"):
        compute_plan(path, compute_units="tpu")
    assert macos_version() == ()


def test_compute_unit_names() -> None:
    ct = import_coremltools()
    assert compute_unit("cpu_and_ne") is ct.ComputeUnit.CPU_AND_NE
    assert {compute_unit(n).name for n in COMPUTE_UNITS} == {
        "ALL",
        "CPU_ONLY",
        "CPU_AND_GPU",
        "CPU_AND_NE",
    }
    with pytest.raises(ValueError, match=r"compute_units must be one of .*'gpu'"):
        compute_unit("gpu")


@needs_mac
@pytest.mark.parametrize("units", ["cpu_only", "cpu_and_ne"])
def test_predict_matches_pytorch(package: tuple[Path, Small], units: str) -> None:
    path, model = package
    x = example_input((1, 3, 8, 8), seed=1)
    with torch.no_grad():
        expected = model(x).numpy()
    out = predict_on_device(path, {"image": x.numpy()}, compute_units=units)
    assert set(out) == {"logits"}
    np.testing.assert_allclose(out["logits"].astype(np.float32), expected, rtol=1e-2, atol=1e-2)


@needs_mac
def test_predict_checks_inputs(package: tuple[Path, Small]) -> None:
    path, _ = package
    with pytest.raises(ValueError, match=r"inputs must have exactly the keys \['image'\]"):
        predict_on_device(path, {"x": np.zeros((1, 3, 8, 8), np.float32)})
    with pytest.raises(ValueError, match=r"inputs\['image'\] must have shape \(1, 3, 8, 8\)"):
        predict_on_device(path, {"image": np.zeros((1, 3, 4, 4), np.float32)})


@needs_plan
def test_compute_plan_lists_every_op(package: tuple[Path, Small]) -> None:
    path, _ = package
    plan = compute_plan(path, compute_units="cpu_and_ne")
    assert isinstance(plan, ComputePlan)
    types = [op.op_type for op in plan.ops]
    assert any("conv" in t for t in types) and any("relu" in t for t in types)
    for op in plan.ops:
        assert op.preferred in op.supported
        assert set(op.supported) <= {"CPU", "GPU", "ANE"}
        assert op.cost is None or 0.0 <= op.cost <= 1.0
    assert sum(plan.device_counts().values()) == len(plan.ops)
    assert "compute plan (cpu_and_ne)" in str(plan)

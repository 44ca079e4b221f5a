"""Tests for ane_lib.coreml.program: reading a saved .mlpackage back on any OS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ane_lib.coreml import PackageInfo, TensorInfo, load_program, package_io
from ane_lib.coreml.export import export
from ane_lib.coreml.program import import_coremltools, open_package


class ConvNet(nn.Module):
    """x: (1, 3, 8, 8) -> (1, 5, 8, 8): a conv then a GELU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ConvNet]:
    torch.manual_seed(3)
    model = ConvNet()
    path = export(model, (1, 3, 8, 8), tmp_path_factory.mktemp("pkg") / "conv.mlpackage")
    return path, model


def test_load_program_has_declared_interface(saved: tuple[Path, ConvNet]) -> None:
    path, _ = saved
    prog = load_program(path)
    main = prog.functions["main"]
    assert list(main.inputs) == ["image"]
    assert tuple(main.inputs["image"].shape) == (1, 3, 8, 8)
    assert [v.name for v in main.outputs] == ["logits"]
    assert tuple(main.outputs[0].shape) == (1, 5, 8, 8)
    op_types = {op.op_type for op in main.operations}
    assert "conv" in op_types and "gelu" in op_types


def test_load_program_restores_weights(saved: tuple[Path, ConvNet]) -> None:
    """The conv weight in the program is the model's weight rounded to fp16, bit for bit."""
    path, model = saved
    main = load_program(path).functions["main"]
    conv = next(op for op in main.operations if op.op_type == "conv")
    weight = conv.weight.val
    expected = model.conv.weight.detach().numpy().astype(np.float16)
    assert weight.dtype == np.float16
    np.testing.assert_array_equal(weight, expected)
    bias = conv.bias.val
    np.testing.assert_array_equal(bias, model.conv.bias.detach().numpy().astype(np.float16))


def test_package_io(saved: tuple[Path, ConvNet]) -> None:
    path, _ = saved
    info = package_io(path)
    assert isinstance(info, PackageInfo)
    assert info.inputs == (TensorInfo("image", (1, 3, 8, 8), "FLOAT16"),)
    assert info.outputs == (TensorInfo("logits", (1, 5, 8, 8), "FLOAT16"),)
    assert info.specification_version >= 8  # iOS17 is specification version 8
    assert info.user_metadata["ane_lib.model"] == "ConvNet"
    assert info.version and info.author.startswith("ane_lib")


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "none.mlpackage"
    with pytest.raises(ValueError, match=r"none\.mlpackage.*does not exist"):
        load_program(missing)
    with pytest.raises(ValueError, match="does not exist"):
        package_io(missing)


def test_not_an_mlpackage(tmp_path: Path) -> None:
    other = tmp_path / "model.mlmodel"
    other.write_bytes(b"")
    with pytest.raises(ValueError, match=r"ending in \.mlpackage.*model\.mlmodel"):
        load_program(other)


def test_directory_without_manifest(tmp_path: Path) -> None:
    fake = tmp_path / "fake.mlpackage"
    fake.mkdir()
    with pytest.raises(ValueError, match=r"fake\.mlpackage.*Manifest\.json"):
        load_program(fake)


def test_corrupt_package(tmp_path: Path) -> None:
    fake = tmp_path / "broken.mlpackage"
    fake.mkdir()
    (fake / "Manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"broken\.mlpackage.*could not be read"):
        load_program(fake)


def test_neural_network_package_is_refused(tmp_path: Path) -> None:
    ct = import_coremltools()
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    builder = NeuralNetworkBuilder([("x", datatypes.Array(3))], [("y", datatypes.Array(3))])
    builder.add_activation("relu", "RELU", "x", "y")
    path = tmp_path / "nn.mlpackage"
    ct.models.MLModel(builder.spec, skip_model_load=True).save(str(path))
    with pytest.raises(ValueError, match=r"nn\.mlpackage.*'neuralNetwork'.*ML program"):
        load_program(path)
    with pytest.raises(ValueError, match="neuralNetwork"):
        open_package(path)


def test_linux_noise_is_silenced(saved: tuple[Path, ConvNet]) -> None:
    """A fresh interpreter loading a package prints none of coremltools' platform warnings."""
    path, _ = saved
    code = (
        "from ane_lib.coreml import load_program, package_io\n"
        f"p = load_program({str(path)!r}); i = package_io({str(path)!r})\n"
        "print(len(list(p.functions['main'].operations)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert int(done.stdout.strip()) >= 2
    for noise in ("Failed to load", "has not been tested", "scikit-learn version"):
        assert noise not in done.stderr, done.stderr

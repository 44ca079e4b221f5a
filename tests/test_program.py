"""Tests for ane_lib.coreml.program: reading a saved .mlpackage back on any OS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from ane_lib.coreml import PackageInfo, TensorInfo, load_program, package_io, run
from ane_lib.coreml.export import export
from ane_lib.coreml.program import (
    ProgramReadError,
    import_coremltools,
    open_package,
    quiet_coremltools,
)


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


# ---------------------------------------------------------------------------------------------
# packages coremltools writes but its own reader rejects (issue 15)


def _save(program: Any, path: Path) -> Path:
    ct = import_coremltools()
    with quiet_coremltools():
        model = ct.convert(
            program,
            convert_to="mlprogram",
            minimum_deployment_target=ct.target.iOS17,
            compute_precision=ct.precision.FLOAT32,
            skip_model_load=True,
        )
    model.save(str(path))
    return path


def _strict_read(path: Path) -> Any:
    from coremltools.converters.mil.frontend.milproto import load as milproto_load

    model = open_package(path)
    spec = model.get_spec()
    with quiet_coremltools():
        return milproto_load.load(
            spec,
            specification_version=spec.specificationVersion,
            file_weights_dir=model.weights_dir,
        )


def test_batch_norm_with_fp16_statistics_on_an_fp32_input(tmp_path: Path) -> None:
    # coremltools writes the default epsilon as an fp32 constant beside fp16 statistics; its
    # reader then rejects the op ("must have the same data type")
    ct = import_coremltools()
    from coremltools.converters.mil import Builder as mb  # noqa: N813
    from coremltools.converters.mil.mil import types

    mean, var = np.arange(3, dtype=np.float16), np.full(3, 2, np.float16)

    @mb.program(
        input_specs=[mb.TensorSpec((1, 3, 4, 4), dtype=types.fp32)], opset_version=ct.target.iOS17
    )
    def program(x: Any) -> Any:
        return mb.batch_norm(x=x, mean=mean, variance=var)

    path = _save(program, tmp_path / "bn.mlpackage")
    with pytest.raises(ValueError, match="must have the same data type"):
        _strict_read(path)
    loaded = load_program(path)
    x = np.random.default_rng(0).normal(size=(1, 3, 4, 4)).astype(np.float32)
    (got,) = run(loaded, {"x": x}).values()
    ref = (x - mean.reshape(1, 3, 1, 1)) / np.sqrt(2.0 + 1e-5)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.filterwarnings("ignore:Some dimensions in the input shape are unknown")
def test_einsum_over_a_dynamic_axis(tmp_path: Path) -> None:
    # the reader gives each input its own symbol for the shared dynamic axis, and einsum's
    # shape check fails; the package's declared output type is used instead
    ct = import_coremltools()
    from coremltools.converters.mil import Builder as mb  # noqa: N813
    from coremltools.converters.mil.mil import get_new_symbol

    n = get_new_symbol()

    @mb.program(
        input_specs=[mb.TensorSpec((n, 4, 2, 6)), mb.TensorSpec((n, 6, 2, 5))],
        opset_version=ct.target.iOS17,
    )
    def program(a: Any, b: Any) -> Any:
        return mb.einsum(values=(a, b), equation="nchw,nwhu->nchu")

    path = _save(program, tmp_path / "einsum.mlpackage")
    with pytest.raises(AssertionError, match="input shapes incompatible"):
        _strict_read(path)
    loaded = load_program(path)
    rng = np.random.default_rng(1)
    for batch in (1, 3):
        a = rng.normal(size=(batch, 4, 2, 6)).astype(np.float32)
        b = rng.normal(size=(batch, 6, 2, 5)).astype(np.float32)
        (got,) = run(loaded, {"a": a, "b": b}).values()
        np.testing.assert_allclose(got, np.einsum("nchw,nwhu->nchu", a, b), rtol=1e-5, atol=1e-6)


def test_a_package_the_reader_cannot_rebuild_is_reported_as_the_readers_fault(
    saved: tuple[Path, ConvNet], tmp_path: Path
) -> None:
    # an op type coremltools does not know: no relaxing helps, and the error says whose fault
    ct = import_coremltools()
    path, _ = saved
    spec = open_package(path).get_spec()
    block = spec.mlProgram.functions["main"].block_specializations["CoreML7"]
    gelu = next(op for op in block.operations if op.type == "gelu")
    gelu.type = "gelu_from_the_future"
    copy = tmp_path / "future.mlpackage"
    with quiet_coremltools():
        ct.models.MLModel(
            spec, weights_dir=open_package(path).weights_dir, skip_model_load=True
        ).save(str(copy))
    with pytest.raises(ProgramReadError, match="future.mlpackage") as err:
        load_program(copy)
    assert "says nothing against the package" in str(err.value)
    assert isinstance(err.value, ValueError)

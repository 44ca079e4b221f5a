"""Tests for ane_lib.coreml.export: real conversions of small models with coremltools."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _toy_models import Classifier
from torch import nn

from ane_lib.coreml import export, package_io
from ane_lib.coreml.export import ExportError, example_input, read_export_metadata


class Unsupported(nn.Module):
    """A layer using ``torch.lgamma``, which coremltools 9 cannot convert."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.lgamma(self.proj(x).abs() + 1.0)


class Wrapper(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 3, 1), inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class DataDependent(nn.Module):
    """Python control flow on tensor values: torch.export cannot capture it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x


def leftovers(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_export_writes_names_and_metadata(tmp_path: Path) -> None:
    path = export(Classifier(), (1, 3, 16, 16), tmp_path / "cls.mlpackage", metadata={"seed": 7})
    assert path == tmp_path / "cls.mlpackage" and path.is_dir()
    info = package_io(path)
    assert [t.name for t in info.inputs] == ["image"]
    assert info.inputs[0].shape == (1, 3, 16, 16)
    assert info.inputs[0].dtype == "FLOAT16"  # an fp16 program takes fp16: no cast at its edge
    assert [t.name for t in info.outputs] == ["logits"]
    assert info.outputs[0].shape == (1, 4)
    assert "Classifier" in info.short_description
    meta = read_export_metadata(path)
    import ane_lib

    assert meta["model"] == "Classifier"
    assert meta["version"] == ane_lib.__version__ == info.version
    assert meta["options"] == {"num_classes": 4, "width": 6}
    assert meta["input_shape"] == [1, 3, 16, 16]
    assert meta["seed"] == 7
    assert meta["deployment_target"] == "iOS17"
    assert leftovers(tmp_path) == ["cls.mlpackage"]


def test_custom_names_and_description(tmp_path: Path) -> None:
    path = export(
        Classifier(num_classes=3),
        (2, 3, 8, 8),
        tmp_path / "named.mlpackage",
        input_name="pixels",
        output_name="scores",
        name="my_net",
        description="a test network",
    )
    info = package_io(path)
    assert info.inputs[0].name == "pixels" and info.inputs[0].shape == (2, 3, 8, 8)
    assert info.outputs[0].name == "scores" and info.outputs[0].shape == (2, 3)
    assert info.short_description == "a test network"
    assert read_export_metadata(path)["model"] == "my_net"


def test_training_flag_restored_and_running_stats_untouched(tmp_path: Path) -> None:
    """Export traces in eval mode: BatchNorm statistics must not be updated by the export."""
    model = Classifier()
    model.train()
    before = model.norm.running_mean.clone()
    export(model, (1, 3, 8, 8), tmp_path / "m.mlpackage")
    assert model.training
    torch.testing.assert_close(model.norm.running_mean, before, rtol=0, atol=0)


def test_existing_path_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "m.mlpackage"
    export(Classifier(num_classes=4), (1, 3, 8, 8), dest)
    with pytest.raises(FileExistsError, match=r"m\.mlpackage.*already exists.*overwrite"):
        export(Classifier(num_classes=2), (1, 3, 8, 8), dest)
    assert package_io(dest).outputs[0].shape == (1, 4)  # untouched
    assert leftovers(tmp_path) == ["m.mlpackage"]


def test_overwrite_replaces(tmp_path: Path) -> None:
    dest = tmp_path / "m.mlpackage"
    export(Classifier(num_classes=4), (1, 3, 8, 8), dest)
    export(Classifier(num_classes=2), (1, 3, 12, 12), dest, overwrite=True)
    info = package_io(dest)
    assert info.outputs[0].shape == (1, 2)
    assert info.inputs[0].shape == (1, 3, 12, 12)
    assert leftovers(tmp_path) == ["m.mlpackage"]


def test_overwrite_keeps_old_package_when_conversion_fails(tmp_path: Path) -> None:
    dest = tmp_path / "m.mlpackage"
    export(Classifier(num_classes=4), (1, 3, 8, 8), dest)
    with pytest.raises(ExportError, match=r"'lgamma'"):
        export(Wrapper(Unsupported()), (1, 3, 8, 8), dest, overwrite=True)
    assert package_io(dest).outputs[0].shape == (1, 4)
    assert leftovers(tmp_path) == ["m.mlpackage"]


def test_unsupported_op_names_op_and_layer_and_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "bad.mlpackage"
    with pytest.raises(ExportError, match=r"'lgamma'.*layer body\.1 \(Unsupported\)") as info:
        export(Wrapper(Unsupported()), (1, 3, 8, 8), dest)
    err = info.value
    assert err.stage == "convert" and err.op == "lgamma" and err.layer == "body.1"
    assert "torch.lgamma" in str(err)  # the source line of the failing op
    assert leftovers(tmp_path) == []


def test_failing_convert_function_is_located(tmp_path: Path) -> None:
    """An op coremltools knows but cannot convert with these arguments (dilated max pool)."""

    class DilatedPool(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.max_pool2d(x, 3, dilation=2)

    with pytest.raises(ExportError, match=r"converting op 'max_pool2d'.*dilation") as info:
        export(Wrapper(DilatedPool()), (1, 3, 8, 8), tmp_path / "pool.mlpackage")
    assert info.value.layer == "body.1"
    assert leftovers(tmp_path) == []


def test_torch_export_failure(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="torch.export could not capture DataDependent") as info:
        export(DataDependent(), (1, 3, 4, 4), tmp_path / "dd.mlpackage")
    assert info.value.stage == "torch.export"
    assert leftovers(tmp_path) == []


def test_no_progress_bars_by_default_and_own_progress_on_request(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    export(Classifier(), (1, 3, 8, 8), tmp_path / "a.mlpackage")
    out, err = capfd.readouterr()
    assert "%|" not in err and "Running MIL" not in err and "Failed to load" not in err
    assert out == ""
    lines: list[str] = []
    export(Classifier(), (1, 3, 8, 8), tmp_path / "b.mlpackage", progress=lines.append)
    assert lines[0].startswith("torch.export of Classifier")
    assert any("Converting PyTorch Frontend" in ln for ln in lines)
    assert lines[-1].startswith("done in")
    out, err = capfd.readouterr()
    assert "%|" not in err


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"path": "model.mlmodel"}, ValueError, r"must end in \.mlpackage.*model\.mlmodel"),
        ({"path": "missing/m.mlpackage"}, ValueError, r"parent folder.*does not exist"),
        ({"input_shape": (1, 0, 8, 8)}, ValueError, r"input_shape\[1\] must be >= 1"),
        ({"input_shape": ()}, ValueError, "at least one dimension"),
        ({"input_shape": "1,3"}, TypeError, "input_shape must be a sequence"),
        ({"input_shape": (1, 3.0, 8, 8)}, TypeError, r"input_shape\[1\] must be an int"),
        ({"model": "resnet"}, TypeError, "model must be a torch.nn.Module, got str"),
        ({"output_name": "image"}, ValueError, "input_name and output_name must differ"),
        ({"input_name": "my image"}, ValueError, "input_name must be"),
        ({"deployment_target": "iOS12"}, ValueError, "deployment_target must be one of"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
    ],
)
def test_bad_arguments(
    tmp_path: Path, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    args: dict[str, object] = {
        "model": Classifier(),
        "input_shape": (1, 3, 8, 8),
        "path": tmp_path / "ok.mlpackage",
    }
    args.update(kwargs)
    if isinstance(args["path"], str):
        args["path"] = tmp_path / str(args["path"])
    model, shape, path = args.pop("model"), args.pop("input_shape"), args.pop("path")
    with pytest.raises(error, match=match):
        export(model, shape, path, **args)  # type: ignore[arg-type]
    assert leftovers(tmp_path) == []


def test_example_input_is_fixed_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = example_input((2, 3, 4, 4), seed=5)
    b = example_input((2, 3, 4, 4), seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert a.dtype == torch.float32 and a.shape == (2, 3, 4, 4)
    assert float(a.min()) >= 0 and float(a.max()) < 1
    assert not torch.equal(a, example_input((2, 3, 4, 4), seed=6))


def test_rank_six_is_rejected_and_located(tmp_path: Path) -> None:
    """Core ML refuses tensors of rank > 5; the error names the reshape and its layer."""

    class SixD(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x.reshape(1, 3, 2, 4, 2, 4).permute(0, 1, 2, 4, 3, 5)
            return (y * 2).reshape(1, 3, 8, 8)

    with pytest.raises(ExportError, match=r"rejects the 'reshape' op.*rank <= 5") as info:
        export(Wrapper(SixD()), (1, 3, 8, 8), tmp_path / "six.mlpackage")
    assert info.value.layer == "body.1" and info.value.op == "reshape"
    assert "x.reshape(1, 3, 2, 4, 2, 4)" in str(info.value)
    assert leftovers(tmp_path) == []

"""ane_lib.coreai: real coreai-torch conversions run by Apple's own runtime (coreai-core), checked
against PyTorch, against the Core ML report's rules and through the command line.

Where the [coreai] wheels do not exist (anything but CPython 3.11 on Linux x86_64 with glibc
>= 2.34, or macOS 26+ on Apple silicon), every test that needs them is skipped with the reason.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from ane_lib import coreai
from ane_lib.coreai import _platform, _sdk
from ane_lib.signature import TensorSpec

needs_coreai = pytest.mark.skipif(not coreai.available(), reason=str(coreai.unavailable_reason()))


class ConvNet(nn.Module):
    """(B, 3, 16, 16) -> logits (B, 10): conv, GELU, 1x1 conv, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.mix = nn.Conv2d(8, 4, 1)
        self.head = nn.Linear(4 * 16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mix(torch.nn.functional.gelu(self.conv(x)))
        return self.head(y.flatten(1))


def _conv_net() -> ConvNet:
    torch.manual_seed(0)
    return ConvNet().eval()


@pytest.fixture(scope="module")
def fp32_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("coreai") / "net32.aimodel"
    return coreai.export(_conv_net(), (1, 3, 16, 16), path, precision="fp32")


# --------------------------------------------------------------------------- without the wheels


@pytest.mark.parametrize(
    ("system", "machine", "version", "libc", "words"),
    [
        ("linux", "x86_64", (3, 11), ("glibc", "2.36"), None),
        ("linux", "x86_64", (3, 11), ("glibc", "2.31"), "glibc >= 2.34"),
        ("linux", "x86_64", (3, 12), ("glibc", "2.36"), "3.11"),
        ("linux", "aarch64", (3, 11), ("glibc", "2.36"), "aarch64"),
        ("linux", "x86_64", (3, 11), ("", ""), "glibc >= 2.34"),
        ("win32", "AMD64", (3, 11), ("", ""), "3.11"),
    ],
)
def test_platform_reason(
    monkeypatch: pytest.MonkeyPatch,
    system: str,
    machine: str,
    version: tuple[int, int],
    libc: tuple[str, str],
    words: str | None,
) -> None:
    monkeypatch.setattr(sys, "platform", system)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(platform, "libc_ver", lambda: libc)
    monkeypatch.setattr(sys, "version_info", (*version, 0, "final", 0))
    reason = _platform.unsupported_reason()
    if words is None:
        assert reason is None
    else:
        assert reason is not None and words in reason


def test_platform_reason_macos(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(sys, "version_info", (3, 11, 0, "final", 0))
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    monkeypatch.setattr(platform, "mac_ver", lambda: ("15.4", ("", "", ""), "arm64"))
    assert "macOS >= 26" in str(_platform.unsupported_reason())
    monkeypatch.setattr(platform, "mac_ver", lambda: ("26.1", ("", "", ""), "arm64"))
    assert _platform.unsupported_reason() is None


def test_missing_packages_give_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = _sdk.importlib.import_module

    def fake(name: str, *args: Any) -> Any:
        if name.split(".")[0] in ("coreai", "coreai_torch"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args)

    monkeypatch.setattr(_sdk.importlib, "import_module", fake)
    with pytest.raises(coreai.CoreAIUnavailableError, match=r"coreai-core.*ane-lib\[coreai\]"):
        coreai.export(_conv_net(), (1, 3, 16, 16), tmp_path / "m.aimodel")
    assert not (tmp_path / "m.aimodel").exists()
    assert not coreai.available()
    assert "coreai-core" in str(coreai.unavailable_reason())


def test_bad_arguments_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.aimodel"):
        coreai.export(_conv_net(), (1, 3, 16, 16), tmp_path / "m.mlpackage")
    with pytest.raises(ValueError, match="precision"):
        coreai.export(_conv_net(), (1, 3, 16, 16), tmp_path / "m.aimodel", precision="fp8")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model"):
        coreai.export("net", (1, 3, 16, 16), tmp_path / "m.aimodel")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dynamic"):
        coreai.export(_conv_net(), (1, 3, None, 16), tmp_path / "m.aimodel")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a folder|does not exist"):
        coreai.run(tmp_path / "missing.aimodel", {})


# --------------------------------------------------------------------------- export and run


@needs_coreai
@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    channels=st.sampled_from([(3, 8), (4, 4), (6, 12)]),
    kernel=st.sampled_from([1, 3, 5]),
    stride=st.sampled_from([1, 2]),
    groups_depthwise=st.booleans(),
    size=st.sampled_from([8, 11, 16]),
)
def test_runtime_matches_torch_fp32(
    tmp_path_factory: pytest.TempPathFactory,
    channels: tuple[int, int],
    kernel: int,
    stride: int,
    groups_depthwise: bool,
    size: int,
) -> None:
    """Convolutions of many shapes, converted and run by Apple's runtime, equal torch's."""
    c_in, c_out = channels
    groups = c_in if groups_depthwise and c_out % c_in == 0 else 1
    torch.manual_seed(kernel * 100 + size)
    model = nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups),
        nn.SiLU(),
        nn.Conv2d(c_out, c_out, 1),
    ).eval()
    path = tmp_path_factory.mktemp("hyp") / "conv.aimodel"
    coreai.export(model, (2, c_in, size, size), path, precision="fp32")
    x = torch.randn(2, c_in, size, size)
    got = coreai.run(path, {"image": x})["logits"]
    want = model(x).detach().numpy()
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


@needs_coreai
def test_fp16_program_and_verify(tmp_path: Path, fp32_program: Path) -> None:
    model = _conv_net()
    path = coreai.export(model, (1, 3, 16, 16), tmp_path / "net16.aimodel")
    assert next(model.parameters()).dtype == torch.float32  # the user's model is untouched
    sig = coreai.signature(path)
    assert sig.inputs == {"image": ((1, 3, 16, 16), "float16")}
    assert sig.outputs == {"logits": ((1, 10), "float16")}
    fp16 = coreai.verify(path, model, samples=3)
    fp32 = coreai.verify(fp32_program, model, samples=3)
    assert (fp16.precision, fp16.engine, fp16.samples) == ("fp16", "Core AI runtime", 3)
    assert 40 < fp16.psnr_db < 90 and fp16.top1_agreement == 1.0
    assert fp32.precision == "fp32" and fp32.max_rel_error < 1e-5
    assert "Core AI runtime (fp16) vs PyTorch" in str(fp16)
    data = [torch.rand(1, 3, 16, 16) for _ in range(4)]
    assert coreai.verify(path, model, inputs=data).samples == 4


@needs_coreai
def test_metadata_and_module_paths(fp32_program: Path) -> None:
    meta = coreai.read_export_metadata(fp32_program)
    # 0 and 1 come back as numbers (coreai-core 1.0.0b3 reads stored 0/1 values as bools)
    assert meta["input_shape"] == [1, 3, 16, 16] and meta["example_seed"] == 0
    assert meta["inputs"] == [
        {"name": "image", "shape": [1, 3, 16, 16], "dtype": "float32", "low": 0.0, "high": 1.0}
    ]
    assert (meta["precision"], meta["outputs"], meta["model"]) == ("fp32", ["logits"], "ConvNet")
    paths = coreai.read_module_paths(fp32_program)
    assert paths is not None and set(paths.nodes.values()) >= {"conv", "mix", "head"}
    assert paths.type_of("conv") == "torch.nn.modules.conv.Conv2d"


@needs_coreai
def test_never_overwrites_unasked_and_leaves_nothing_on_failure(
    tmp_path: Path, fp32_program: Path
) -> None:
    dest = tmp_path / "net.aimodel"
    coreai.export(_conv_net(), (1, 3, 16, 16), dest, precision="fp32")
    before = sorted(p.name for p in dest.iterdir())
    with pytest.raises(FileExistsError, match="overwrite"):
        coreai.export(_conv_net(), (1, 3, 16, 16), dest)
    assert coreai.signature(dest).inputs["image"][1] == "float32"

    class Unsupported(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.special.erfinv(self.conv(x).tanh())

    with pytest.raises(coreai.CoreAIExportError, match="erfinv") as info:
        coreai.export(Unsupported().eval(), (1, 3, 8, 8), dest, overwrite=True)
    assert info.value.stage == "convert" and info.value.layer == "<root>"
    assert "erfinv" in str(info.value.op) and "test_coreai.py" in str(info.value)
    assert sorted(p.name for p in dest.iterdir()) == before  # the old program is intact
    assert [p.name for p in tmp_path.iterdir()] == ["net.aimodel"]  # no scratch folder left
    coreai.export(_conv_net(), (1, 3, 16, 16), dest, overwrite=True)
    assert coreai.signature(dest).inputs["image"][1] == "float16"


@needs_coreai
def test_run_checks_and_casts_inputs(fp32_program: Path, tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((1, 3, 16, 16))  # float64: cast to float32
    want = _conv_net()(torch.as_tensor(x, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(coreai.run(fp32_program, {"image": x})["logits"], want, atol=1e-5)
    with pytest.raises(ValueError, match=r"missing \['image'\]"):
        coreai.run(fp32_program, {"x": x})
    with pytest.raises(ValueError, match=r"shape \(1, 3, 8, 8\)"):
        coreai.run(fp32_program, {"image": x[..., :8, :8]})
    with pytest.raises(TypeError, match="give float values"):
        coreai.run(fp32_program, {"image": x.astype(np.int32)})
    path16 = coreai.export(_conv_net(), (1, 3, 16, 16), tmp_path / "n16.aimodel")
    with pytest.raises(ValueError, match="float16"):
        coreai.run(path16, {"image": x * 1e6})
    batch = np.random.default_rng(1).random((3, 3, 16, 16)).astype(np.float32)
    logits = coreai.run_dataset(fp32_program, batch)
    want = _conv_net()(torch.as_tensor(batch)).detach().numpy()
    assert logits.shape == (3, 10) and np.allclose(logits, want, atol=1e-5)
    with pytest.raises(ValueError, match="samples must have shape"):
        coreai.run_dataset(fp32_program, batch[:, :2])
    with coreai.Session(path16) as session:
        out = [session({"image": x})["logits"] for _ in range(2)]
        assert out[0].dtype == np.float16 and np.array_equal(out[0], out[1])


class TinyText(nn.Module):
    """Token ids (B, S) int64 and a bool mask (B, S) -> (logits (B, 3), pooled (B, D))."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(40, 16)
        self.head = nn.Linear(16, 3)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.embed(input_ids) * attention_mask[..., None]
        pooled = h.sum(1) / attention_mask.sum(1, keepdim=True).clamp(min=1)
        return self.head(pooled), pooled


@needs_coreai
def test_named_integer_inputs_and_tuple_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyText().eval()
    specs = {
        "input_ids": TensorSpec((2, 8), torch.int64, high=40),
        "attention_mask": TensorSpec((2, 8), torch.bool),
    }
    path = coreai.export(model, specs, tmp_path / "text.aimodel", precision="fp32")
    sig = coreai.signature(path)
    assert sig.inputs == {
        "input_ids": ((2, 8), "int32"),
        "attention_mask": ((2, 8), "int32"),
    }
    assert list(sig.outputs) == ["output_0", "output_1"]
    ids = torch.randint(0, 40, (2, 8))
    mask = torch.rand(2, 8) < 0.7
    got = coreai.run(path, {"input_ids": ids, "attention_mask": mask})
    want = model(ids, mask)
    for name, ref in zip(("output_0", "output_1"), want, strict=True):
        np.testing.assert_allclose(got[name], ref.detach().numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="int32's range"):
        coreai.run(path, {"input_ids": ids + 2**40, "attention_mask": mask})
    result = coreai.verify(path, model, samples=2)
    assert set(result.outputs) == {"output_0", "output_1"} and result.max_rel_error < 1e-5


# --------------------------------------------------------------------------- the report


class RuleBreaker(nn.Module):
    """Breaks rules that both front ends must see: a 9x9 conv with stride 5, a transpose of the
    last axis, a softmax over the last axis, a (B, C, 1, 1) tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.big = nn.Conv2d(3, 8, 9, stride=5)
        self.norm = nn.LayerNorm(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.big(x)  # (B, 8, 8, 8)
        t = self.norm(y.flatten(2).transpose(1, 2))  # (B, 64, 8)
        attn = torch.softmax(t @ t.transpose(1, 2), dim=-1)
        pooled = y.mean((2, 3), keepdim=True)  # (B, 8, 1, 1)
        return (attn @ t).mean(1) + pooled.flatten(1)


@needs_coreai
def test_report_applies_the_same_rules_as_core_ml(tmp_path: Path) -> None:
    from ane_lib.coreml import export as export_coreml
    from ane_lib.coreml import report as report_coreml

    torch.manual_seed(0)
    model = RuleBreaker().eval()
    ai = coreai.report(coreai.export(model, (1, 3, 44, 44), tmp_path / "r.aimodel"))
    ml = report_coreml(export_coreml(model, (1, 3, 44, 44), tmp_path / "r.mlpackage"))
    both = {"large-kernel", "conv-stride", "last-axis-layout", "softmax-axis"}
    assert both <= {r.id for r in ai.fired()}
    assert both <= {r.id for r in ml.fired()}
    assert {r.id for r in ai.fired("error")} == {r.id for r in ml.fired("error")} == set()
    (conv,) = [op for op in ai.ops if op.op_type == "conv"]
    assert conv.module == "big" and conv.attr_ints("strides") == (5, 5)
    assert conv.attr_ints("kernel_sizes") == (9, 9)
    assert ai.graph.backend == "Core AI program" and ai.module_coverage[0] > 0
    assert ai.inputs == {"image": ((1, 3, 44, 44), "fp16")}
    assert list(ai.outputs) == ["logits"]
    # the composite layer norm is one op, and the report says what it does not look inside
    assert ai.op_histogram.get("layer_norm") == 1
    assert any("layer_norm x1" in note for note in ai.graph.notes)
    inline = coreai.report(tmp_path / "r.aimodel", composites="inline")
    assert "layer_norm" not in inline.op_histogram and len(inline.ops) > len(ai.ops)
    assert inline.op_histogram["reduce_mean"] >= 3
    assert json.dumps(ai.to_dict())


@needs_coreai
def test_negative_infinity_mask_reaches_softmax(tmp_path: Path) -> None:
    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mask", torch.triu(torch.full((8, 8), float("-inf")), 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(x @ x.transpose(-1, -2) + self.mask, dim=1)

    path = coreai.export(Masked().eval(), (1, 8, 4), tmp_path / "m.aimodel", precision="fp32")
    findings = coreai.report(path).rule_findings("negative-infinity")
    assert findings and "-inf" in findings[0].message


# --------------------------------------------------------------------------- command line


@needs_coreai
def test_cli_export_report_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ane_lib.cli import main

    out = tmp_path / "m.aimodel"
    args = ["export", "tiny_moat_0", "--image-size", "32", "--target", "coreai", "-o", str(out)]
    assert main([*args, "--quiet"]) == 0
    assert main([*args, "--quiet"]) == 2  # exists
    assert main(["export", "tiny_moat_0", "--target", "coreai", "-o", "x.mlpackage"]) == 2
    capsys.readouterr()
    assert main(["report", str(out), "--json", "--fail-on", "error"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["backend"] == "Core AI program" and figures["ops"] > 100
    assert main(["verify", str(out), "--json", "--samples", "1"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["engine"] == "Core AI runtime" and verdict["passed"] is True
    assert main(["report", str(tmp_path / "none.aimodel")]) == 2


# --------------------------------------------------------------------------- compression


@needs_coreai
def test_compress_linear_and_palettize(tmp_path: Path) -> None:
    """A 1x1 conv fed one-hot columns returns its own weight matrix, so the runtime's output
    is the weight as the compressed program expands it: on a per-channel int8 grid for
    ``linear``, at most 16 values for 4-bit palettization."""
    from ane_lib.coreai.compress import asset_bytes, compress

    torch.manual_seed(0)
    conv = nn.Conv2d(64, 64, 1, bias=False).eval()
    weight = conv.weight.detach()[:, :, 0, 0].numpy()  # (C_out, C_in)
    src = coreai.export(conv, (1, 64, 1, 64), tmp_path / "w.aimodel", precision="fp32")
    eye = {"image": np.eye(64, dtype=np.float32)[None, :, None, :]}  # (1, C_in, 1, C_in)
    np.testing.assert_allclose(coreai.run(src, eye)["logits"][0, :, 0, :], weight, atol=1e-6)

    int8 = compress(src, tmp_path / "w8.aimodel", "linear")
    expanded = coreai.run(int8, eye)["logits"][0, :, 0, :]
    scale = np.abs(weight).max(axis=1, keepdims=True) / 127
    steps = expanded / scale
    assert np.abs(steps - np.round(steps)).max() < 1e-3  # on the grid of its channel
    assert np.all(np.abs(expanded - weight) <= scale / 2 + 1e-7)
    assert asset_bytes(int8) < asset_bytes(src) / 2
    assert coreai.read_export_metadata(int8)["compression"]["nbits"] == 8
    assert coreai.read_module_paths(int8) is not None

    lut4 = compress(src, tmp_path / "p4.aimodel", "palettize", nbits=4)
    values = coreai.run(lut4, eye)["logits"][0, :, 0, :]
    assert len(np.unique(values)) <= 16 and np.abs(values - weight).max() < 0.1
    report = coreai.report(lut4)
    assert report.weight_bytes < 64 * 64 * 4 / 4  # 4-bit indices and a table, not fp32

    with pytest.raises(ValueError, match="nbits"):
        compress(src, tmp_path / "x.aimodel", "palettize")
    with pytest.raises(ValueError, match="method"):
        compress(src, tmp_path / "x.aimodel", "prune")
    with pytest.raises(FileExistsError):
        compress(src, int8, "linear")
    with pytest.raises(ValueError, match="differ"):
        compress(src, src, "linear", overwrite=True)

"""ane_lib.coreml.compress: compressed packages, as coremltools makes them, run by the executor.

A small conv net is exported for real (iOS17 and iOS18 packages) and compressed with each
method. The reference for what a compressed package computes is coremltools' own
``decompress_weights``: the executor's expansion of every constexpr op must equal the weight
coremltools restores, bit for bit, and so must the outputs. The compression itself is checked
against its definition (int8 error within half a step of the channel's scale; at most
``2**nbits`` distinct values per table).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from ane_lib.coreml import export, load_program, psnr, read_export_metadata, run
from ane_lib.coreml.compress import (
    calibration_ranges,
    compress,
    compressed_weights,
    decompress,
    package_bytes,
    weight_bytes,
)
from ane_lib.coreml.program import import_coremltools

ct = import_coremltools()

SHAPE = (1, 3, 16, 16)


class Net(nn.Module):
    """Four convs, two of them large enough (> 2048 weights) to be compressed by default."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 64, 3, padding=1)
        self.c3 = nn.Conv2d(64, 64, 1)
        self.c4 = nn.Conv2d(64, 10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        x = torch.relu(self.c3(x)) + x
        return self.c4(x).mean(dim=(2, 3))


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.manual_seed(0)
    model = Net().eval()
    folder = tmp_path_factory.mktemp("compress")
    return {
        target: export(model, SHAPE, folder / f"net_{target}.mlpackage", deployment_target=target)
        for target in ("iOS17", "iOS18")
    }


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(SHAPE).astype(np.float16)


def _decompressed(path: Path, folder: Path) -> Path:
    """coremltools' own decompression of a compressed package, saved beside it."""
    return decompress(path, folder / f"{path.stem}_decompressed.mlpackage")


def _constexpr_ops(program: Any) -> list[Any]:
    return [op for op in program.functions["main"].operations if op.op_type.startswith("constexpr")]


def _weights(path: Path) -> dict[str, np.ndarray]:
    """The conv weights of a package, expanded by the executor, by conv op name."""
    program = load_program(path)
    convs = [op for op in program.functions["main"].operations if op.op_type == "conv"]
    names = [op.inputs["weight"].name for op in convs]
    values = run(program, {"image": _image()}, precision="fp32", outputs=names)
    return {op.name: values[op.inputs["weight"].name] for op in convs}


CASES: dict[str, tuple[str, dict[str, Any], set[str]]] = {
    "int8_per_channel_ios17": ("iOS17", {}, {"constexpr_affine_dequantize"}),
    "int8_per_channel_ios18": ("iOS18", {}, {"constexpr_blockwise_shift_scale"}),
    "int4_per_block": (
        "iOS18",
        {"nbits": 4, "granularity": "per_block", "block_size": 16},
        {"constexpr_blockwise_shift_scale"},
    ),
    "palettize6": ("iOS18", {"method": "palettize", "nbits": 6}, {"constexpr_lut_to_dense"}),
    "palettize4_grouped": (
        "iOS18",
        {"method": "palettize", "nbits": 4, "granularity": "per_grouped_channel", "group_size": 16},
        {"constexpr_lut_to_dense"},
    ),
    "palettize2_ios17": ("iOS17", {"method": "palettize", "nbits": 2}, {"constexpr_lut_to_dense"}),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def compressed(
    request: pytest.FixtureRequest,
    packages: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, Path, Path]:
    target, kwargs, _ = CASES[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    dest = compress(packages[target], folder / f"{request.param}.mlpackage", **kwargs)
    return request.param, packages[target], dest


def test_executor_expands_weights_as_coremltools_does(
    compressed: tuple[str, Path, Path], tmp_path: Path
) -> None:
    name, _, path = compressed
    program = load_program(path)
    ops = _constexpr_ops(program)
    assert {op.op_type for op in ops} == CASES[name][2]
    reference = load_program(_decompressed(path, tmp_path))
    consts = {
        op.outputs[0].name: op.outputs[0].val
        for op in reference.functions["main"].operations
        if op.op_type == "const"
    }
    # the weights the program computes with: constexpr outputs read by ordinary ops
    names = [
        op.outputs[-1].name
        for op in ops
        if any(not c.op_type.startswith("constexpr") for c in op.outputs[-1].child_ops)
    ]
    assert names and set(names) <= set(consts)
    x = {"image": _image()}
    for precision in ("fp16", "fp32"):
        values = run(program, x, precision=precision, outputs=names)
        for n in names:
            np.testing.assert_array_equal(
                values[n].astype(np.float32), consts[n].astype(np.float32)
            )
        np.testing.assert_array_equal(
            run(program, x, precision=precision)["logits"],
            run(reference, x, precision=precision)["logits"],
        )


def test_compressed_weights_follow_their_definition(compressed: tuple[str, Path, Path]) -> None:
    name, src, path = compressed
    _, kwargs, _ = CASES[name]
    before, after = _weights(src), _weights(path)
    assert before.keys() == after.keys()
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    assert len(changed) == 2  # the two convs above weight_threshold (2048 weights)
    # compressed_weights pairs each replaced weight with its original, by op and input
    pairs = compressed_weights(src, path)
    assert sorted(pairs) == sorted(f"{k}.weight" for k in changed)
    for k in changed:
        original, expanded = pairs[f"{k}.weight"]
        np.testing.assert_array_equal(original, before[k])
        np.testing.assert_array_equal(expanded, after[k])
    for k in changed:
        w, q = before[k], after[k]
        if kwargs.get("method", "linear") == "linear":
            nbits = kwargs.get("nbits", 8)
            if kwargs.get("granularity") == "per_block":
                bs = kwargs["block_size"]
                blocks = w.reshape(w.shape[0], w.shape[1] // bs, bs, -1)
                scale = np.abs(blocks).max(axis=(2, 3), keepdims=True) / (2 ** (nbits - 1) - 1)
                err = np.abs(blocks - q.reshape(blocks.shape)) / scale
            else:
                scale = np.abs(w).reshape(len(w), -1).max(1) / (2 ** (nbits - 1) - 1)
                err = np.abs(w - q).reshape(len(w), -1) / scale[:, None]
            # half a step; plus the fp16 roundings of the scale and of the product, each at most
            # 2**-11 relative of a value up to (2**(nbits-1) - 1) steps
            assert err.max() <= 0.5 + 2 * (2 ** (nbits - 1) - 1) * 2.0**-11
        else:
            nbits, group = kwargs["nbits"], kwargs.get("group_size", len(w))
            for g in range(0, len(w), group):
                assert len(np.unique(q[g : g + group])) <= 2**nbits
            assert psnr(w, q) > 6 * nbits  # a table fitted to the weights, not arbitrary


def test_metadata_is_recorded_and_the_export_metadata_kept(
    compressed: tuple[str, Path, Path],
) -> None:
    name, src, path = compressed
    meta = read_export_metadata(path)
    settings = meta["compression"]
    _, kwargs, _ = CASES[name]
    assert settings["method"] == kwargs.get("method", "linear")
    assert settings["nbits"] == kwargs.get("nbits", 8) and settings["activations"] == "fp16"
    assert meta["model"] == read_export_metadata(src)["model"] == "Net"
    assert weight_bytes(path) < weight_bytes(src) and package_bytes(path) < package_bytes(src)


def test_sizes_are_the_files_on_disk(packages: dict[str, Path]) -> None:
    path = packages["iOS18"]
    files = [f for f in path.rglob("*") if f.is_file()]
    assert package_bytes(path) == sum(f.stat().st_size for f in files)
    (weights,) = [f for f in files if f.name == "weight.bin"]
    assert weight_bytes(path) == weights.stat().st_size
    # fp16: two bytes per weight, plus per-tensor headers and 64-byte alignment
    n = sum(p.numel() for p in Net().parameters())
    assert 2 * n < weight_bytes(path) < 2 * n + 256 * 8


def test_w8a8_calibrates_with_the_executor(packages: dict[str, Path], tmp_path: Path) -> None:
    src = packages["iOS18"]
    samples = [{"image": _image(seed)} for seed in range(4)]
    ranges = calibration_ranges(src, samples)
    # the ranges cover every sample: recompute two of them from the executor's values
    program = load_program(src)
    relu = [
        op.outputs[0].name for op in program.functions["main"].operations if op.op_type == "relu"
    ]
    values = [run(program, s, outputs=relu) for s in samples]
    for n in relu:
        assert ranges[n]["rmax"] == max(float(v[n].max()) for v in values)
        assert ranges[n]["rmin"] == min(float(v[n].min()) for v in values)
    assert ranges["image"]["rmax"] == max(float(s["image"].max()) for s in samples)
    assert "logits" not in ranges  # outputs are not quantized
    dest = compress(src, tmp_path / "w8a8.mlpackage", activations="int8", calibration=samples)
    compressed = load_program(dest)
    counts = Counter(op.op_type for op in compressed.functions["main"].operations)
    assert counts["quantize"] > 0 and counts["dequantize"] > 0
    quantized = [op.outputs[0].name for op in compressed.functions["main"].operations
                 if op.op_type == "quantize"]  # fmt: skip
    out = run(compressed, samples[0], outputs=quantized[:3] + ["logits"])
    assert all(out[n].dtype == np.int8 for n in quantized[:3])
    reference = run(src, samples[0])["logits"]
    assert psnr(reference, out["logits"]) > 25
    assert read_export_metadata(dest)["compression"]["calibration_samples"] == 4


def test_coremltools_calibration_keeps_only_the_last_samples_range() -> None:
    """Why compress() computes the ranges itself (coremltools 9's ModelDebugger)."""
    from collections import defaultdict

    from coremltools.optimize.coreml.experimental._model_debugger import ModelDebugger

    stats: dict[str, dict[str, float]] = defaultdict(dict)
    ModelDebugger.record_intermediate_output(np.array([-5.0, 5.0]), "x", stats)
    ModelDebugger.record_intermediate_output(np.array([-1.0, 1.0]), "x", stats)
    assert stats["x"] == {"rmin": -1.0, "rmax": 1.0}  # the first sample's [-5, 5] is lost


def test_existing_destination_and_overwrite(packages: dict[str, Path], tmp_path: Path) -> None:
    src = packages["iOS17"]
    dest = compress(src, tmp_path / "a.mlpackage")
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
        compress(src, dest, method="palettize", nbits=4)
    assert read_export_metadata(dest)["compression"]["method"] == "linear"
    compress(src, dest, method="palettize", nbits=4, overwrite=True)
    assert read_export_metadata(dest)["compression"]["method"] == "palettize"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mlpackage"]  # nothing left over
    with pytest.raises(ValueError, match="dest must differ from src"):
        compress(src, src, overwrite=True)


def test_a_failed_save_leaves_nothing(
    packages: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(self: Any, path: str) -> None:
        Path(path).mkdir()
        (Path(path) / "half").write_text("written")
        raise OSError("disk full")

    monkeypatch.setattr(ct.models.MLModel, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        compress(packages["iOS17"], tmp_path / "b.mlpackage")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "target,kwargs,error,match",
    [
        (
            "iOS18",
            {"method": "prune"},
            ValueError,
            r"method must be one of \['linear', 'palettize'\]",
        ),
        ("iOS18", {"nbits": 6}, ValueError, r"nbits \(method='linear'\) must be one of \[8, 4\]"),
        ("iOS18", {"method": "palettize"}, ValueError, "nbits is required with method='palettize'"),
        ("iOS18", {"nbits": "8"}, TypeError, "nbits must be an int"),
        (
            "iOS18",
            {"method": "palettize", "nbits": 4, "granularity": "per_channel"},
            ValueError,
            r"granularity \(method='palettize'\) must be one of \['per_tensor', 'per_grouped",
        ),
        ("iOS18", {"group_size": 0}, ValueError, "group_size must be >= 1"),
        ("iOS18", {"weight_threshold": -1}, ValueError, "weight_threshold must be >= 0"),
        ("iOS18", {"activations": "int4"}, ValueError, "activations must be one of"),
        ("iOS18", {"activations": "int8"}, ValueError, "activations='int8' needs calibration"),
        (
            "iOS18",
            {"calibration": [{"image": np.zeros(SHAPE)}]},
            ValueError,
            "calibration is only used with activations='int8'",
        ),
        (
            "iOS18",
            {"method": "palettize", "nbits": 8, "activations": "int8", "calibration": []},
            ValueError,
            "activations='int8' pairs with int8 weights",
        ),
        (
            "iOS18",
            {"activations": "int8", "calibration": [{"x": np.zeros(SHAPE)}]},
            ValueError,
            r"calibration\[0\] must map the package's inputs \['image'\]",
        ),
        (
            "iOS18",
            {"activations": "int8", "calibration": []},
            ValueError,
            "calibration must hold at least one sample",
        ),
        (
            "iOS17",
            {"method": "palettize", "nbits": 4, "granularity": "per_grouped_channel"},
            ValueError,
            "granularity='per_grouped_channel' needs a package for iOS18.*target='iOS18'",
        ),
        (
            "iOS17",
            {"nbits": 4},
            ValueError,
            "method='linear' with nbits=4 needs a package for iOS18",
        ),
    ],
)
def test_bad_settings_are_named(
    packages: dict[str, Path], tmp_path: Path, target: str, kwargs: dict, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        compress(packages[target], tmp_path / "c.mlpackage", **kwargs)
    assert not (tmp_path / "c.mlpackage").exists()


def test_compressed_weights_needs_the_package_that_was_compressed(
    compressed: tuple[str, Path, Path],
) -> None:
    _, _, path = compressed
    with pytest.raises(ValueError, match="is it the package that was compressed"):
        compressed_weights(path, path)


def test_bad_paths_are_named(packages: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        compress(tmp_path / "missing.mlpackage", tmp_path / "d.mlpackage")
    with pytest.raises(ValueError, match=r"path must end in \.mlpackage"):
        compress(packages["iOS18"], tmp_path / "d.zip")

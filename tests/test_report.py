"""The ANE report on small real models converted with coremltools (fp16 ML programs)."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from _toy_models import WindowRoundtrip
from torch import nn

from ane_lib.coreml.export import export
from ane_lib.coreml.program import import_coremltools, quiet_coremltools
from ane_lib.coreml.report import (
    FALLBACK_SOURCE,
    MAX_DIM,
    OpRecord,
    Report,
    StagePadding,
    default_stage_key,
    plot_padding_by_stage,
    report,
)

ct = import_coremltools()

# ----------------------------------------------------------------------------- models


class SevenWide(nn.Module):
    """NCHW maps of 7x7 (last axis 7 fp16 values = 14 bytes) and one NHWC copy of them."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 32, 3, padding=1)
        self.proj = nn.Conv2d(32, 32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(torch.relu(self.conv(x)))  # (1, 32, 7, 7)
        return torch.relu(y.permute(0, 2, 3, 1))  # (1, 7, 7, 32): 64-byte rows


class Transposes(nn.Module):
    """Three transposes and one reshape, kept apart by compute so none can be merged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(x.transpose(2, 3))
        y = (y * 2).permute(0, 2, 3, 1)
        y = torch.sigmoid(y).transpose(1, 2)
        return torch.relu(y.reshape(1, 16, -1))


class Fallbacks(nn.Module):
    """Each layer type of the reported fallback list next to a harmless variant of it."""

    def __init__(self) -> None:
        super().__init__()
        self.plain = nn.Conv2d(4, 4, 3, padding=1)
        self.dilated = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
        self.register_buffer("index", torch.tensor([3, 0, 2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (1, 4, 32, 32)
        y = self.dilated(self.plain(x))
        small = nn.functional.max_pool2d(y, 2, 2)  # fine: kernel 2, stride 2
        big_stride = nn.functional.avg_pool2d(y, 3, 3, padding=1)  # stride 3
        big_kernel = nn.functional.max_pool2d(y, 15, 1, padding=7)  # kernel 15
        up2 = nn.functional.interpolate(small, scale_factor=2.0)  # 2x: fine
        up4 = nn.functional.interpolate(nn.functional.max_pool2d(small, 2, 2), scale_factor=4.0)
        picked = torch.index_select(big_kernel, 1, self.index)  # gather
        return (up2 + up4 + big_kernel).sum() + big_stride.sum() + picked.sum()


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.norm = nn.BatchNorm2d(c)
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(torch.relu(self.norm(self.conv(x))))


class Staged(nn.Module):
    """A stem, two stages of blocks and a head: names like those of the library's models."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.stages = nn.ModuleList(
            [nn.Sequential(Block(8), Block(8)), nn.Sequential(nn.Conv2d(8, 16, 1), Block(16))]
        )
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x.mean((2, 3)))


class Wide(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Export each model once per test module, on first use; returns its .mlpackage path."""
    models: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
        "seven": (SevenWide, (1, 4, 7, 7)),
        "transposes": (Transposes, (1, 4, 8, 16)),
        "fallbacks": (Fallbacks, (1, 4, 32, 32)),
        "staged": (Staged, (1, 3, 16, 16)),
        "windows_5d": (lambda: WindowRoundtrip("5d"), (1, 3, 8, 8)),
        "windows_6d": (lambda: WindowRoundtrip("6d"), (1, 3, 8, 8)),
        "wide": (Wide, (1, MAX_DIM + 16)),
    }
    folder = tmp_path_factory.mktemp("packages")
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            make, shape = models[name]
            torch.manual_seed(0)
            done[name] = export(make().eval(), shape, folder / f"{name}.mlpackage")
        return done[name]

    return get


def mil_program(
    model: nn.Module, shape: tuple[int, ...], *, fp32: bool = False, skip: tuple[str, ...] = ()
) -> Any:
    """Convert to an in-memory MIL program, optionally in fp32 or without some MIL passes."""
    x = torch.rand(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        exported = torch.export.export(model.eval(), (x,)).run_decompositions({})
    pipeline = ct.PassPipeline.DEFAULT
    pipeline.remove_passes(list(skip))
    precision = ct.precision.FLOAT32 if fp32 else ct.precision.FLOAT16
    with quiet_coremltools(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return ct.convert(
            exported,
            convert_to="milinternal",
            compute_precision=precision,
            inputs=[ct.TensorType(name="x", shape=shape)],
            pass_pipeline=pipeline,
        )


def padded_by_hand(shape: tuple[int, ...], itemsize: int) -> int:
    """Rows of the last axis, each rounded up to a multiple of 64 bytes (Apple 2022)."""
    rows = math.prod(shape[:-1]) if shape else 1
    last = shape[-1] if shape else 1
    return rows * math.ceil(last * itemsize / 64) * 64


ITEMSIZE = {"fp16": 2, "fp32": 4, "int32": 4, "bool": 1}

# ----------------------------------------------------------------------------- tests


def test_seven_wide_last_axis_is_padded_to_64_bytes(package: Callable[[str], Path]) -> None:
    rep = report(package("seven"))
    assert rep.ops, "no ops read from the package"
    for r in rep.ops:  # every op: the rule, computed by hand from its shapes
        assert r.padded_bytes == sum(
            padded_by_hand(s, ITEMSIZE[d]) for s, d in zip(r.shapes, r.dtypes, strict=True)
        )
        assert r.real_bytes == sum(
            math.prod(s) * ITEMSIZE[d] for s, d in zip(r.shapes, r.dtypes, strict=True)
        )
    nchw = [r for r in rep.ops if r.shapes == ((1, 32, 7, 7),) and r.dtypes == ("fp16",)]
    assert nchw, [r.shapes for r in rep.ops]
    for r in nchw:  # 32 * 7 rows of 14 bytes, each padded by 50 bytes
        assert r.real_bytes == 32 * 7 * 14
        assert r.padded_bytes == 32 * 7 * 64
        assert r.wasted_bytes == 32 * 7 * 50
    nhwc = [r for r in rep.ops if r.shapes == ((1, 7, 7, 32),)]
    assert nhwc and all(r.overhead == 1.0 for r in nhwc)
    assert rep.activation_padded_bytes == sum(r.padded_bytes for r in rep.ops)
    assert rep.activation_real_bytes == sum(r.real_bytes for r in rep.ops)
    assert rep.worst_padding(1)[0].wasted_bytes == max(r.wasted_bytes for r in rep.ops)


def test_weight_bytes_are_the_fp16_parameters(package: Callable[[str], Path]) -> None:
    model = SevenWide()
    expected = sum(p.numel() * 2 for p in model.parameters())
    rep = report(package("seven"))
    assert rep.weight_bytes == expected
    assert rep.weight_tensors == len(list(model.parameters()))


def test_layout_ops_are_counted(package: Callable[[str], Path]) -> None:
    rep = report(package("transposes"))
    assert rep.layout_op_counts == {"transpose": 3, "reshape": 1}
    assert rep.layout_ops == 4
    assert rep.op_histogram["transpose"] == 3
    assert rep.max_rank == 4
    assert rep.weight_bytes == 0


def test_reported_fallbacks_are_flagged(package: Callable[[str], Path]) -> None:
    rep = report(package("fallbacks"))
    flagged = sorted((r.op_type, r.fallback) for r in rep.fallback_ops)
    assert flagged == [
        ("avg_pool", "pooling with stride > 2 (strides=[3, 3])"),
        ("conv", "dilated convolution (dilations=[2, 2])"),
        ("gather", "gather"),
        ("max_pool", "pooling with kernel > 13 (kernel_sizes=[15, 15])"),
        ("upsample_nearest_neighbor", "upsampling by more than 2x (4x)"),
    ]
    # the harmless variants are present and not flagged
    assert sum(r.op_type == "conv" for r in rep.ops) == 2
    assert sum(r.op_type == "max_pool" for r in rep.ops) == 3
    assert sum(r.op_type == "upsample_nearest_neighbor" for r in rep.ops) == 2
    assert not rep.ok
    assert "5 op(s) on the reported fallback list" in rep.problems()
    assert FALLBACK_SOURCE in str(rep)


def test_rank6_window_partition_is_flagged() -> None:
    """Without the converter's rank-6 rewrite, the Swin partition keeps rank-6 tensors."""
    rewrite = "common::expand_high_rank_reshape_and_transpose"
    rep6 = report(mil_program(WindowRoundtrip("6d"), (1, 3, 8, 8), skip=(rewrite,)))
    assert rep6.max_rank == 6
    assert {r.op_type for r in rep6.high_rank_ops} == {"reshape", "transpose"}
    assert all(r.rank == 6 for r in rep6.high_rank_ops)
    assert not rep6.ok and "op(s) with rank > 5" in rep6.problems()[0]
    assert "[!!] rank <= 5 (max 6)" in str(rep6)
    rep5 = report(mil_program(WindowRoundtrip("5d"), (1, 3, 8, 8), skip=(rewrite,)))
    assert rep5.max_rank == 5 and not rep5.high_rank_ops and rep5.ok


def test_saved_6d_partition_costs_more_layout_ops(package: Callable[[str], Path]) -> None:
    """coremltools rewrites the rank-6 reshape/transpose into rank-4 steps: legal, but longer."""
    rep6, rep5 = report(package("windows_6d")), report(package("windows_5d"))
    assert rep6.max_rank <= 5 and rep5.max_rank <= 5
    assert rep6.layout_ops > rep5.layout_ops
    assert rep6.activation_padded_bytes > rep5.activation_padded_bytes


def test_fp32_ops_are_listed(package: Callable[[str], Path]) -> None:
    rep32 = report(mil_program(SevenWide(), (1, 4, 7, 7), fp32=True))
    assert {r.op_type for r in rep32.fp32_ops} == {"conv", "relu", "transpose"}
    assert "fp32 op(s)" in " ".join(rep32.problems())
    rep16 = report(package("seven"))
    assert rep16.fp32_ops == [] and rep16.ok


def test_dimensions_above_16384_are_listed(package: Callable[[str], Path]) -> None:
    rep = report(package("wide"))
    assert rep.large_dim_ops and all(r.max_dim == MAX_DIM + 16 for r in rep.large_dim_ops)
    assert not rep.ok
    assert report(package("transposes")).large_dim_ops == []


def test_padding_by_stage(package: Callable[[str], Path]) -> None:
    rep = report(package("staged"))
    stages = rep.padding_by_stage()
    # an input cast (present unless the inputs are fp16 already) is the only op before the stem
    assert [s for s in stages if s != "input"] == ["stem", "stages_0", "stages_1", "head"]
    assert stages.get("input", StagePadding(0, 0, 1)).ops == 1
    assert sum(s.padded_bytes for s in stages.values()) == rep.activation_padded_bytes
    assert sum(s.real_bytes for s in stages.values()) == rep.activation_real_bytes
    assert sum(s.ops for s in stages.values()) == len(rep.ops)
    # the folded batch norm (an unnamed fused weight) starts its block, not the previous one
    first_block = [r for r in rep.ops if r.scope.startswith("stages_0_0")]
    assert first_block[0].op_type == "conv"
    # any grouping can be passed
    by_type = rep.padding_by_stage(lambda r: r.op_type)
    assert by_type["conv"].ops == rep.op_histogram["conv"]
    with pytest.raises(TypeError, match="key must be a callable"):
        rep.padding_by_stage("stage")  # type: ignore[arg-type]


def test_default_stage_key() -> None:
    def rec(scope: str) -> OpRecord:
        return OpRecord("op", "relu", scope, ((1, 2),), ("fp16",), 4, 64)

    assert default_stage_key(rec("stages_2_blocks_0_attn_q_weight")) == "stages_2"
    assert default_stage_key(rec("encoder_layers_11_mlp_weight")) == "encoder_layers_11"
    assert default_stage_key(rec("stem_0_weight")) == "stem"
    assert default_stage_key(rec("")) == "input"


def test_plot_padding_by_stage(package: Callable[[str], Path]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rep = report(package("staged"))
    stages = rep.padding_by_stage()
    fig, ax = plt.subplots()
    assert plot_padding_by_stage(rep, ax) is ax
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)  # type: ignore[attr-defined]
    want = sorted(
        round(v / 1024, 6) for s in stages.values() for v in (s.real_bytes, s.padded_bytes)
    )
    assert heights == want
    plt.close(fig)
    with pytest.raises(TypeError, match="rep must be a Report"):
        plot_padding_by_stage({})  # type: ignore[arg-type]


def test_to_dict_is_json_and_str_is_a_table(package: Callable[[str], Path]) -> None:
    rep = report(package("fallbacks"))
    d = rep.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["ops"] == len(rep.ops) and len(d["op_records"]) == len(rep.ops)
    assert d["activation_padded_bytes"] == rep.activation_padded_bytes
    assert {f["op_type"] for f in d["fallback_ops"]} >= {"conv", "gather"}
    text = str(rep)
    assert text.startswith(f"ANE report: {package('fallbacks')}")
    for heading in ("Checks", "Op histogram", "Padding by stage", "Most bytes lost"):
        assert heading in text
    assert "dilated convolution (dilations=[2, 2])" in text


def test_program_and_path_agree(package: Callable[[str], Path]) -> None:
    from ane_lib.coreml.program import load_program

    path = package("transposes")
    a, b = report(path), report(load_program(path))
    assert isinstance(b, Report) and b.source == "<MIL program>"
    assert a.to_dict() | {"source": ""} == b.to_dict() | {"source": ""}


def test_bad_arguments(tmp_path: Path, package: Callable[[str], Path]) -> None:
    with pytest.raises(TypeError, match="path_or_program must be a path to a .mlpackage"):
        report(123)
    with pytest.raises(ValueError, match="does not exist"):
        report(tmp_path / "missing.mlpackage")
    with pytest.raises(
        ValueError, match=r"function 'other' is not in the program; it has \['main'\]"
    ):
        report(package("transposes"), function="other")
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        report(package("transposes")).worst_padding(0)

"""The ANE report on small real models converted with coremltools (fp16 ML programs): each rule
fires on the op of a model written to break it, named by its PyTorch module, and the module paths
survive in the saved package."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from _toy_models import WindowRoundtrip
from torch import nn

from ane_lib.ane_rules import RULES, TOP_LEVEL, UNKNOWN_MODULE, Report
from ane_lib.cli import main
from ane_lib.coreml.export import export
from ane_lib.coreml.module_record import RECORD_FILE, read_record
from ane_lib.coreml.program import import_coremltools, load_program, quiet_coremltools
from ane_lib.coreml.report import plot_padding_by_stage, report

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (1, 4, 8, 16)
        y = torch.relu(x.transpose(2, 3))  # (1, 4, 16, 8): the last axis moves
        y = (y * 2).permute(0, 2, 3, 1)  # (1, 16, 8, 4): the last axis moves
        y = torch.sigmoid(y).transpose(1, 2)  # (1, 8, 16, 4): the last axis stays
        return torch.relu(y.reshape(1, 16, -1))  # (1, 16, 32): the last axis grows


class MaskedScores(nn.Module):
    """Scores (B, keys, 1, queries) = (B, 16, 1, 16) masked with ``fill`` -> softmax over ``dim``
    (1: over the keys laid out as channels; -1: over a spatial axis)."""

    def __init__(self, fill: float, dim: int) -> None:
        super().__init__()
        self.dim = dim
        mask = torch.triu(torch.ones(16, 16, dtype=torch.bool), 1)
        self.register_buffer("mask", mask[:, None, :])  # (keys, 1, queries)
        self.fill = fill

    mask: torch.Tensor

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.masked_fill(self.mask, self.fill).softmax(self.dim)


class Breaks(nn.Module):
    """One submodule per rule it breaks (or, with ``fixed=True``, the fix of each)."""

    def __init__(self, fixed: bool = False) -> None:
        super().__init__()
        self.strided = nn.Conv2d(4, 8, 3, stride=4 if fixed else 5, padding=1)  # conv-stride
        self.wide = nn.Conv2d(8, 8, 5 if fixed else 9, padding=2 if fixed else 4)  # large-kernel
        d = 2 if fixed else 8  # large-dilation and the reported fallback list
        self.dilated = nn.Conv2d(8, 8, 3, padding=d, dilation=d)
        self.pool = nn.MaxPool2d(2 if fixed else 3, stride=2 if fixed else 3)  # pool-stride
        self.proj = nn.Conv2d(8, 16, 1) if fixed else nn.Linear(8, 16)  # linear-layer
        self.attend = MaskedScores(-4e4 if fixed else float("-inf"), 1 if fixed else -1)
        self.fixed = fixed

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (1, 4, 80, 80)
        # (1, 8, 5, 5); fixed: (1, 8, 10, 10)
        y = self.pool(self.dilated(self.wide(self.strided(x))))
        # the Linear on channels last, between two permutes; fixed: a 1x1 conv
        y = self.proj(y) if self.fixed else self.proj(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        scores = y.flatten(2)[:, :, :16].unsqueeze(2)  # (1, 16, 1, 16)
        return self.attend(scores)


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.norm = nn.BatchNorm2d(c)
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(torch.relu(self.norm(self.conv(x))))


class Staged(nn.Module):
    """A stem, two stages of blocks, glue in its own forward and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.stages = nn.ModuleList(
            [nn.Sequential(Block(8), Block(8)), nn.Sequential(nn.Conv2d(8, 16, 1), Block(16))]
        )
        self.head = nn.Conv2d(16, 10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x.mean((2, 3), keepdim=True)).flatten(1)


class Wide(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "seven": (SevenWide, (1, 4, 7, 7)),
    "transposes": (Transposes, (1, 4, 8, 16)),
    "breaks": (Breaks, (1, 4, 80, 80)),
    "fixed": (lambda: Breaks(fixed=True), (1, 4, 80, 80)),
    "staged": (Staged, (1, 3, 16, 16)),
    "windows_5d": (lambda: WindowRoundtrip("5d"), (1, 3, 8, 8)),
    "windows_6d": (lambda: WindowRoundtrip("6d"), (1, 3, 8, 8)),
    "wide": (Wide, (1, 1, 16400)),
}

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Export each model once per test module, on first use; returns its .mlpackage path."""
    folder = tmp_path_factory.mktemp("packages")
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            make, shape = MODELS[name]
            torch.manual_seed(0)
            done[name] = export(make().eval(), shape, folder / f"{name}.mlpackage")
        return done[name]

    return get


def mil_program(
    model: nn.Module,
    shape: tuple[int, ...],
    *,
    precision: Any = None,
    skip: tuple[str, ...] = (),
    dynamic: dict[str, Any] | None = None,
    input_shape: Any = None,
) -> Any:
    """Convert to an in-memory MIL program (no module paths), with options export() lacks."""
    x = torch.rand(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        exported = torch.export.export(model.eval(), (x,), dynamic_shapes=dynamic)
        exported = exported.run_decompositions({})
    pipeline = ct.PassPipeline.DEFAULT
    pipeline.remove_passes(list(skip))
    with quiet_coremltools(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return ct.convert(
            exported,
            convert_to="milinternal",
            compute_precision=precision or ct.precision.FLOAT16,
            minimum_deployment_target=ct.target.iOS17,
            inputs=[ct.TensorType(name="x", shape=input_shape or shape)],
            pass_pipeline=pipeline,
        )


def padded_by_hand(shape: tuple[int, ...], itemsize: int) -> int:
    """Rows of the last axis, each rounded up to a multiple of 64 bytes (Apple 2022)."""
    rows = math.prod(shape[:-1]) if shape else 1
    last = shape[-1] if shape else 1
    return rows * math.ceil(last * itemsize / 64) * 64


ITEMSIZE = {"fp16": 2, "fp32": 4, "int32": 4, "bool": 1}


def where(rep: Report, rule_id: str) -> set[str | None]:
    """The modules of the ops where a rule fires."""
    return {f.op.module for f in rep.findings[rule_id] if f.op is not None}


# ----------------------------------------------------------------------------- bytes


def test_seven_wide_last_axis_is_padded_to_64_bytes(package: Callable[[str], Path]) -> None:
    rep = report(package("seven"))
    assert rep.ops, "no ops read from the package"
    for r in rep.ops:  # every op: the rule, computed by hand from its shapes
        pairs = [(tuple(int(n) for n in s), d) for s, d in zip(r.shapes, r.dtypes, strict=True)]
        assert r.padded_bytes == sum(padded_by_hand(s, ITEMSIZE[d]) for s, d in pairs)
        assert r.real_bytes == sum(math.prod(s) * ITEMSIZE[d] for s, d in pairs)
    nchw = [r for r in rep.ops if r.shapes == ((1, 32, 7, 7),) and r.dtypes == ("fp16",)]
    assert nchw, [r.shapes for r in rep.ops]
    for r in nchw:  # 32 * 7 rows of 14 bytes, each padded by 50 bytes
        assert (r.real_bytes, r.padded_bytes, r.wasted_bytes) == (
            32 * 7 * 14,
            32 * 7 * 64,
            32 * 7 * 50,
        )
    nhwc = [r for r in rep.ops if r.shapes == ((1, 7, 7, 32),)]
    assert nhwc and all(r.overhead == 1.0 for r in nhwc)
    lost = {f.op.name: f.bytes_lost for f in rep.findings["last-axis-padding"] if f.op}
    assert lost == {r.name: r.wasted_bytes for r in rep.ops if r.wasted_bytes}
    assert rep.ok and not rep.fired("warning")


def test_weight_bytes_are_the_fp16_parameters(package: Callable[[str], Path]) -> None:
    model = SevenWide()
    rep = report(package("seven"))
    assert rep.weight_bytes == sum(p.numel() * 2 for p in model.parameters())
    assert rep.weight_tensors == len(list(model.parameters()))


def test_layout_ops_and_those_that_touch_the_last_axis(package: Callable[[str], Path]) -> None:
    rep = report(package("transposes"))
    assert rep.layout_op_counts == {"transpose": 3, "reshape": 1}
    touching = sorted(o.shapes[0] for o in rep.last_axis_layout_ops)
    assert touching == [(1, 4, 16, 8), (1, 16, 8, 4), (1, 16, 32)]
    assert rep.max_rank == 4 and rep.weight_bytes == 0


# ----------------------------------------------------------------------------- rules


def test_each_rule_fires_on_the_module_that_breaks_it(package: Callable[[str], Path]) -> None:
    rep = report(package("breaks"))
    assert where(rep, "conv-stride") == {"strided"}
    assert where(rep, "large-kernel") == {"wide"}
    assert where(rep, "large-dilation") == {"dilated"}
    assert where(rep, "pool-stride") == {"pool"}
    assert where(rep, "reported-fallback") == {"dilated", "pool"}
    assert where(rep, "linear-layer") == {"proj"}
    assert where(rep, "softmax-axis") == {"attend"}
    assert where(rep, "negative-infinity") == {"attend"}
    assert where(rep, "last-axis-layout") >= {""}  # the permutes around the Linear
    messages = {f.rule: f.message for r in RULES for f in rep.findings[r.id]}
    assert "prime factor(s) [5]" in messages["conv-stride"]
    assert "kernel (9, 9)" in messages["large-kernel"]
    assert "dilation 8 = 2 x 2 x 2" in messages["large-dilation"]
    assert "-inf" in messages["negative-infinity"]
    assert not rep.ok and rep.failed("warning") and not rep.failed("error")


def test_the_fixed_model_keeps_every_rule_but_its_layout(package: Callable[[str], Path]) -> None:
    rep = report(package("fixed"))
    # left: 10x10 maps (20-byte rows) and the flatten to (1, 16, 1, 16) scores
    assert {r.id for r in rep.fired()} == {"last-axis-padding", "last-axis-layout"}
    assert where(rep, "last-axis-layout") == {""}
    assert rep.ok and not rep.failed("warning")


@pytest.mark.parametrize("fill", [float("-inf"), -1e9])
def test_masks_of_minus_infinity(fill: float) -> None:
    """-inf, and -1e9 (which fp16 cannot hold: the converter keeps it and its op in fp32)."""
    rep = report(mil_program(MaskedScores(fill, 1), (1, 16, 1, 16)))
    found = rep.findings["negative-infinity"]
    assert [f.op.op_type for f in found if f.op is not None] == ["softmax"]
    if fill == -1e9:
        assert "(-inf in fp16)" in found[0].message
        assert rep.fp32_ops and "fp32" in {r.id for r in rep.fired("warning")}
    ok = report(mil_program(MaskedScores(-4e4, 1), (1, 16, 1, 16)))
    assert not ok.findings["negative-infinity"] and not ok.fp32_ops


def test_fp32_kept_by_the_converter_is_traced_to_its_cast() -> None:
    """An op kept in fp32 (here softmax, by an op selector) sits between two casts."""
    keep_softmax = ct.transform.FP16ComputePrecision(op_selector=lambda op: op.op_type != "softmax")
    rep = report(mil_program(MaskedScores(-4e4, 1), (1, 16, 1, 16), precision=keep_softmax))
    fp32 = rep.findings["fp32"]
    kinds = [f.op.op_type for f in fp32 if f.op is not None]
    assert kinds[:2] == ["cast", "softmax"]
    assert fp32[1].message == f"fp32 from cast {fp32[0].op.name}"  # type: ignore[union-attr]
    everything = report(mil_program(SevenWide(), (1, 4, 7, 7), precision=ct.precision.FLOAT32))
    assert len(everything.fp32_ops) == len(everything.ops)
    assert all("input x" in f.message for f in everything.findings["fp32"])


def test_rank6_window_partition_is_an_error() -> None:
    """Without the converter's rank-6 rewrite, the Swin partition keeps rank-6 tensors."""
    rewrite = "common::expand_high_rank_reshape_and_transpose"
    rep6 = report(mil_program(WindowRoundtrip("6d"), (1, 3, 8, 8), skip=(rewrite,)))
    assert rep6.max_rank == 6 and {r.op_type for r in rep6.high_rank_ops} == {
        "reshape",
        "transpose",
    }
    assert rep6.failed("error") and rep6.problems()[0].startswith("rank (error)")
    rep5 = report(mil_program(WindowRoundtrip("5d"), (1, 3, 8, 8), skip=(rewrite,)))
    assert rep5.max_rank == 5 and not rep5.findings["rank"]


def test_saved_6d_partition_costs_more_layout_ops(package: Callable[[str], Path]) -> None:
    """coremltools rewrites the rank-6 reshape/transpose into rank-4 steps: legal, but longer."""
    rep6, rep5 = report(package("windows_6d")), report(package("windows_5d"))
    assert rep6.max_rank <= 5 and rep5.max_rank <= 5
    assert rep6.layout_ops > rep5.layout_ops
    assert rep6.activation_padded_bytes > rep5.activation_padded_bytes


def test_flexible_shapes_and_large_dimensions(package: Callable[[str], Path]) -> None:
    length = torch.export.Dim("length", min=2, max=64)
    flexible = mil_program(
        Wide(),
        (1, 8, 1, 16),
        dynamic={"x": {3: length}},
        input_shape=(1, 8, 1, ct.RangeDim(2, 64)),
    )
    rep = report(flexible)
    assert rep.findings["static-shapes"][0].op is None  # the input itself
    assert "flexible shape" in rep.findings["static-shapes"][0].message and not rep.ok
    wide = report(package("wide"))
    assert [f.message for f in wide.findings["dimension-limits"]] == ["width 16400 > 16384"]
    assert not report(package("transposes")).findings["dimension-limits"]


# ----------------------------------------------------------------------------- module paths


def test_every_op_names_a_module_of_the_model(package: Callable[[str], Path]) -> None:
    rep = report(package("staged"))
    modules = dict(Staged().named_modules())  # torch's own names are the reference
    assert rep.module_coverage == (len(rep.ops), len(rep.ops))
    assert all(op.module in modules for op in rep.ops)
    assert [s for s in rep.padding_by_stage()] == [
        "stem",
        "stages.0",
        "stages.1",
        TOP_LEVEL,
        "head",
    ]
    convs = [op.module for op in rep.ops if op.op_type == "conv"]
    assert convs[0] == "stem" and convs[-1] == "head"
    # a batch norm folded into its conv: the fused op carries the conv's module, and no op
    # is left to the norm
    assert "stages.0.0.conv" in convs and "stages.0.0.norm" not in convs
    assert not any(op.module == "stages.0.0.norm" for op in rep.ops)
    assert {op.module_type for op in rep.ops if op.module == "head"} == {
        "torch.nn.modules.conv.Conv2d"
    }


def test_module_paths_live_in_the_package(package: Callable[[str], Path], tmp_path: Path) -> None:
    original = package("staged")
    moved = shutil.copytree(original, tmp_path / "elsewhere.mlpackage")
    assert [o.module for o in report(moved).ops] == [o.module for o in report(original).ops]
    record = read_record(moved)
    assert record is not None and record.ops
    # the same program in memory, given the record, reports the same
    a = report(original).to_dict()
    b = report(load_program(original), module_paths=record).to_dict()
    assert a | {"source": ""} == b | {"source": ""}


def test_a_package_without_module_paths_still_reports(
    package: Callable[[str], Path], tmp_path: Path
) -> None:
    old = Path(shutil.copytree(package("staged"), tmp_path / "old.mlpackage"))
    (old / RECORD_FILE).unlink()
    rep = report(old)
    assert rep.module_coverage == (0, len(rep.ops)) and rep.ops
    assert list(rep.padding_by_stage()) == [UNKNOWN_MODULE]
    assert "module paths unknown" in str(rep)
    (old / RECORD_FILE).write_text("{not json")
    broken = report(old)
    assert broken.module_coverage[0] == 0 and "module paths not read" in str(broken)


# ----------------------------------------------------------------------------- edges


def test_empty_and_nested_programs() -> None:
    from coremltools.converters.mil import Builder as mb  # noqa: N813
    from coremltools.converters.mil.mil import types

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4))])
    def empty(x: Any) -> Any:
        return x

    rep = report(empty)
    assert rep.ops == [] and rep.ok and "no ops to analyse" in str(rep)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4)), mb.TensorSpec((1,), dtype=types.bool)])
    def branches(x: Any, p: Any) -> Any:
        y = mb.cond(
            pred=mb.squeeze(x=p),
            _true_fn=lambda: mb.relu(x=x),
            _false_fn=lambda: mb.sigmoid(x=x),
        )
        items = mb.list_write(ls=mb.make_list(init_length=2, elem_shape=[1, 4]), index=0, value=y)
        return mb.topk(x=mb.list_read(ls=items, index=0), k=2)

    nested = report(branches)
    kinds = [op.op_type for op in nested.ops]
    assert kinds.index("cond") < kinds.index("relu") < kinds.index("sigmoid")  # inner blocks walked
    assert {"make_list", "list_write", "topk"} <= set(kinds) and not nested.graph.unanalysed


def test_several_inputs_integer_ids_and_a_mask() -> None:
    """Token ids (int32) and a float mask: nothing assumes one input or a float image."""
    from coremltools.converters.mil import Builder as mb  # noqa: N813
    from coremltools.converters.mil.mil import types

    table = torch.randn(100, 1, 64).numpy().astype("float16")  # (V, 1, D), Apple's layout

    @mb.program(
        input_specs=[
            mb.TensorSpec((1, 8), dtype=types.int32),
            mb.TensorSpec((1, 8, 1, 8), dtype=types.fp16),
        ],
        opset_version=ct.target.iOS17,
    )
    def encoder(ids: Any, mask: Any) -> Any:
        x = mb.gather(x=table, indices=ids, axis=0)  # (1, 8, 1, 64)
        scores = mb.reduce_sum(x=x, axes=[3], keep_dims=True)  # (1, 8, 1, 1)
        return mb.softmax(x=mb.add(x=scores, y=mask), axis=1)  # (1, 8, 1, 8)

    rep = report(encoder)
    assert list(rep.inputs) == ["ids", "mask"]
    assert rep.inputs["ids"] == ((1, 8), "int32") and rep.inputs["mask"][1] == "fp16"
    assert [f.op.op_type for f in rep.findings["reported-fallback"] if f.op] == ["gather"]
    assert rep.ok is False and not rep.findings["softmax-axis"]
    assert "input ids: (1, 8) int32" in str(rep)


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


def test_bad_arguments(tmp_path: Path, package: Callable[[str], Path]) -> None:
    with pytest.raises(TypeError, match="path_or_program must be a path"):
        report(123)
    with pytest.raises(ValueError, match="does not exist"):
        report(tmp_path / "missing.mlpackage")
    folder = tmp_path / "folder.mlpackage"
    folder.mkdir()
    with pytest.raises(ValueError, match="not a valid .mlpackage"):
        report(folder)
    with pytest.raises(ValueError, match=r"function 'other' is not in the program.*'main'"):
        report(package("transposes"), function="other")
    with pytest.raises(TypeError, match="module_paths must be"):
        report(package("transposes"), module_paths={"a": "b"})  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- CLI


def test_cli_report_text_json_and_exit_status(
    package: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ok, broken = package("fixed"), package("breaks")
    assert main(["report", str(ok)]) == 0
    text = capsys.readouterr().out
    assert all(f"  {r.id}: " in text for r in RULES)
    assert "(reported, not official)" in " ".join(text.split())
    assert max(len(line) for line in text.splitlines()) <= 79
    assert main(["report", str(ok), "--fail-on", "cost"]) == 1  # padding is a cost
    assert main(["report", str(broken)]) == 1
    assert "strided (conv)" in capsys.readouterr().out
    assert main(["report", str(broken), "--fail-on", "error"]) == 0
    capsys.readouterr()
    assert main(["report", str(broken), "--json", "--top", "2"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert len(data["worst_padding"]) == 2 and not data["ok"]
    fired = {r["id"]: r["findings"][0]["module"] for r in data["rules"] if r["fired"]}
    assert fired["conv-stride"] == "strided" and fired["linear-layer"] == "proj"


def test_cli_report_bad_input_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "not_a_package.mlpackage"
    folder.mkdir()
    for argv in (
        ["report", str(folder)],
        ["report", str(tmp_path)],
        ["report", "x.mlpackage", "--top", "0"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert (
            len(err.splitlines()) == 1
            and "Traceback" not in err
            and err.startswith("ane-lib report")
        )

"""The exporter's graph normalisation (ane_lib.coreml.normalise): each fix on the smallest model
that needs it. For each: coremltools 9 rejects the plain ``torch.export`` graph (so the fix is
needed), ``export`` converts it, records the fix, and the package (fp32, run by the executor)
computes what PyTorch computes."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ane_lib.coreml import ExportError, export, read_export_metadata, run
from ane_lib.coreml.normalise import (
    ALWAYS_DECOMPOSED,
    IDENTITY_OPS,
    POOL_OPS,
    GraphFix,
    coreml_unsupported_ops,
    prepare_for_coreml,
)
from ane_lib.coreml.program import import_coremltools, quiet_coremltools

SHAPE = (1, 4, 8, 8)


class Op(nn.Module):
    """A model that is one function of its input: the smallest model needing a fix."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _mask_ones(x: torch.Tensor) -> torch.Tensor:
    # what Hugging Face's mask helpers do: new_ones, then a & b
    keep = x.new_ones(x.shape, dtype=torch.bool)
    return x * (keep & (x > 0.5)).to(x.dtype)


# name -> (function, the op the graph holds, the fix export records)
CASES: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], str, str]] = {
    "max_pool2d, stride left out": (lambda x: F.max_pool2d(x, 2), "max_pool2d", "default stride"),
    "max_pool1d, stride None": (
        lambda x: F.max_pool1d(x.flatten(2), 4, None),
        "max_pool1d",
        "default stride",
    ),
    "torch.where with a scalar": (
        lambda x: torch.where(x > 0.5, x, 0.0),
        "where.ScalarOther",
        "decomposed",
    ),
    "bicubic interpolate": (
        lambda x: F.interpolate(x, scale_factor=2, mode="bicubic"),
        "upsample_bicubic2d.vec",
        "decomposed",
    ),
    "channel_shuffle": (lambda x: F.channel_shuffle(x, 2), "channel_shuffle", "decomposed"),
    "celu": (F.celu, "celu", "decomposed"),
    "logsigmoid (decomposes into new_zeros)": (F.logsigmoid, "log_sigmoid", "decomposed"),
    "cosine_similarity, dim and eps left out": (
        lambda x: F.cosine_similarity(x, x.flip(1)),
        "cosine_similarity",
        "decomposed",
    ),
    "addcmul": (lambda x: torch.addcmul(x, x, x, value=0.5), "addcmul", "decomposed"),
    "new_ones and a & b (attention masks)": (_mask_ones, "new_ones", "decomposed"),
}


def _plain_convert(model: nn.Module) -> None:
    """What coremltools does with the graph when nobody normalises it."""
    ct = import_coremltools()
    exported = torch.export.export(model, (torch.rand(SHAPE),)).run_decompositions({})
    with quiet_coremltools():
        ct.convert(exported, convert_to="mlprogram", compute_precision=ct.precision.FLOAT32)


def _check_fix(model: nn.Module, op: str, kind: str, tmp_path: Path) -> None:
    # coremltools itself refuses the plain graph, naming the op the fix is for
    with pytest.raises(
        (ValueError, NotImplementedError), match=f"(?i){re.escape(op.split('.')[0])}"
    ):
        _plain_convert(model)
    path = export(model, SHAPE, tmp_path / "m.mlpackage", precision="fp32")
    fixes = read_export_metadata(path)["graph_fixes"]
    assert {"kind": kind, "op": op} in [{"kind": f["kind"], "op": f["op"]} for f in fixes]
    x = torch.rand(SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x).numpy()
    got = next(iter(run(path, {"image": x.numpy()}, precision="fp32").values()))
    np.testing.assert_allclose(got.reshape(ref.shape), ref, rtol=1e-5, atol=1e-5 * abs(ref).max())


@pytest.mark.parametrize("case", list(CASES))
def test_fix_converts_what_coremltools_rejects(case: str, tmp_path: Path) -> None:
    fn, op, kind = CASES[case]
    _check_fix(Op(fn), op, kind, tmp_path)


class FullSlice(nn.Module):
    """An expanded buffer sliced over its whole length: Hugging Face's position ids
    (``torch.arange(n).expand((1, -1))``, then ``[:, :seq_length]``) at the longest input."""

    def __init__(self) -> None:
        super().__init__()
        ids = torch.arange(SHAPE[-1], dtype=torch.float32).expand((1, -1))
        self.register_buffer("position_ids", ids, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.position_ids[:, : x.shape[-1]]


def test_an_identity_view_is_removed(tmp_path: Path) -> None:
    _check_fix(FullSlice(), "alias", "removed", tmp_path)


class Prod(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.prod(-1)


def test_unfixable_op_is_named_in_the_export_error(tmp_path: Path) -> None:
    # prod has no Core ML conversion and PyTorch decomposes it only into prims: left alone,
    # the error names the op, the layer and the line
    model = Prod()
    exported = torch.export.export(model, (torch.rand(SHAPE),))
    assert coreml_unsupported_ops(exported.run_decompositions({})) == {"prod.dim_int": 1}
    with pytest.raises(ExportError, match=r"prod\.dim_int") as info:
        export(model, SHAPE, tmp_path / "m.mlpackage")
    assert info.value.stage == "convert"
    assert "x.prod(-1)" in str(info.value)
    assert not (tmp_path / "m.mlpackage").exists()


def test_prepare_for_coreml_leaves_a_convertible_graph_alone() -> None:
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    exported, fixes = prepare_for_coreml(torch.export.export(model, (torch.rand(SHAPE),)))
    assert fixes == []  # nn.MaxPool2d writes its stride out: nothing to fill
    assert coreml_unsupported_ops(exported) == {}


def test_fixes_are_counted_per_op_and_described() -> None:
    model = Op(
        lambda x: F.max_pool2d(F.max_pool2d(x, 2), 2) + torch.where(x > 0, x, 1.0)[..., ::4, ::4]
    )
    _, fixes = prepare_for_coreml(torch.export.export(model, (torch.rand(SHAPE),)))
    assert GraphFix("default stride", "max_pool2d", 2) in fixes
    assert any(f.op.startswith("where.") and f.kind == "decomposed" for f in fixes)
    assert (
        str(GraphFix("default stride", "max_pool2d", 2)) == "max_pool2d: default stride (2 nodes)"
    )
    assert GraphFix("decomposed", "celu", 1).to_dict() == {
        "kind": "decomposed",
        "op": "celu",
        "nodes": 1,
    }


def test_tables_name_real_aten_ops() -> None:
    for name in (*ALWAYS_DECOMPOSED, *POOL_OPS, *IDENTITY_OPS):
        assert hasattr(torch.ops.aten, name), name

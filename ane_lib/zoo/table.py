"""The zoo's table: for each model, does it export, what does the report say, what does fp16 cost.

:func:`evaluate` takes one model (a zoo name, or any model with its inputs) through the user's
path: :func:`ane_lib.coreml.export` to an fp16 package, :func:`ane_lib.coreml.report` on it,
and :func:`ane_lib.coreml.verify` (the package run by the reference executor in fp16 against
the model in PyTorch fp32). It never raises for the model's sake: a failure is recorded in the
row with the stage it happened at and the message the user would see. :func:`zoo_table` does
it for many models and :func:`rows_markdown` shows the rows as a table.

Columns (:class:`ZooRow`): whether it exported and, if not, why; the graph rewrites the exporter
made (:mod:`ane_lib.coreml.normalise`); ops, layout ops (transposes and reshapes) and the largest
tensor rank; activation bytes, real and padded to 64-byte rows; fp32 ops; the report's rules
that fire; fp16 PSNR and top-1 agreement against PyTorch, beside the PSNR of PyTorch's own
fp16 forward (what fp16 costs these weights, whoever runs them); export and verification
times.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ane_lib._checks import check_positive_int
from ane_lib.ane_rules import Report
from ane_lib.coreml.export import ExportError, export, read_export_metadata
from ane_lib.coreml.report import report
from ane_lib.coreml.signature import TensorSpec, flatten_outputs, sample_inputs
from ane_lib.coreml.verification import psnr, verify
from ane_lib.zoo.catalog import build, entry_point, zoo_entry, zoo_inputs

__all__ = [
    "ZooRow",
    "evaluate",
    "rows_markdown",
    "rules_violated",
    "torch_fp16_psnr",
    "zoo_table",
]

#: The PSNR the zoo aims for (fp16 executor against PyTorch fp32), in dB.
TARGET_PSNR_DB = 60.0


@dataclasses.dataclass(frozen=True)
class ZooRow:
    """One model's line in the zoo table (``None`` where a stage did not run).

    ``stage`` is where a failure happened (``"build"``, ``"export"``, ``"verify"``) and
    ``error`` the message the user sees there. ``op_types``: the package's MIL op types.
    ``rules`` / ``costs``: ids of the report's rules
    of severity error or warning / cost that fire (:func:`rules_violated`).
    ``psnr_db`` / ``top1``: the package run by the executor in fp16 against the model in
    PyTorch fp32, over ``samples`` random inputs. ``torch_fp16_psnr_db``: PyTorch's own fp16
    forward (a copy of the model in half precision, on the CPU) against its fp32 forward on the
    same inputs: what fp16 costs these weights whoever runs them, the yardstick for
    ``psnr_db`` (``torch_fp16_error`` if PyTorch cannot run the model in fp16).
    """

    name: str
    architecture: str
    inputs: str
    params: int
    stage: str | None = None
    error: str | None = None
    graph_fixes: tuple[str, ...] = ()
    ops: int | None = None
    op_types: tuple[str, ...] = ()
    layout_ops: int | None = None
    max_rank: int | None = None
    real_bytes: int | None = None
    padded_bytes: int | None = None
    fp32_ops: int | None = None
    rules: tuple[str, ...] | None = None
    costs: tuple[str, ...] | None = None
    psnr_db: float | None = None
    top1: float | None = None
    torch_fp16_psnr_db: float | None = None
    torch_fp16_error: str | None = None
    samples: int = 0
    export_s: float | None = None
    verify_s: float | None = None

    @property
    def exported(self) -> bool:
        """Whether ``export`` wrote a package (the report then counted its ops)."""
        return self.ops is not None

    @property
    def verified(self) -> bool:
        """Exported, and the fp16 package reaches :data:`TARGET_PSNR_DB` with full top-1
        agreement."""
        return self.psnr_db is not None and self.psnr_db >= TARGET_PSNR_DB and self.top1 == 1.0

    @property
    def reason(self) -> str:
        """The failure in one short line: the error up to what coremltools said."""
        if self.error is None:
            return ""
        first = self.error.split(". coremltools said:")[0].split("\n")[0]
        return f"{self.stage}: {first}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (an infinite PSNR becomes the string ``"inf"``)."""
        out = {"name": self.name, "exported": self.exported} | dataclasses.asdict(self)
        if isinstance(self.psnr_db, float) and math.isinf(self.psnr_db):
            out["psnr_db"] = str(self.psnr_db)
        return out


def rules_violated(rep: Report, *, costs: bool = False) -> tuple[str, ...]:
    """Ids of the rules of the report's table (:data:`ane_lib.ane_rules.RULES`) that fire on
    ``rep``, in the table's order: the errors and warnings, or with ``costs=True`` the costs
    (``last-axis-padding``, ``linear-layer``, ...), which the report counts but does not fail
    on."""
    return tuple(r.id for r in rep.fired() if (r.severity == "cost") == costs)


def _describe_inputs(specs: Mapping[str, TensorSpec]) -> str:
    shapes = {spec.shape for spec in specs.values()}
    if len(shapes) == 1:
        return f"{' + '.join(specs)} {next(iter(shapes))}"
    return ", ".join(f"{name} {spec.shape}" for name, spec in specs.items())


def evaluate(
    model: nn.Module | str,
    inputs: Mapping[str, TensorSpec] | None = None,
    *,
    name: str | None = None,
    architecture: str = "",
    tiny: bool = False,
    size: int | None = None,
    samples: int = 4,
    workdir: str | os.PathLike[str] | None = None,
    keep: bool = False,
) -> ZooRow:
    """Export, report and verify one model; failures are recorded, not raised.

    Args:
        model: a zoo name (built with :func:`~ane_lib.zoo.catalog.build`, ``tiny`` and ``size``
            passed on) or a module, with its ``inputs`` (name -> :class:`TensorSpec`).
        inputs: the module's inputs; for a zoo name they come from the zoo.
        name / architecture: how the row names a module (default: its class name).
        samples: random inputs of the verification (top-1 agreement over them).
        workdir: where the package is written (default: a temporary folder).
        keep: keep the package (``<workdir>/<name>.mlpackage``); by default it is deleted.
    """
    check_positive_int("samples", samples)
    metadata: dict[str, Any] = {}
    if isinstance(model, str):
        entry = zoo_entry(model)
        name, architecture = name or entry.name, architecture or entry.architecture
        inputs = zoo_inputs(entry.name, tiny=tiny, size=size)
        metadata["entry_point"] = entry_point(entry.name, tiny=tiny, size=size)
        try:
            model = build(entry.name, tiny=tiny, size=size)
        except Exception as err:  # a zoo entry that no longer builds is a finding too
            return ZooRow(name, architecture, _describe_inputs(inputs), 0, "build", str(err))
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module or a zoo name, got {model!r}")
    if inputs is None:
        raise ValueError("inputs must be given for a module (name -> TensorSpec)")
    name = name or type(model).__name__
    row = ZooRow(
        name,
        architecture or type(model).__name__,
        _describe_inputs(inputs),
        sum(p.numel() for p in model.parameters()),
    )
    folder = Path(tempfile.mkdtemp(prefix="ane_lib_zoo_")) if workdir is None else Path(workdir)
    path = folder / f"{name}.mlpackage"
    try:
        return _evaluate(model, dict(inputs), row, path, metadata, samples)
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)
            if workdir is None:
                shutil.rmtree(folder, ignore_errors=True)


def _evaluate(
    model: nn.Module,
    inputs: dict[str, TensorSpec],
    row: ZooRow,
    path: Path,
    metadata: dict[str, Any],
    samples: int,
) -> ZooRow:
    single = len(inputs) == 1
    t0 = time.perf_counter()
    try:
        export(
            model,
            next(iter(inputs.values())).shape if single else inputs,
            path,
            overwrite=True,
            input_name=next(iter(inputs)),
            name=row.name,
            metadata=metadata,
        )
    except ExportError as err:
        return dataclasses.replace(row, stage="export", error=str(err))
    except Exception as err:  # export's own checks (ValueError, TypeError) and anything else
        return dataclasses.replace(row, stage="export", error=f"{type(err).__name__}: {err}")
    export_s = time.perf_counter() - t0
    fixes = read_export_metadata(path).get("graph_fixes") or []
    rep = report(path)
    row = dataclasses.replace(
        row,
        export_s=export_s,
        graph_fixes=tuple(f"{f['op']} ({f['kind']})" for f in fixes),
        ops=len(rep.ops),
        op_types=tuple(sorted(rep.op_histogram)),
        layout_ops=rep.layout_ops,
        max_rank=rep.max_rank,
        real_bytes=rep.activation_real_bytes,
        padded_bytes=rep.activation_padded_bytes,
        fp32_ops=len(rep.fp32_ops),
        rules=rules_violated(rep),
        costs=rules_violated(rep, costs=True),
    )
    t0 = time.perf_counter()
    try:
        result = verify(path, model, samples=samples, mode="neural_engine_fp16")
    except Exception as err:  # an executor gap or an fp16 overflow: the row says which
        return dataclasses.replace(row, stage="verify", error=f"{type(err).__name__}: {err}")
    row = dataclasses.replace(
        row,
        psnr_db=result.psnr_db,
        top1=result.top1_agreement,
        samples=result.samples,
        verify_s=time.perf_counter() - t0,
    )
    try:
        row = dataclasses.replace(row, torch_fp16_psnr_db=torch_fp16_psnr(model, inputs, samples))
    except Exception as err:  # e.g. a model whose buffers stay fp32 in .half()
        row = dataclasses.replace(row, torch_fp16_error=f"{type(err).__name__}: {err}")
    if math.isfinite(result.max_abs_error):
        return row
    # NaN or inf that the executor did not stop at: a constant that is already -inf in the
    # package (the report's negative-infinity rule says which)
    why = "the fp16 package's outputs hold NaN or inf where PyTorch's are finite"
    findings = rep.findings.get("negative-infinity", ())
    if findings:
        why += f"; the report: {findings[0].message}"
    return dataclasses.replace(row, stage="verify", error=why)


def torch_fp16_psnr(model: nn.Module, inputs: Mapping[str, TensorSpec], samples: int) -> float:
    """PSNR (dB) of PyTorch's fp16 forward of ``model`` against its fp32 forward, over the
    random inputs :func:`~ane_lib.coreml.verify` draws (seeds ``0 .. samples - 1``, floats
    rounded to fp16 for both), worst over the outputs."""
    # .train() then .eval(): a module that caches tensors built in eval mode (LeViT's attention
    # biases) drops its fp32 cache, which .half() does not convert, when training is switched on.
    half = copy.deepcopy(model).half().train().eval()
    refs: dict[str, list[np.ndarray]] = {}
    gots: dict[str, list[np.ndarray]] = {}
    for seed in range(samples):
        x = sample_inputs(inputs, seed)
        x16 = {k: v.half() if v.is_floating_point() else v for k, v in x.items()}
        x32 = {k: v.float() if v.is_floating_point() else v for k, v in x16.items()}
        with torch.no_grad():
            ref = flatten_outputs(model(**x32))
            got = flatten_outputs(half(**x16))
        for name in ref:
            refs.setdefault(name, []).append(ref[name].double().numpy())
            gots.setdefault(name, []).append(got[name].double().numpy())
    return min(psnr(np.stack(refs[n]), np.stack(gots[n])) for n in refs)


def zoo_table(
    names: Iterable[str],
    *,
    tiny: bool = False,
    samples: int = 4,
    workdir: str | os.PathLike[str] | None = None,
    keep: bool = False,
    progress: Callable[[ZooRow], None] | None = None,
) -> list[ZooRow]:
    """:func:`evaluate` for each zoo name in ``names``; ``progress`` sees each row when done."""
    rows = []
    for name in names:
        row = evaluate(name, tiny=tiny, samples=samples, workdir=workdir, keep=keep)
        if progress is not None:
            progress(row)
        rows.append(row)
    return rows


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    return format(value, spec)


#: Column name -> how a row shows it, for :func:`rows_markdown`.
COLUMNS: dict[str, Callable[[ZooRow], str]] = {
    "model": lambda r: r.name,
    "architecture": lambda r: r.architecture,
    "input": lambda r: r.inputs,
    "params": lambda r: f"{r.params / 1e6:.1f}M",
    "exports": lambda r: "yes" if r.exported else "no",
    "fixes": lambda r: ", ".join(r.graph_fixes) or "-",
    "ops": lambda r: _fmt(r.ops),
    "layout": lambda r: _fmt(r.layout_ops),
    "rank": lambda r: _fmt(r.max_rank),
    "real": lambda r: _fmt_bytes(r.real_bytes),
    "padded": lambda r: _fmt_bytes(r.padded_bytes),
    "fp32": lambda r: _fmt(r.fp32_ops),
    "rules": lambda r: "-" if r.rules is None else (", ".join(r.rules) or "none"),
    "costs": lambda r: "-" if r.costs is None else (", ".join(r.costs) or "none"),
    "PSNR": lambda r: _fmt(r.psnr_db, ".1f"),
    "torch fp16": lambda r: _fmt(r.torch_fp16_psnr_db, ".1f"),
    "top-1": lambda r: _fmt(r.top1, ".0%"),
    "export s": lambda r: _fmt(r.export_s, ".1f"),
    "verify s": lambda r: _fmt(r.verify_s, ".1f"),
    "why not": lambda r: r.reason or "-",
}


def _escape(cell: str) -> str:
    """A cell for a Markdown table: ``|`` would split it, and an ``_`` at the edge of a word
    would start emphasis (``__and__``); an ``_`` inside a name (``mobilenet_v2``) is kept."""
    return re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", cell.replace("|", "\\|"))


def rows_markdown(rows: Sequence[ZooRow], columns: Sequence[str] | None = None) -> str:
    """The rows as a Markdown table, with ``columns`` (names of :data:`COLUMNS`, default all)."""
    chosen = list(COLUMNS) if columns is None else list(columns)
    unknown = [c for c in chosen if c not in COLUMNS]
    if unknown:
        raise ValueError(f"columns {unknown} are not known; known: {list(COLUMNS)}")
    lines = ["| " + " | ".join(chosen) + " |", "|" + "---|" * len(chosen)]
    for row in rows:
        cells = [_escape(COLUMNS[c](row)) for c in chosen]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)

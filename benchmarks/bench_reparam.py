"""Reparameterise tiny-MOAT-1 before export: op counts, batch norms and equality, both forms.

    .venv/bin/python benchmarks/bench_reparam.py [--model tiny_moat_1] [--image-size 256]
                                                 [--window 8] [--pe lepe] [--json] [--keep DIR]

One set of weights (the standard model, seed 0, with ``perturb_weights_`` standing in for
training so that the batch norms are not identities; converted with ``to_ane``) is exported four
times per form: as it is and after ``ane_lib.nn.reparameterize`` (``export(...,
reparameterize=True)``), each as an fp16 package (what ships; its ops are counted with
``ane_lib.coreml.report``) and as an fp32 package (run by the reference executor in fp32 and
compared with the *original* model in PyTorch fp32: the maximum error relative to the largest
|logit|, which must stay <= 1e-5 for the fold to count as exact). The script exits 1 if a
reparameterised package still holds a batch_norm op that a batch norm of the model made, or if
an error exceeds 1e-5.

Layer norms also appear as batch_norm ops in the package (the converter applies the per-channel
scale and shift of ``LayerNormANE`` with a ``batch_norm``), so the count of batch_norm ops left
is compared with the number of ``LayerNormANE`` modules, not with zero.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ane_lib.coreml import export, report, verify
from ane_lib.coreml.program import import_coremltools
from ane_lib.models import create_model, to_ane
from ane_lib.models.weights import perturb_weights_
from ane_lib.nn import LayerNormANE, reparameterize

TOLERANCE = 1e-5


def count(model: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def measure(model: nn.Module, shape: tuple[int, ...], folder: Path, name: str) -> dict[str, Any]:
    """Export ``model`` plain and reparameterised; count ops (fp16) and check equality (fp32)."""
    row: dict[str, Any] = {}
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    folded = reparameterize(model, x)
    with torch.no_grad():
        want = model(x)
        row["torch max rel err"] = float((folded(x) - want).abs().max() / want.abs().max())
    row["BatchNorm2d modules"] = [count(model, nn.BatchNorm2d), count(folded, nn.BatchNorm2d)]
    norms = count(model, LayerNormANE)
    for flag, tag in ((False, "plain"), (True, "reparam")):
        t0 = time.perf_counter()
        path = export(model, shape, folder / f"{name}_{tag}.mlpackage", reparameterize=flag)
        row.setdefault("export s", []).append(round(time.perf_counter() - t0, 2))
        hist = report(path).op_histogram
        row.setdefault("ops", []).append(sum(hist.values()))
        row.setdefault("conv ops", []).append(hist.get("conv", 0))
        row.setdefault("batch_norm ops", []).append(hist.get("batch_norm", 0))
        row.setdefault("batch_norm ops from BNs", []).append(hist.get("batch_norm", 0) - norms)
        path32 = export(
            model,
            shape,
            folder / f"{name}_{tag}_fp32.mlpackage",
            precision="fp32",
            reparameterize=flag,
        )
        check = verify(path32, model, samples=1, precision="fp32")
        row.setdefault("fp32 max rel err", []).append(check.max_rel_error)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny_moat_1")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--pe", default="lepe")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep", type=Path, help="folder to keep the packages in")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", FutureWarning)
    import_coremltools()

    torch.manual_seed(0)
    options = dict(pe=args.pe, attention="local", window=args.window, image_size=args.image_size)
    standard = create_model(args.model, form="standard", **options).eval()
    perturb_weights_(standard, seed=0)
    ane = to_ane(standard).eval()
    shape = (1, 3, args.image_size, args.image_size)

    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_reparam."))
    folder.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, Any]] = {}
    try:
        for form, model in (("standard", standard), ("ane", ane)):
            print(f"exporting the {form} form, plain and reparameterised ...", file=sys.stderr)
            rows[form] = measure(model, shape, folder, f"{args.model}_{form}")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)

    ok = all(
        row["batch_norm ops from BNs"][1] == 0
        and max(row["fp32 max rel err"]) <= TOLERANCE
        and row["torch max rel err"] <= TOLERANCE
        for row in rows.values()
    )
    setting = (
        f"{args.model}, {args.image_size}x{args.image_size}, local {args.window}x{args.window}, "
        f"{args.pe}"
    )
    if args.json:
        print(json.dumps({"setting": setting, "ok": ok, "forms": rows}, indent=2))
        return 0 if ok else 1
    print(f"{setting}: exported as it is -> after reparameterize (fp16 packages)")
    print(f"{'':<26}{'standard':>20}{'ane':>20}")
    for key in rows["standard"]:
        cells = []
        for form in ("standard", "ane"):
            v = rows[form][key]
            if isinstance(v, list):
                text = " -> ".join(f"{x:.2g}" if isinstance(x, float) else str(x) for x in v)
            else:
                text = f"{v:.2g}"
            cells.append(f"{text:>20}")
        print(f"{key:<26}{''.join(cells)}")
    print(f"fp32 errors: executor on the fp32 package vs the original model; limit {TOLERANCE}")
    print("ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""One model, two Apple stacks side by side: Core ML (run by this project's executor) and
Core AI (run by Apple's own runtime), both on this machine's CPU.

    .venv/bin/python benchmarks/bench_coreai.py [--images 2] [--image-size 256] [--window 8]
                                                [--json] [--digits] [--keep DIR]

For tiny-MOAT-1 (ANE form, local 8x8 windows, LePE; seeded weights), exported in fp16 and in
fp32 to both stacks, it prints per stack and precision:

- export time (torch.export + conversion + save) and the bytes on disk;
- the ANE report's op count, layout ops and padded / real activation bytes (fp16);
- the run time per image (program loaded once; its load time apart);
- the error against PyTorch fp32 on the same images: PSNR, max relative error, top-1;
- the two runtimes against each other on the fp32 programs (max relative error, same top-1).

``--digits`` adds chapter 9's trained digits MOAT (from the library's cache): both fp32
programs on every test image, the number of images whose top-1 differs between the runtimes
and each stack's test accuracy.

Timings depend on the machine and its load; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ane_lib import coreai, coreml
from ane_lib.crosscheck import runtimes_agree
from ane_lib.models import create_model

STACKS = ("coreml", "coreai")
SUFFIX = {"coreml": ".mlpackage", "coreai": ".aimodel"}


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def time_runs(stack: str, path: Path, images: list[torch.Tensor]) -> dict:
    """Load once, then run every image; seconds to load and per image."""
    arrays = [{"image": x.numpy()} for x in images]
    t0 = time.perf_counter()
    if stack == "coreml":
        program = coreml.load_program(path)
        loaded = time.perf_counter() - t0
        t1 = time.perf_counter()
        for a in arrays:
            coreml.run(program, a)  # mode "declared": fp16 package in fp16, fp32 in fp32
    else:
        with coreai.Session(path) as session:
            loaded = time.perf_counter() - t0
            t1 = time.perf_counter()
            for a in arrays:
                session(a)
    return {"load s": loaded, "run s/image": (time.perf_counter() - t1) / len(arrays)}


def measure(
    stack: str, precision: str, model: torch.nn.Module, images: list[torch.Tensor], folder: Path
) -> dict[str, Any]:
    shape = tuple(images[0].shape)
    path = folder / f"model_{precision}{SUFFIX[stack]}"
    t0 = time.perf_counter()
    if stack == "coreml":
        coreml.export(model, shape, path, precision=precision, overwrite=True)
    else:
        coreai.export(model, shape, path, precision=precision, overwrite=True)
    row: dict[str, Any] = {"export s": time.perf_counter() - t0, "bytes": folder_bytes(path)}
    rep = (coreml.report if stack == "coreml" else coreai.report)(path)
    row |= {
        "ops": len(rep.ops),
        "layout ops": rep.layout_ops,
        "padded/real": rep.padding_overhead,
        "weight bytes": rep.weight_bytes,
    }
    row |= time_runs(stack, path, images)
    verify = coreml.verify if stack == "coreml" else coreai.verify
    check = verify(path, model, inputs=images)
    row |= {
        "PSNR dB": check.psnr_db,
        "max rel err": check.max_rel_error,
        "top-1": check.top1_agreement,
    }
    row["path"] = str(path)
    return row


def digits_rows(folder: Path) -> dict[str, Any]:
    """Chapter 9's trained digits MOAT on both stacks in fp32, every test image."""
    from ane_lib.data import load_digits_split
    from ane_lib.models import to_ane
    from ane_lib.training import train_digits_moat

    data = load_digits_split()
    model = to_ane(train_digits_moat(data=data, progress=False).model).eval()
    x_test, y_test = data.x_test, data.y_test
    shape = (1, *x_test.shape[1:])
    package = coreml.export(model, shape, folder / "digits.mlpackage", precision="fp32")
    program = coreai.export(model, shape, folder / "digits.aimodel", precision="fp32")
    images = [x_test[i : i + 1] for i in range(len(x_test))]
    t0 = time.perf_counter()
    agreement = runtimes_agree(package, program, images)
    seconds = time.perf_counter() - t0
    with coreai.Session(program) as session:
        apple = np.array([session({"image": x})["logits"].argmax() for x in images])
    labels = np.asarray(y_test)
    return {
        "test images": agreement.samples,
        "top-1 differs": agreement.samples - agreement.top1_same,
        "max rel err": agreement.max_rel_error,
        "Core AI accuracy": float(np.mean(apple == labels)),
        "seconds (both runtimes, all images)": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2, help="images per measurement (2)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--window", type=int, default=8, help="local attention window (8)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--digits", action="store_true", help="add chapter 9's digits MOAT")
    parser.add_argument("--keep", type=Path, help="folder to keep the programs in")
    args = parser.parse_args(argv)
    if not coreai.available():
        print(f"bench_coreai: {coreai.unavailable_reason()}", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    model = create_model(
        "tiny_moat_1",
        form="ane",
        pe="lepe",
        attention="local",
        window=args.window,
        image_size=args.image_size,
    ).eval()
    shape = (1, 3, args.image_size, args.image_size)
    images = [coreml.example_input(shape, seed=100 + i) for i in range(args.images)]
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_coreai."))
    folder.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, Any]] = {}
    for precision in ("fp16", "fp32"):
        for stack in STACKS:
            print(f"{stack} {precision} ...", file=sys.stderr, flush=True)
            rows[f"{stack} {precision}"] = measure(stack, precision, model, images, folder)
    agreement = runtimes_agree(rows["coreml fp32"]["path"], rows["coreai fp32"]["path"], images)
    figures: dict[str, Any] = {
        "model": f"tiny_moat_1 ane lepe local {args.window}x{args.window} @{args.image_size}",
        "images": args.images,
        "stacks": rows,
        "fp32 Core AI runtime vs executor": {
            "max rel err": agreement.max_rel_error,
            "same top-1": agreement.top1_same,
        },
    }
    if args.digits:
        print("digits MOAT ...", file=sys.stderr, flush=True)
        figures["digits"] = digits_rows(folder)
    if args.json:
        print(json.dumps(figures, indent=2, default=str))
    else:
        print(f"{figures['model']}, {args.images} image(s); timings on this machine's CPU")
        columns = list(rows)
        print(f"{'':<14}" + "".join(f"{c:>14}" for c in columns))
        for key in rows[columns[0]]:
            if key == "path":
                continue
            cells = []
            for c in columns:
                v = rows[c][key]
                cells.append(f"{v:>14.4g}" if isinstance(v, float) else f"{v:>14}")
            print(f"{key:<14}" + "".join(cells))
        print(f"fp32, Core AI runtime vs executor: {agreement}")
        if args.digits:
            print("digits MOAT, fp32, every test image:", figures["digits"])
    if args.keep is None:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

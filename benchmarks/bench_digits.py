"""Chapter 9 end to end: train the digits MOAT, export it, compress it, score every variant.

    python benchmarks/bench_digits.py            # a table
    python benchmarks/bench_digits.py --json     # the same figures as JSON
    python benchmarks/bench_digits.py --cache    # reuse cached weights (train seconds: cached)

Prints the training time (a fresh training unless ``--cache``), the PyTorch test accuracy, and for
each package (fp16; int8 weights per channel; 6-bit palettization per tensor; 4-bit
palettization per group of 16 channels; W8A8 calibrated on 64 training images): package and
weight bytes, test accuracy, top-1 agreement with the fp16 package and with PyTorch (fp32), the
PSNR of the logits against PyTorch, and the reference executor's milliseconds per image. Every
test image is run through every package one at a time (``--images`` takes the first N instead).
Times are this machine's, with whatever else it is running.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ane_lib.coreml import (
    compress,
    export,
    package_bytes,
    run_dataset,
    score_logits,
    weight_bytes,
)
from ane_lib.data import load_digits_split
from ane_lib.models import to_ane
from ane_lib.training import TrainSettings, accuracy, predict, train_digits_moat

#: The compressed variants of chapter 9: ``compress`` arguments by name.
VARIANTS: dict[str, dict[str, Any]] = {
    "int8": {"method": "linear", "nbits": 8},
    "palettize6": {"method": "palettize", "nbits": 6},
    "palettize4": {
        "method": "palettize",
        "nbits": 4,
        "granularity": "per_grouped_channel",
        "group_size": 16,
    },
}
CALIBRATION_IMAGES = 64


def measure(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Train, export, compress and score; the figures as a JSON-able dict."""
    data = load_digits_split()
    settings = TrainSettings(epochs=args.epochs, seed=args.seed)
    start = time.perf_counter()
    result = train_digits_moat(settings, data=data, cache=args.cache, progress=args.progress)
    wall = time.perf_counter() - start
    x_test, y_test = data.x_test[: args.images], data.y_test[: args.images]
    reference = predict(result.model, x_test)
    out: dict[str, Any] = {
        "torch": torch.__version__,
        "epochs": settings.epochs,
        "seed": settings.seed,
        "train_seconds": round(result.seconds, 2),
        "train_from_cache": result.from_cache,
        "train_call_seconds": round(wall, 2),
        "torch_test_accuracy": accuracy(result.model, data.x_test, data.y_test),
        "test_images": len(y_test),
        "variants": {},
    }
    start = time.perf_counter()
    fp16 = export(
        to_ane(result.model), (1, 3, 32, 32), folder / "fp16.mlpackage", deployment_target="iOS18"
    )
    out["export_seconds"] = round(time.perf_counter() - start, 2)
    packages = {"fp16": fp16}
    for name, options in VARIANTS.items():
        packages[name] = compress(fp16, folder / f"{name}.mlpackage", **options)
    if args.w8a8:
        calibration = [{"image": x[None].numpy()} for x in data.x_train[:CALIBRATION_IMAGES]]
        packages["w8a8"] = compress(
            fp16, folder / "w8a8.mlpackage", activations="int8", calibration=calibration
        )
    fp16_logits = None
    for name, path in packages.items():
        start = time.perf_counter()
        logits = run_dataset(path, x_test)
        per_image = (time.perf_counter() - start) / len(y_test)
        if fp16_logits is None:
            fp16_logits = logits
        vs_torch = score_logits(logits, y_test, reference)
        out["variants"][name] = {
            "package_bytes": package_bytes(path),
            "weight_bytes": weight_bytes(path),
            "accuracy": vs_torch.accuracy,
            "agreement_fp16": score_logits(logits, y_test, fp16_logits).agreement,
            "agreement_torch": vs_torch.agreement,
            "psnr_db_vs_torch": round(vs_torch.psnr_db, 2),
            "executor_ms_per_image": round(1000 * per_image, 2),
        }
    return out


def print_table(figures: dict[str, Any]) -> None:
    cached = " (cached)" if figures["train_from_cache"] else ""
    print(
        f"trained {figures['epochs']} epochs in {figures['train_seconds']:.1f} s{cached}; "
        f"PyTorch test accuracy {figures['torch_test_accuracy']:.2%}; "
        f"export {figures['export_seconds']:.1f} s; {figures['test_images']} test images"
    )
    header = ("variant", "package KiB", "weights KiB", "acc", "=fp16", "=torch", "PSNR dB", "ms")
    print("".join(f"{h:>12}" for h in header))
    for name, v in figures["variants"].items():
        cells = (
            name,
            f"{v['package_bytes'] / 1024:.0f}",
            f"{v['weight_bytes'] / 1024:.0f}",
            f"{v['accuracy']:.1%}",
            f"{v['agreement_fp16']:.1%}",
            f"{v['agreement_torch']:.1%}",
            f"{v['psnr_db_vs_torch']:.1f}",
            f"{v['executor_ms_per_image']:.1f}",
        )
        print("".join(f"{c:>12}" for c in cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--epochs", type=int, default=TrainSettings().epochs)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", action="store_true", help="reuse cached trained weights")
    parser.add_argument("--images", type=int, default=None, help="first N test images only")
    parser.add_argument("--no-w8a8", dest="w8a8", action="store_false", help="skip W8A8")
    args = parser.parse_args(argv)
    if args.images is not None and args.images < 1:
        parser.error(f"--images must be >= 1, got {args.images}")
    args.progress = not args.json and sys.stderr.isatty()
    with tempfile.TemporaryDirectory(prefix="bench_digits_") as folder:
        figures = measure(args, Path(folder))
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print_table(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

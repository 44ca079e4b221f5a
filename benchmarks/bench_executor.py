"""The reference executor's speed beside PyTorch's eager forward of the same model, in one run.

    python benchmarks/bench_executor.py            # tiny_moat_1, ANE form, 256, LePE, local 8x8
    python benchmarks/bench_executor.py --json --repeats 10

The model is exported twice with ``ane_lib.coreml.export`` (an fp16 package, as deployed, and an
fp32 one) into a temporary folder. Timed, taking turns call by call so that a change in the
machine's load hits all of them alike: PyTorch's eager fp32 forward (``torch.no_grad()``), the
executor on the fp16 package in its Neural Engine mode (every value fp16), and the executor on
the fp32 package in its fp32 reference mode. Printed: the median milliseconds of each and the
ratios to PyTorch; the target (issue 12) is the fp16 executor within 5x of PyTorch.
The executor's figures include what ``run`` does per call (input checks, rounding, the overflow
check); loading the package is done once, outside the timing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _timing import time_calls

from ane_lib.coreml import export, load_program, run
from ane_lib.models import create_model, to_ane


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny_moat_1")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--pe", default="lepe")
    parser.add_argument("--attention", default="local", choices=["global", "local"])
    parser.add_argument("--window", type=int, default=8, help="ignored for global attention")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = to_ane(
        create_model(
            args.model,
            pe=args.pe,
            attention=args.attention,
            window=args.window if args.attention == "local" else None,
            image_size=args.image_size,
        )
    ).eval()
    shape = (1, 3, args.image_size, args.image_size)
    x = torch.randn(*shape)
    feed = {"image": x.numpy()}
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp16 = load_program(export(model, shape, Path(folder) / "fp16.mlpackage"))
        fp32 = load_program(export(model, shape, Path(folder) / "fp32.mlpackage", precision="fp32"))

    def torch_forward() -> Any:
        with torch.no_grad():
            return model(x)

    calls = {
        "torch_eager_fp32": torch_forward,
        "executor_fp16": lambda: run(fp16, feed, "neural_engine_fp16"),
        "executor_fp32": lambda: run(fp32, feed, "fp32_reference"),
    }
    times = time_calls(calls, warmup=args.warmup, repeats=args.repeats)
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    with torch.no_grad():
        ref = model(x).numpy()
    (got16,) = run(fp16, feed, "neural_engine_fp16").values()
    (got32,) = run(fp32, feed, "fp32_reference").values()
    scale = float(np.abs(ref).max())
    figures = {
        "model": args.model,
        "image_size": args.image_size,
        "pe": args.pe,
        "attention": args.attention,
        "window": args.window if args.attention == "local" else None,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "ms": ms,
        "ms_min": {name: 1000 * min(t) for name, t in times.items()},
        "ratio_fp16_to_torch": ms["executor_fp16"] / ms["torch_eager_fp32"],
        "ratio_fp32_to_torch": ms["executor_fp32"] / ms["torch_eager_fp32"],
        "max_rel_error_fp16": float(np.abs(got16.astype(np.float64) - ref).max()) / scale,
        "max_rel_error_fp32": float(np.abs(got32.astype(np.float64) - ref).max()) / scale,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(
        f"{args.model} @ {args.image_size}, ANE form, pe={args.pe}, attention={args.attention}"
        + (f" ({args.window}x{args.window})" if args.attention == "local" else "")
        + f"; torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"median of {args.repeats}"
    )
    for name in calls:
        print(f"{name:<18}{ms[name]:9.1f} ms")
    print(f"executor fp16 / torch: {figures['ratio_fp16_to_torch']:.2f}x (target: at most 5x)")
    print(f"executor fp32 / torch: {figures['ratio_fp32_to_torch']:.2f}x")
    print(
        f"max relative error vs torch: fp16 {figures['max_rel_error_fp16']:.1e}, "
        f"fp32 {figures['max_rel_error_fp32']:.1e}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

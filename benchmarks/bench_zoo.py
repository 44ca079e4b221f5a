"""The zoo table: Hugging Face models exported, reported and verified, one row each.

    .venv/bin/python benchmarks/bench_zoo.py [--tiny] [--models a,b,...] [--task image|text]
        [--samples 4] [--json] [--keep DIR]

Every model of :data:`ane_lib.zoo.ZOO` (vision classifiers at their usual input size, text
encoders at 128 tokens; ``--tiny`` for the small variants the tests and the book use) is built
from its configuration with random weights (nothing downloaded), exported to an fp16 ML program,
checked by the report and run by ane_lib's executor in fp16 against PyTorch fp32 on ``--samples``
random inputs. A model that fails is a row too, with the stage and the message a user would see.

Printed: the table (Markdown), then a summary: how many export, how many verify at the zoo's
target (PSNR >= 60 dB and full top-1 agreement), how many packages lose no more in fp16 than
PyTorch's own fp16 forward of the same weights (within 1 dB), and the reasons of the others.
``--json`` prints ``{"rows": [...], "summary": {...}}`` instead. Times are wall-clock seconds
on this machine (a busy machine inflates them); the full zoo took about 40 minutes on a busy
2-core machine.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from ane_lib.zoo import TASKS, zoo_names
from ane_lib.zoo.table import TARGET_PSNR_DB, ZooRow, rows_markdown, zoo_table


def _below_target(row: ZooRow) -> str:
    if row.psnr_db is None or row.top1 is None:
        return row.reason
    reference = (
        f"{row.torch_fp16_psnr_db:.1f} dB"
        if row.torch_fp16_psnr_db is not None
        else f"not run ({(row.torch_fp16_error or '').splitlines()[0][:60]})"
    )
    return (
        f"PSNR {row.psnr_db:.1f} dB, top-1 {row.top1:.0%}; PyTorch's own fp16 forward: {reference}"
    )


def summary(rows: list[ZooRow], seconds: float) -> dict[str, Any]:
    """Counts and reasons; the target is :data:`TARGET_PSNR_DB` with full top-1 agreement.

    ``at_least_torch_fp16``: verified models whose package, run in fp16, is within 1 dB of
    PyTorch's own fp16 forward or better (the package loses nothing that fp16 itself does not).
    """
    exported = [r for r in rows if r.exported]
    verified = [r for r in rows if r.verified]
    measured = [r for r in exported if r.psnr_db is not None and math.isfinite(r.psnr_db)]
    psnrs = sorted(r.psnr_db for r in measured if r.psnr_db is not None)
    as_good = [
        r
        for r in measured
        if r.torch_fp16_psnr_db is not None
        and r.psnr_db is not None
        and r.psnr_db >= r.torch_fp16_psnr_db - 1.0
    ]
    from ane_lib.coreml.executor import SUPPORTED_OPS

    op_types = sorted({t for r in exported for t in r.op_types})
    return {
        "models": len(rows),
        "exported": len(exported),
        "verified_at_target": len(verified),
        "target": f"PSNR >= {TARGET_PSNR_DB:g} dB and top-1 agreement 100%",
        "median_psnr_db": psnrs[len(psnrs) // 2] if psnrs else None,
        "at_least_torch_fp16": len(as_good),
        "with_torch_fp16": sum(r.torch_fp16_psnr_db is not None for r in measured),
        "op_types": op_types,
        "op_types_the_executor_lacks": [t for t in op_types if t not in SUPPORTED_OPS],
        "not_exported": {r.name: r.reason for r in rows if not r.exported},
        "below_target": {r.name: _below_target(r) for r in exported if not r.verified},
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny variants")
    parser.add_argument("--models", help="comma-separated zoo names (default: all)")
    parser.add_argument("--task", choices=TASKS, help="only image or only text models")
    parser.add_argument("--samples", type=int, default=4, help="random inputs per model (4)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--keep", type=Path, help="keep the packages in this folder")
    args = parser.parse_args(argv)
    names = args.models.split(",") if args.models else zoo_names(args.task)
    unknown = sorted(set(names) - set(zoo_names()))
    if unknown:
        parser.error(f"unknown models {unknown}; the zoo has {zoo_names()}")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)

    def progress(row: ZooRow) -> None:
        status = "ok" if row.verified else (row.reason or f"PSNR {row.psnr_db:.1f} dB")
        print(f"[bench_zoo] {row.name}: {status}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = zoo_table(
            names,
            tiny=args.tiny,
            samples=args.samples,
            workdir=args.keep,
            keep=args.keep is not None,
            progress=progress,
        )
    facts = summary(rows, time.perf_counter() - start)
    if args.json:
        print(json.dumps({"rows": [r.to_dict() for r in rows], "summary": facts}, indent=2))
        return 0
    print(rows_markdown(rows))
    print()
    median = facts["median_psnr_db"]
    print(
        f"{facts['exported']}/{facts['models']} export; {facts['verified_at_target']}/"
        f"{facts['models']} verify at {facts['target']}; median PSNR "
        f"{'-' if median is None else f'{median:.1f}'} dB; {facts['seconds']:.0f} s"
    )
    print(
        f"{facts['at_least_torch_fp16']}/{facts['with_torch_fp16']} packages within 1 dB of "
        "PyTorch's own fp16 forward or better"
    )
    lacking = facts["op_types_the_executor_lacks"]
    print(
        f"{len(facts['op_types'])} MIL op types in the packages; the executor lacks "
        f"{', '.join(lacking) if lacking else 'none of them'}"
    )
    for name, why in {**facts["not_exported"], **facts["below_target"]}.items():
        print(f"  {name}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

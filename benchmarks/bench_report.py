"""How long the ANE report takes on the ANE-form tiny-MOAT-1 (target: under 5 s).

    .venv/bin/python benchmarks/bench_report.py [--image-size 256] [--repeat 5]
                                                [--package PKG] [--keep DIR] [--json]

Exports the model (seed 0, ``pe="lepe"``, local 8x8 windows) unless ``--package`` names one
already exported, then times ``ane_lib.coreml.report`` on the saved package ``--repeat`` times
and prints the median of each step: reading the package back (``load_program``), describing
its program for the rules (``function_graph``), applying the rule table (``analyse``) and
formatting the text. coremltools' one-off import is timed apart: a command-line run pays it,
a notebook pays it once. It also prints what the report found (ops, module coverage, padded /
real bytes, rules that fire), so a change that speeds it up by skipping work shows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs (median printed)")
    parser.add_argument("--package", type=Path, help="an exported package to report on")
    parser.add_argument("--keep", type=Path, help="folder to keep the exported package in")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    warnings.simplefilter("ignore", FutureWarning)

    start = time.perf_counter()
    from ane_lib.coreml.program import import_coremltools

    import_coremltools()
    import_seconds = time.perf_counter() - start

    import torch

    from ane_lib.ane_rules import analyse
    from ane_lib.coreml import export, load_program
    from ane_lib.coreml.mil_graph import function_graph
    from ane_lib.coreml.module_record import read_record
    from ane_lib.coreml.report import report
    from ane_lib.models import create_model

    package = args.package
    if package is None:
        folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_report."))
        folder.mkdir(parents=True, exist_ok=True)
        package = folder / f"tiny_moat_1_ane_{args.image_size}.mlpackage"
        torch.manual_seed(0)
        model = create_model(
            "tiny_moat_1",
            form="ane",
            pe="lepe",
            attention="local",
            window=8,
            image_size=args.image_size,
        ).eval()
        print(f"exporting {package.name} ...", file=sys.stderr, flush=True)
        export(model, (1, 3, args.image_size, args.image_size), package, overwrite=True)

    steps: dict[str, list[float]] = {k: [] for k in ("load", "describe", "analyse", "format")}
    totals: list[float] = []
    for _ in range(args.repeat):
        program, t_load = _timed(load_program, package)
        graph, t_describe = _timed(
            function_graph, program.functions["main"], module_paths=read_record(package)
        )
        rep, t_analyse = _timed(analyse, graph)
        _, t_format = _timed(str, rep)
        for key, value in zip(steps, (t_load, t_describe, t_analyse, t_format), strict=True):
            steps[key].append(value)
        _, total = _timed(lambda: str(report(package)))
        totals.append(total)

    known, ops = rep.module_coverage
    figures = {
        "package": str(package),
        "coremltools_import_s": import_seconds,
        "report_s": statistics.median(totals),
        **{f"{k}_s": statistics.median(v) for k, v in steps.items()},
        "ops": ops,
        "ops_with_module": known,
        "padding_overhead": rep.padding_overhead,
        "padded_bytes": rep.activation_padded_bytes,
        "real_bytes": rep.activation_real_bytes,
        "layout_ops": rep.layout_ops,
        "last_axis_layout_ops": len(rep.last_axis_layout_ops),
        "rules_fired": [r.id for r in rep.fired()],
        "target_s": 5.0,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"ANE report on {package.name} (median of {args.repeat} runs)")
        print(f"  report(path) + str: {figures['report_s']:.2f} s (target < 5 s)")
        for key in steps:
            print(f"    {key:<9} {figures[f'{key}_s']:.3f} s")
        print(f"  coremltools import (once per process): {import_seconds:.2f} s")
        print(
            f"  {ops} ops, {known} with a module path; padded / real "
            f"{rep.padding_overhead:.4f}; layout ops {rep.layout_ops} "
            f"({len(rep.last_axis_layout_ops)} rewrite the last axis)"
        )
        print(f"  rules that fire: {', '.join(figures['rules_fired']) or 'none'}")
    if args.package is None and args.keep is None:
        import shutil

        shutil.rmtree(package.parent, ignore_errors=True)
    return 0 if figures["report_s"] < figures["target_s"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Export tiny-MOAT-1 in both forms and compare what Core ML gets.

    .venv/bin/python benchmarks/bench_export.py [--image-size 256] [--window 8] [--pe lepe]
                                                [--samples 1] [--keep DIR]

Both forms share one set of weights (the standard model, seed 0, converted with ``to_ane``), are
exported the same way (fp16 ML program, iOS17) and then measured the same way:

- export time (torch.export + coremltools conversion + save);
- the ANE report: largest tensor rank, layout ops (transpose + reshape), padded / real bytes of
  the activations under the 64-byte last-axis rule;
- the reference executor in fp32 on an fp32 export against PyTorch in fp32 (max error relative
  to max |logit|: the executor's own error, which proves it), and in fp16 on the fp16 package
  against PyTorch fp32 (PSNR in dB: the deployment error), on fixed-seed inputs.

Apple's published figures for its own ANE port, for comparison (ml-vision-transformers-ane):
export about 7.4 s, 126 transpose + reshape ops, padded / real 1.28.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from ane_lib.coreml import export, report, verify
from ane_lib.coreml.program import import_coremltools
from ane_lib.models import create_model, to_ane


def measure(model: torch.nn.Module, shape: tuple[int, ...], path: Path, samples: int) -> dict:
    t0 = time.perf_counter()
    export(model, shape, path, overwrite=True)
    seconds = time.perf_counter() - t0
    rep = report(path)
    layout = rep.layout_op_counts
    fp16 = verify(path, model, samples=samples, precision="fp16")
    path32 = path.with_name(path.stem + "_fp32.mlpackage")
    export(model, shape, path32, overwrite=True, precision="fp32")
    fp32 = verify(path32, model, samples=samples, precision="fp32")
    return {
        "export s": seconds,
        "ops": len(rep.ops),
        "max rank": rep.max_rank,
        "transpose": layout.get("transpose", 0),
        "reshape": layout.get("reshape", 0),
        "layout ops": rep.layout_ops,
        "padded/real": rep.padding_overhead,
        "fp32 max rel err": fp32.max_rel_error,
        "fp16 PSNR dB": fp16.psnr_db,
        "fp16 top-1": fp16.top1_agreement,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny_moat_1")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--pe", default="lepe")
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="folder to keep the packages in")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", FutureWarning)
    import_coremltools()  # its one-off import time is not part of either export

    torch.manual_seed(0)
    standard = create_model(
        args.model,
        form="standard",
        pe=args.pe,
        attention="local",
        window=args.window,
        image_size=args.image_size,
    ).eval()
    ane = to_ane(standard).eval()
    shape = (1, 3, args.image_size, args.image_size)
    with torch.no_grad():
        x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
        gap = float((standard(x) - ane(x)).abs().max())

    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_export."))
    folder.mkdir(parents=True, exist_ok=True)
    rows = {}
    for form, model in (("standard", standard), ("ane", ane)):
        print(f"exporting and measuring the {form} form ...", file=sys.stderr, flush=True)
        rows[form] = measure(model, shape, folder / f"{args.model}_{form}.mlpackage", args.samples)

    title = (
        f"{args.model}, {args.image_size}x{args.image_size}, local {args.window}x{args.window} "
        f"windows, {args.pe}; standard vs ANE form in PyTorch: max |diff| {gap:.2e}"
    )
    print(title)
    print(f"{'':<18}{'standard':>12}{'ane':>12}")
    for key in rows["ane"]:
        cells = []
        for form in ("standard", "ane"):
            v = rows[form][key]
            cells.append(f"{v:>12.4g}" if isinstance(v, float) else f"{v:>12}")
        print(f"{key:<18}{''.join(cells)}")
    print("Apple's port (reference): export ~7.4 s, 126 transpose+reshape, padded/real 1.28")
    if args.keep is None:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Forward latency of one model in the standard and the ANE form, on this machine's CPU.

    python benchmarks/bench_forward.py                      # tiny_moat_1, 256, LePE, local 8x8
    python benchmarks/bench_forward.py --pe rpe --attention global --repeats 50

Both forms hold the same weights (the ANE model is ``to_ane`` of the standard one) and are timed
in eval mode under ``torch.no_grad()``: a few warm-up calls, then the median (and the spread) of
repeated calls. The ANE form is laid out for the Neural Engine, not for a CPU, so its CPU time
says how much the layout costs where it does not pay off, not how fast it runs on an iPhone.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _timing import time_calls

from ane_lib.models import create_model, to_ane


def time_forwards(
    models: dict[str, torch.nn.Module], x: torch.Tensor, *, warmup: int, repeats: int
) -> dict[str, list[float]]:
    """Seconds per forward call ``model(x)`` of each model (eval mode, no gradients),
    ``repeats`` times after ``warmup``, the models taking turns (see ``time_calls``)."""
    for model in models.values():
        model.eval()
    calls = {name: (lambda m=model: m(x)) for name, model in models.items()}
    with torch.no_grad():
        return time_calls(calls, warmup=warmup, repeats=repeats)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny_moat_1")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--pe", default="lepe")
    parser.add_argument("--attention", default="local", choices=["global", "local"])
    parser.add_argument("--window", type=int, default=8, help="ignored for global attention")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    standard = create_model(
        args.model,
        pe=args.pe if args.model != "deit_tiny" else None,
        attention=args.attention,
        window=args.window if args.attention == "local" else None,
        image_size=args.image_size,
    ).eval()
    ane = to_ane(standard)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size)
    with torch.no_grad():
        gap = (ane(x) - standard(x)).abs().max().item()

    print(
        f"{args.model} @ {args.image_size}, pe={args.pe}, attention={args.attention}"
        + (f" (window {args.window})" if args.attention == "local" else "")
        + f", batch {args.batch}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    )
    print(f"max |ane - standard| on one input: {gap:.2e}")
    print(f"{'form':<10}{'median ms':>12}{'min ms':>10}{'max ms':>10}   ({args.repeats} runs)")
    runs = time_forwards(
        {"standard": standard, "ane": ane}, x, warmup=args.warmup, repeats=args.repeats
    )
    medians = {}
    for form, seconds in runs.items():
        ms = [1e3 * t for t in seconds]
        medians[form] = statistics.median(ms)
        print(f"{form:<10}{medians[form]:>12.1f}{min(ms):>10.1f}{max(ms):>10.1f}")
    print(f"ane / standard: {medians['ane'] / medians['standard']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

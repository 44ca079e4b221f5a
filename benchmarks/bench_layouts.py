"""Layout experiments on the ANE-form tiny-MOAT-1: can the padding of its small maps go lower?

    .venv/bin/python benchmarks/bench_layouts.py [--image-size 256] [--keep DIR] [--json]

At 256 pixels the maps of stages 3 and 4 are 16 and 8 pixels wide. Three ops still see them as
``(C, H, W)`` grids whose rows fill half or a quarter of a 64-byte row: MBConv's depthwise 3x3
convolution, LePE's depthwise 3x3 convolution on each 8x8 window, and the reshapes into those
grids. Each variant below replaces some of them in the real model (same weights; checked equal
to the unmodified model in float64), exports it, and prints what the report says: ops, layout
ops (and those that rewrite the last axis), activation bytes real and padded, and the rules
that fire.

- ``baseline``: the library's model as it is. Its MBConv applies the depthwise batch norm on
  the grid, *before* the reshape back to the flat layout, so that the converter folds it into
  the convolution ("bn-first", adopted from this benchmark).
- ``bn-after``: the placement the library had before: the batch norm *after* the reshape, on
  the flat ``(B, C, 1, H*W)`` tensor, where the converter's fold pass does not reach it (one op
  and one unpadded tensor more per flat block; the padding itself is the same).
- ``lepe-flat``: LePE's 3x3 depthwise convolution computed on the flat ``(B', C, 1, N)`` tokens
  without the grid: a 3x3 kernel on a row-major ``gh x gw`` grid reads the flat positions
  ``i + dy * gw + dx``; for each column ``dx`` of the kernel, that is a ``(1, 3)`` convolution
  with dilation ``gw``, and the taps that would wrap around a row edge are masked.
- ``dw-flat``: the same for MBConv's stride-1 depthwise convolutions in the flat stages.

Run it to reproduce the figures quoted in chapter 5; the chapter checks the byte arithmetic of
each variant itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def depthwise3x3_flat(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, grid: tuple[int, int]
) -> torch.Tensor:
    """A zero-padded 3x3 depthwise convolution of ``x: (B, C, 1, gh * gw)``, row-major tokens.

    ``weight: (C, 1, 3, 3)``. Three ``(1, 3)`` convolutions with dilation ``gw``, one per kernel
    column ``dx``; each reads ``i + dy * gw + dx`` and is masked where ``dx`` leaves the row.
    Returns ``(B, C, 1, gh * gw)``, equal to ``F.conv2d`` on the grid with ``padding=1``.
    """
    _, gw = grid
    n = x.shape[-1]
    out = None
    for dx in (-1, 0, 1):
        taps = weight[:, :, :, dx + 1].unsqueeze(2)  # (C, 1, 1, 3): rows dy = -1, 0, 1
        y = F.conv2d(x, taps, padding=(0, gw + 1), dilation=(1, gw), groups=x.shape[1])
        y = y[..., 1 + dx : 1 + dx + n]  # output i reads i + dy * gw + dx
        if dx:  # a constant mask (built in Python, so the exported graph holds no logic)
            keep = [1.0 if 0 <= i % gw + dx < gw else 0.0 for i in range(n)]
            y = y * torch.tensor(keep, dtype=x.dtype)
        out = y if out is None else out + y
    assert out is not None
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def _dw_flat(block: Any) -> None:
    """Make a stride-1 MBConvBlockANE with flat input and output skip the grid."""
    assert block.stride == 1 and block.in_flat and block.out_flat

    def depthwise(self: Any, r: torch.Tensor) -> torch.Tensor:
        r = depthwise3x3_flat(r, self.depthwise_conv.weight, None, self.input_size)
        return self.depthwise_norm(r)

    block._depthwise = types.MethodType(depthwise, block)


def _bn_after(block: Any) -> None:
    """MBConvBlockANE's depthwise step with its batch norm behind the reshape to flat (the
    library's placement before bn-first; a per-channel op commutes with the reshape)."""

    def depthwise(self: Any, r: torch.Tensor) -> torch.Tensor:
        r = self.depthwise_conv(self._grid(r, self.in_flat, self.input_size))
        return self.depthwise_norm(self._out_layout(r))

    block._depthwise = types.MethodType(depthwise, block)


def build(variant: str, image_size: int) -> nn.Module:
    from ane_lib.models import create_model
    from ane_lib.nn import MBConvBlockANE, MultiHeadAttentionANE

    torch.manual_seed(0)
    model = create_model(
        "tiny_moat_1", form="ane", pe="lepe", attention="local", window=8, image_size=image_size
    ).eval()
    for module in model.modules():
        lepe = isinstance(module, MultiHeadAttentionANE) and module.lepe is not None
        if variant == "lepe-flat" and lepe:
            _lepe_flat(module)
        if isinstance(module, MBConvBlockANE) and module.out_flat:
            if variant == "bn-after":
                _bn_after(module)
            if variant == "dw-flat" and module.stride == 1 and module.in_flat:
                _dw_flat(module)
    return model


def _lepe_flat(attention: nn.Module) -> None:
    """MultiHeadAttentionANE.forward with one line changed: LePE on the flat values."""

    def forward(self: Any, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[3]
        if self.ape is not None:
            x = self.ape(x)
        d = self.head_dim
        q = self.q_proj(x) * self.scale
        k = self.k_proj(x).permute(0, 3, 2, 1)
        v = self.v_proj(x)
        heads = []
        for q_h, k_h, v_h in zip(
            q.split(d, dim=1), k.split(d, dim=3), v.split(d, dim=1), strict=True
        ):
            weights = torch.einsum("bchq,bkhc->bkhq", q_h, k_h).softmax(dim=1)
            heads.append(torch.einsum("bkhq,bchk->bchq", weights, v_h))
        out = torch.cat(heads, dim=1)
        assert n == self.grid_size[0] * self.grid_size[1]
        out = out + depthwise3x3_flat(v, self.lepe.weight, self.lepe.bias, self.grid_size)
        return self.proj(out)

    assert attention.rpe is None and attention.lepe is not None
    attention.forward = types.MethodType(forward, attention)


def measure(variant: str, image_size: int, folder: Path) -> dict[str, Any]:
    from ane_lib.coreml import export, report

    model = build(variant, image_size)
    reference = build("baseline", image_size)
    x = torch.rand(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        gap = float((model.double()(x.double()) - reference.double()(x.double())).abs().max())
    model.float()
    path = folder / f"{variant}.mlpackage"
    start = time.perf_counter()
    export(model, (1, 3, image_size, image_size), path, overwrite=True)
    seconds = time.perf_counter() - start
    rep = report(path)
    return {
        "max |diff| vs baseline (float64)": gap,
        "export s": seconds,
        "ops": len(rep.ops),
        "layout ops": rep.layout_ops,
        "touch last axis": len(rep.last_axis_layout_ops),
        "real bytes": rep.activation_real_bytes,
        "padded bytes": rep.activation_padded_bytes,
        "real MiB": rep.activation_real_bytes / 2**20,
        "padded MiB": rep.activation_padded_bytes / 2**20,
        "lost MiB": (rep.activation_padded_bytes - rep.activation_real_bytes) / 2**20,
        "padded/real": rep.padding_overhead,
        "ok": rep.ok,
        "rules fired": [r.id for r in rep.fired()],
    }


VARIANTS = ("baseline", "bn-after", "lepe-flat", "dw-flat")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--keep", type=Path, help="folder to keep the packages in")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", FutureWarning)
    torch.set_num_threads(1)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_layouts."))
    folder.mkdir(parents=True, exist_ok=True)
    rows = {}
    for variant in args.variants:
        print(f"{variant} ...", file=sys.stderr, flush=True)
        rows[variant] = measure(variant, args.image_size, folder)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        keys = list(next(iter(rows.values())))
        print(f"tiny-MOAT-1, ANE form, {args.image_size}x{args.image_size}, local 8x8, LePE")
        print(f"{'':<34}" + "".join(f"{v:>12}" for v in rows))
        for key in keys[:-1]:
            cells = [rows[v][key] for v in rows]
            print(
                f"{key:<34}"
                + "".join(f"{c:>12.4g}" if isinstance(c, float) else f"{c!s:>12}" for c in cells)
            )
        for v, row in rows.items():
            print(f"rules that fire ({v}): {', '.join(row['rules fired'])}")
    if args.keep is None:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

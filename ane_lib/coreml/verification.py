"""Check a saved package against its PyTorch model: run both on the same inputs and compare.

Two comparisons answer two questions:

- is the executor right? Export with ``precision="fp32"`` and verify (the executor's default
  mode, ``"declared"``, then stores every value in fp32, as the package declares): only the
  executor's arithmetic differs from PyTorch (about 1e-6 relative).
- what does deployment cost? Export in fp16 (the default) and verify: the package declares
  fp16 throughout, so every value is stored in fp16, as on the Neural Engine
  (``mode="neural_engine_fp16"`` forces that for any package), against PyTorch in fp32.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ane_lib._checks import check_nonnegative_int, check_positive_int
from ane_lib.coreml.export import example_input
from ane_lib.coreml.program import package_io

__all__ = ["Verification", "psnr", "verify"]


def psnr(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Peak signal-to-noise ratio of ``candidate`` against ``reference``, in dB.

    ``20 log10(max|reference| / RMSE)``: about 6 dB per bit of agreement; ``inf`` when equal.
    Both arrays must have the same shape; they are compared in float64.
    """
    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(candidate, dtype=np.float64)
    if ref.shape != got.shape:
        raise ValueError(f"candidate must have the reference's shape {ref.shape}, got {got.shape}")
    rmse = float(np.sqrt(np.mean((ref - got) ** 2)))
    peak = float(np.max(np.abs(ref))) if ref.size else 0.0
    if rmse == 0.0:
        return math.inf
    ratio = peak / rmse
    if ratio == 0.0:  # a subnormal peak against a normal error: the quotient underflows
        return -math.inf
    return 20.0 * math.log10(ratio)


@dataclass(frozen=True)
class Verification:
    """How closely a package reproduces its PyTorch model on the same inputs.

    ``psnr_db`` over all outputs, ``max_abs_error``, ``max_rel_error`` (max abs error divided by
    ``max|reference|``), ``top1_agreement`` (fraction of samples whose arg-max over the last axis
    agrees), for ``samples`` inputs run in the executor's ``mode`` (see
    :func:`ane_lib.coreml.run`).
    """

    samples: int
    mode: str
    psnr_db: float
    max_abs_error: float
    max_rel_error: float
    top1_agreement: float

    @property
    def precision(self) -> str:
        """The mode under its earlier name: "fp16", "fp32" or "declared"."""
        aliases = {"neural_engine_fp16": "fp16", "fp32_reference": "fp32"}
        return aliases.get(self.mode, self.mode)

    def passed(self, min_psnr: float, min_top1: float = 1.0) -> bool:
        """True when the PSNR and the top-1 agreement both reach their thresholds."""
        return self.psnr_db >= min_psnr and self.top1_agreement >= min_top1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return (
            f"{self.samples} sample(s), executor ({self.mode}) vs PyTorch: "
            f"PSNR {self.psnr_db:.1f} dB, max abs error {self.max_abs_error:.3g}, "
            f"max rel error {self.max_rel_error:.3g}, top-1 agreement {self.top1_agreement:.0%}"
        )


def verify(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    samples: int = 2,
    seed: int = 0,
    mode: str | None = None,
    precision: str | None = None,
) -> Verification:
    """Run the package at ``path`` with the reference executor and ``model`` in PyTorch on the
    same ``samples`` inputs, and compare the outputs.

    Inputs are :func:`example_input` draws with seeds ``seed, seed + 1, ...`` of the package's
    declared input shape, e.g. ``image: (1, 3, 256, 256)``, rounded to the package's input type;
    the executor runs in ``mode`` (default ``"declared"``: each value in the type the package
    declares; ``precision`` is the earlier alias, see :func:`ane_lib.coreml.run`) and ``model``
    runs in its own dtype (fp32 by default).
    """
    from ane_lib.coreml.executor import resolve_mode, run
    from ane_lib.coreml.program import load_program

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_positive_int("samples", samples)
    check_nonnegative_int("seed", seed)
    mode = resolve_mode(mode, precision)
    info = package_io(path)
    if len(info.inputs) != 1 or len(info.outputs) != 1:
        raise ValueError(
            f"path {str(path)!r} must have one input and one output to be verified, has "
            f"{[t.name for t in info.inputs]} -> {[t.name for t in info.outputs]}"
        )
    source, target = info.inputs[0], info.outputs[0]
    program = load_program(path)
    reference = model
    was_training = reference.training
    reference.eval()
    refs, gots = [], []
    try:
        for i in range(samples):
            x = example_input(source.shape, seed + i)
            if source.dtype == "FLOAT16":  # both sides see the same input values
                x = x.to(torch.float16).to(x.dtype)
            with torch.no_grad():
                ref = reference(x)
            if not isinstance(ref, torch.Tensor):
                raise TypeError(f"model must return one tensor, got {type(ref).__name__}")
            got = run(program, {source.name: x.numpy()}, mode)[target.name]
            refs.append(ref.detach().double().numpy())
            gots.append(np.asarray(got, dtype=np.float64).reshape(ref.shape))
    finally:
        reference.train(was_training)
    ref_all, got_all = np.stack(refs), np.stack(gots)
    err = float(np.max(np.abs(ref_all - got_all)))
    peak = float(np.max(np.abs(ref_all)))
    top1 = float(np.mean(ref_all.argmax(-1) == got_all.argmax(-1)))
    return Verification(
        samples=samples,
        mode=mode,
        psnr_db=psnr(ref_all, got_all),
        max_abs_error=err,
        max_rel_error=err / peak if peak else math.inf,
        top1_agreement=top1,
    )

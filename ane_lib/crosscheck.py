"""Two stacks, one model: a Core ML package run by this project's executor and a Core AI program
run by Apple's runtime, on the same inputs.

No Core ML runtime exists off a Mac, so the Core ML packages this library writes are checked
on Linux by its own reference executor (:func:`ane_lib.coreml.run`). Apple's Core AI runtime
runs on Linux: exported from the same weights in fp32, the two programs compute the same
function by two independent implementations, and their agreement checks the executor (and
the converters) against Apple's own code. :func:`runtimes_agree` measures it.

This module sits above both stacks (beside the command line): it uses only their public names.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ane_lib.coreml.executor import Mode

__all__ = ["Agreement", "runtimes_agree"]


@dataclass(frozen=True)
class Agreement:
    """How closely Apple's runtime and the executor agree on ``samples`` inputs.

    ``max_abs_error``: largest ``|core_ai - executor|`` over every output value;
    ``max_rel_error``: that divided by the largest ``|executor|`` value; ``top1_same``: the
    number of samples whose arg-max over the last axis (of every output) is the same.
    """

    samples: int
    max_abs_error: float
    max_rel_error: float
    top1_same: int

    def __str__(self) -> str:
        return (
            f"{self.samples} sample(s), Core AI runtime vs executor: max abs error "
            f"{self.max_abs_error:.3g}, max rel error {self.max_rel_error:.3g}, same top-1 "
            f"{self.top1_same}/{self.samples}"
        )


def _arrays(sample: Any, names: list[str]) -> dict[str, np.ndarray]:
    if isinstance(sample, Mapping):
        items = dict(sample)
    else:
        if len(names) != 1:
            raise ValueError(f"inputs: give mappings name -> array for the inputs {names}")
        items = {names[0]: sample}
    return {
        n: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
        for n, v in items.items()
    }


def runtimes_agree(
    mlpackage: str | os.PathLike[str],
    aimodel: str | os.PathLike[str],
    inputs: Iterable[Any],
    *,
    mode: Mode = "declared",
) -> Agreement:
    """Run the Core ML package (executor, in ``mode``: by default each value in the type the
    package declares) and the Core AI program (Apple's runtime) on each of ``inputs`` and
    compare their outputs, matched by name.

    ``inputs``: an iterable of samples, each an array (one-input programs) or a mapping input
    name -> array; each is cast to what each program declares. Export both from the same model
    with ``precision="fp32"`` to compare the implementations rather than fp16 rounding.
    """
    from ane_lib.coreai import Session
    from ane_lib.coreml import load_program, run

    program = load_program(mlpackage)
    declared = {name: var.dtype for name, var in program.functions["main"].inputs.items()}
    worst_abs = peak = 0.0
    same = count = 0
    with Session(aimodel) as session:
        names = list(session.signature.inputs)
        if sorted(names) != sorted(declared):
            raise ValueError(
                f"the programs take different inputs: {sorted(names)} (Core AI) and "
                f"{sorted(declared)} (Core ML)"
            )
        for sample in inputs:
            arrays = _arrays(sample, names)
            ours = run(program, arrays, mode)
            apple = session(arrays)
            if set(ours) != set(apple):
                raise ValueError(
                    f"the programs return different outputs: {sorted(apple)} (Core AI) and "
                    f"{sorted(ours)} (Core ML)"
                )
            agree = True
            for name, theirs in apple.items():
                a = np.asarray(theirs, dtype=np.float64)
                b = np.asarray(ours[name], dtype=np.float64).reshape(a.shape)
                worst_abs = max(worst_abs, float(np.max(np.abs(a - b))) if a.size else 0.0)
                peak = max(peak, float(np.max(np.abs(b))) if b.size else 0.0)
                if a.ndim and a.shape[-1]:
                    agree &= bool(np.array_equal(a.argmax(-1), b.argmax(-1)))
            same += agree
            count += 1
    if count == 0:
        raise ValueError("inputs holds no sample; give at least one")
    return Agreement(
        samples=count,
        max_abs_error=worst_abs,
        max_rel_error=worst_abs / peak if peak else (0.0 if worst_abs == 0 else float("inf")),
        top1_same=same,
    )

"""Check a saved package against its PyTorch model: run both on the same inputs and compare.

The inputs are random samples of the package's declared inputs (drawn as ``export`` recorded
them: token ids in their range, a 0/1 mask, an image in ``[0, 1)``), or a data set the caller
passes. Every output of the package is compared with the model's output of the same name
(:func:`~ane_lib.coreml.signature.flatten_outputs`), and the figures are given per output and
for the worst output.

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ane_lib._checks import check_nonnegative_int, check_positive_int
from ane_lib.coreml.precision import Precision
from ane_lib.coreml.program import PackageInfo, package_io
from ane_lib.coreml.signature import (
    TensorSpec,
    flatten_outputs,
    package_arrays,
    sample_inputs,
)

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

    ``psnr_db``, ``max_abs_error``, ``max_rel_error`` (max abs error divided by
    ``max|reference|``) and ``top1_agreement`` (fraction of rows, i.e. positions of all but
    the last axis, whose arg-max over the last axis agrees), for ``samples`` inputs run in the
    executor's ``mode`` (see :func:`ane_lib.coreml.run`). With several outputs, ``outputs``
    holds these figures per output name and the top-level figures are the worst of them
    (lowest PSNR and agreement, largest errors).
    """

    samples: int
    mode: str
    psnr_db: float
    max_abs_error: float
    max_rel_error: float
    top1_agreement: float
    outputs: dict[str, Verification] = field(default_factory=dict)

    @property
    def precision(self) -> str:
        """The mode under its earlier name: "fp16", "fp32" or "declared"."""
        aliases = {"neural_engine_fp16": "fp16", "fp32_reference": "fp32"}
        return aliases.get(self.mode, self.mode)

    def passed(self, min_psnr: float, min_top1: float = 1.0) -> bool:
        """True when the PSNR and the top-1 agreement both reach their thresholds."""
        return self.psnr_db >= min_psnr and self.top1_agreement >= min_top1

    def to_dict(self) -> dict[str, Any]:
        figures = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        figures["outputs"] = {name: v.to_dict() for name, v in self.outputs.items()}
        return figures

    def _line(self) -> str:
        return (
            f"PSNR {self.psnr_db:.1f} dB, max abs error {self.max_abs_error:.3g}, "
            f"max rel error {self.max_rel_error:.3g}, top-1 agreement {self.top1_agreement:.0%}"
        )

    def __str__(self) -> str:
        text = f"{self.samples} sample(s), executor ({self.mode}) vs PyTorch: {self._line()}"
        if len(self.outputs) > 1:
            text += "".join(f"\n  {name}: {v._line()}" for name, v in self.outputs.items())
        return text


def _measure(
    refs: list[np.ndarray], gots: list[np.ndarray], samples: int, mode: str
) -> Verification:
    ref_all, got_all = np.stack(refs), np.stack(gots)
    err = float(np.max(np.abs(ref_all - got_all))) if ref_all.size else 0.0
    peak = float(np.max(np.abs(ref_all))) if ref_all.size else 0.0
    if ref_all.ndim > 1 and ref_all.shape[-1] > 0:
        top1 = float(np.mean(ref_all.argmax(-1) == got_all.argmax(-1)))
    else:
        top1 = 1.0
    return Verification(
        samples=samples,
        mode=mode,
        psnr_db=psnr(ref_all, got_all),
        max_abs_error=err,
        max_rel_error=err / peak if peak else (0.0 if err == 0 else math.inf),
        top1_agreement=top1,
    )


def _recorded_specs(info: PackageInfo) -> dict[str, TensorSpec]:
    """The package's inputs as ``export`` recorded them, else from its declared types."""
    from ane_lib.coreml.export import read_export_metadata

    recorded = read_export_metadata(info.path).get("inputs")
    if isinstance(recorded, list) and [r.get("name") for r in recorded] == [
        t.name for t in info.inputs
    ]:
        return {r["name"]: TensorSpec.from_dict(r) for r in recorded}
    specs = {}
    for t in info.inputs:
        if t.dtype not in ("FLOAT32", "FLOAT16"):
            raise ValueError(
                f"input {t.name!r} of {str(info.path)!r} is {t.dtype} and the package records "
                "no value range for it (it was not exported by ane_lib); pass inputs=[...]"
            )
        specs[t.name] = TensorSpec(
            t.shape, torch.float16 if t.dtype == "FLOAT16" else torch.float32
        )
    return specs


def _as_mapping(
    sample: Any, specs: Mapping[str, TensorSpec], index: int
) -> dict[str, torch.Tensor]:
    """One sample of ``inputs=`` as name -> tensor in the model's dtype, checked."""
    names = list(specs)
    if isinstance(sample, (torch.Tensor, np.ndarray)):
        if len(names) != 1:
            raise ValueError(
                f"inputs[{index}] is one tensor, but the package has {len(names)} inputs "
                f"{names}: give a mapping name -> tensor"
            )
        sample = {names[0]: sample}
    if not isinstance(sample, Mapping):
        raise TypeError(
            f"inputs[{index}] must be a tensor or a mapping from input name to tensor, got "
            f"{type(sample).__name__}"
        )
    if set(sample) != set(names):
        raise ValueError(f"inputs[{index}] has inputs {sorted(sample)}, the package takes {names}")
    out = {}
    for name, spec in specs.items():
        value = torch.as_tensor(sample[name])
        if tuple(value.shape) != spec.shape:
            raise ValueError(
                f"inputs[{index}][{name!r}] has shape {tuple(value.shape)}, the package takes "
                f"{spec.shape}"
            )
        out[name] = value.to(spec.dtype)
    return out


def verify(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    samples: int | None = None,
    seed: int = 0,
    mode: str | None = None,
    precision: Precision | None = None,
    inputs: Iterable[torch.Tensor | Mapping[str, torch.Tensor]] | None = None,
) -> Verification:
    """Run the package at ``path`` with the reference executor and ``model`` in PyTorch on the
    same inputs, and compare every output.

    Args:
        path: a saved ``.mlpackage``, e.g. from :func:`ane_lib.coreml.export`.
        model: the PyTorch model; called as ``model(x)`` for a one-input package, else as
            ``model(**inputs)``. It runs in its own dtype (fp32 by default), in eval mode.
        samples: number of random inputs (default 2); not with ``inputs``.
        seed: random inputs use seeds ``seed, seed + 1, ...``: each draws every input as
            ``export`` recorded it (e.g. an image ``(1, 3, 256, 256)`` in ``[0, 1)``, as
            :func:`~ane_lib.coreml.example_input`; token ids in ``[0, vocab)``).
        mode: how the executor stores values (default ``"declared"``: each in the type the
            package declares; see :func:`ane_lib.coreml.run`).
        precision: the earlier alias: ``"fp16"`` is ``mode="neural_engine_fp16"``,
            ``"fp32"`` is ``mode="fp32_reference"``.
        inputs: a data set instead of random inputs: an iterable of samples, each a tensor
            (one-input package) or a mapping input name -> tensor of the declared shape.

    Float inputs that the package takes in fp16 are rounded to fp16 for both sides. Returns a
    :class:`Verification` with figures per output and for the worst output.
    """
    from ane_lib.coreml.executor import resolve_mode, run
    from ane_lib.coreml.program import load_program

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if inputs is not None and samples is not None:
        raise ValueError("give either samples (random inputs) or inputs (a data set), not both")
    n_random = 2 if samples is None else check_positive_int("samples", samples)
    check_nonnegative_int("seed", seed)
    mode = resolve_mode(mode, precision)
    info = package_io(path)
    specs = _recorded_specs(info)
    single = len(specs) == 1
    wanted = [t.name for t in info.outputs]
    if inputs is None:
        data: Iterable[Any] = (sample_inputs(specs, seed + i) for i in range(n_random))
    elif isinstance(inputs, (torch.Tensor, np.ndarray, Mapping)):
        raise TypeError(
            "inputs must be an iterable of samples (e.g. a list of tensors or of mappings), "
            f"got one {type(inputs).__name__}; wrap a single sample in a list"
        )
    else:
        data = inputs
    declared = {t.name: t.dtype for t in info.inputs}
    program = load_program(path)
    was_training = model.training
    model.eval()
    refs: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
    gots: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
    count = 0
    try:
        for index, raw in enumerate(data):
            sample = _as_mapping(raw, specs, index)
            for name, value in sample.items():  # both sides see the same input values
                if declared[name] == "FLOAT16" and value.is_floating_point():
                    sample[name] = value.to(torch.float16).to(value.dtype)
            with torch.no_grad():
                output = model(next(iter(sample.values()))) if single else model(**sample)
            named = flatten_outputs(output, wanted[0] if len(wanted) == 1 else "logits")
            if list(named) != wanted:
                if len(named) != len(wanted):
                    raise ValueError(
                        f"model returns outputs {list(named)} but {str(path)!r} has {wanted}"
                    )
                named = dict(zip(wanted, named.values(), strict=True))  # renamed at export
            got = run(program, package_arrays(sample, specs), mode)
            for name, ref in named.items():
                refs[name].append(ref.detach().double().cpu().numpy())
                gots[name].append(np.asarray(got[name], dtype=np.float64).reshape(ref.shape))
            count += 1
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("inputs holds no sample; give at least one")
    per_output = {name: _measure(refs[name], gots[name], count, mode) for name in wanted}
    worst = Verification(
        samples=count,
        mode=mode,
        psnr_db=min(v.psnr_db for v in per_output.values()),
        max_abs_error=max(v.max_abs_error for v in per_output.values()),
        max_rel_error=max(v.max_rel_error for v in per_output.values()),
        top1_agreement=min(v.top1_agreement for v in per_output.values()),
        outputs=per_output if len(per_output) > 1 else {},
    )
    return worst

"""How closely an exported model reproduces its PyTorch model: the measures and the comparison.

Backend-neutral: :func:`ane_lib.coreml.verify` (a Core ML package run by this project's
executor) and :func:`ane_lib.coreai.verify` (a Core AI program run by Apple's runtime) both
draw the same inputs, call the model and the exported program on them and measure the
difference here, so their figures mean the same thing.

- :func:`psnr`: peak signal-to-noise ratio, the book's headline measure;
- :class:`Verification`: PSNR, maximum absolute and relative errors and top-1 agreement, per
  output and for the worst output;
- :func:`compare`: run a model and an exported program (any callable from named arrays to named
  arrays) on random samples of their inputs or on a data set, and measure every output.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ane_lib._checks import check_nonnegative_int, check_positive_int
from ane_lib.signature import TensorSpec, flatten_outputs, package_arrays, sample_inputs

__all__ = ["Verification", "check_verify_arguments", "compare", "psnr", "recorded_specs"]


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
    """How closely an exported model reproduces its PyTorch model on the same inputs.

    ``psnr_db``, ``max_abs_error``, ``max_rel_error`` (max abs error divided by
    ``max|reference|``) and ``top1_agreement`` (fraction of rows, i.e. positions of all but
    the last axis, whose arg-max over the last axis agrees), for ``samples`` inputs run by
    ``engine`` (this project's ``"executor"``, or Apple's ``"Core AI runtime"``) in ``mode``
    (the executor's, see :func:`ane_lib.coreml.run`; for Core AI the program's precision).
    With several outputs, ``outputs`` holds these figures per output name and the top-level
    figures are the worst of them (lowest PSNR and agreement, largest errors).
    """

    samples: int
    mode: str
    psnr_db: float
    max_abs_error: float
    max_rel_error: float
    top1_agreement: float
    outputs: dict[str, Verification] = field(default_factory=dict)
    engine: str = "executor"

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
        text = f"{self.samples} sample(s), {self.engine} ({self.mode}) vs PyTorch: {self._line()}"
        if len(self.outputs) > 1:
            text += "".join(f"\n  {name}: {v._line()}" for name, v in self.outputs.items())
        return text


def check_verify_arguments(
    model: nn.Module, samples: int | None, seed: int, inputs: object | None
) -> int:
    """The arguments both stacks' ``verify`` take, checked; returns the number of random
    samples (default 2). TypeError/ValueError name what was wrong."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if inputs is not None and samples is not None:
        raise ValueError("give either samples (random inputs) or inputs (a data set), not both")
    check_nonnegative_int("seed", seed)
    return 2 if samples is None else check_positive_int("samples", samples)


def recorded_specs(
    recorded: object,
    declared: Mapping[str, tuple[Sequence[int], torch.dtype | str]],
    *,
    source: str,
    noun: str = "package",
) -> dict[str, TensorSpec]:
    """The inputs to draw samples of: as ``export`` recorded them (``recorded``, the
    ``inputs`` entry of its metadata) when they name the declared inputs in order, else from
    the declared inputs, ``name -> (shape, dtype)``: a float ``torch.dtype`` gives random values
    in [0, 1); a type name (a ``str``: token ids, masks) has no value range to draw from, which
    is a ValueError naming the input of ``source`` (the program was not exported by ane_lib)."""
    if isinstance(recorded, list) and [
        r.get("name") if isinstance(r, dict) else None for r in recorded
    ] == list(declared):
        return {r["name"]: TensorSpec.from_dict(r) for r in recorded}
    specs = {}
    for name, (shape, dtype) in declared.items():
        if isinstance(dtype, str):
            raise ValueError(
                f"input {name!r} of {source} is {dtype} and the {noun} records no value range "
                "for it (it was not exported by ane_lib); pass inputs=[...]"
            )
        specs[name] = TensorSpec(tuple(shape), dtype)
    return specs


def _measure(
    refs: list[np.ndarray], gots: list[np.ndarray], samples: int, mode: str, engine: str
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
        engine=engine,
    )


def _as_mapping(
    sample: Any, specs: Mapping[str, TensorSpec], index: int, noun: str
) -> dict[str, torch.Tensor]:
    """One sample of ``inputs=`` as name -> tensor in the model's dtype, checked."""
    names = list(specs)
    if isinstance(sample, (torch.Tensor, np.ndarray)):
        if len(names) != 1:
            raise ValueError(
                f"inputs[{index}] is one tensor, but the {noun} has {len(names)} inputs "
                f"{names}: give a mapping name -> tensor"
            )
        sample = {names[0]: sample}
    if not isinstance(sample, Mapping):
        raise TypeError(
            f"inputs[{index}] must be a tensor or a mapping from input name to tensor, got "
            f"{type(sample).__name__}"
        )
    if set(sample) != set(names):
        raise ValueError(f"inputs[{index}] has inputs {sorted(sample)}, the {noun} takes {names}")
    out = {}
    for name, spec in specs.items():
        value = torch.as_tensor(sample[name])
        if tuple(value.shape) != spec.shape:
            raise ValueError(
                f"inputs[{index}][{name!r}] has shape {tuple(value.shape)}, the {noun} takes "
                f"{spec.shape}"
            )
        out[name] = value.to(spec.dtype)
    return out


def compare(
    model: nn.Module,
    program: Callable[[dict[str, np.ndarray]], Mapping[str, Any]],
    specs: Mapping[str, TensorSpec],
    outputs: Sequence[str],
    *,
    samples: int,
    seed: int,
    inputs: Iterable[Any] | None,
    fp16_inputs: Iterable[str],
    mode: str,
    engine: str,
    source: str,
    noun: str = "package",
) -> Verification:
    """Run ``model`` and ``program`` on the same inputs and measure every output.

    Args:
        model: the PyTorch model, called as ``model(x)`` with one input, else
            ``model(**inputs)``; in eval mode, without autograd, in its own dtype.
        program: the exported model: input name -> array in its dtype (from ``specs``) to
            output name -> array.
        specs: the program's inputs (names, shapes, dtypes, sample ranges).
        outputs: the program's output names, in the order the model returns its tensors.
        samples / seed: ``samples`` random inputs with seeds ``seed, seed + 1, ...`` (see
            :func:`~ane_lib.signature.sample_inputs`) when ``inputs`` is None.
        inputs: a data set instead: an iterable of tensors (one-input programs) or mappings
            input name -> tensor.
        fp16_inputs: inputs that the program takes in fp16; float values are rounded to fp16
            for both sides, so that both see the same input.
        mode / engine: recorded in the result (how the program was run, and by what).
        source / noun: how errors name the program (its path, and "package" or "program").
    """
    if inputs is None:
        data: Iterable[Any] = (sample_inputs(specs, seed + i) for i in range(samples))
    elif isinstance(inputs, (torch.Tensor, np.ndarray, Mapping)):
        raise TypeError(
            "inputs must be an iterable of samples (e.g. a list of tensors or of mappings), "
            f"got one {type(inputs).__name__}; wrap a single sample in a list"
        )
    else:
        data = inputs
    rounded = set(fp16_inputs)
    single = len(specs) == 1
    wanted = list(outputs)
    was_training = model.training
    model.eval()
    refs: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
    gots: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
    count = 0
    try:
        for index, raw in enumerate(data):
            sample = _as_mapping(raw, specs, index, noun)
            for name, value in sample.items():  # both sides see the same input values
                if name in rounded and value.is_floating_point():
                    sample[name] = value.to(torch.float16).to(value.dtype)
            with torch.no_grad():
                output = model(next(iter(sample.values()))) if single else model(**sample)
            named = flatten_outputs(output, wanted[0] if len(wanted) == 1 else "logits")
            if list(named) != wanted:
                if len(named) != len(wanted):
                    raise ValueError(
                        f"model returns outputs {list(named)} but {source} has {wanted}"
                    )
                named = dict(zip(wanted, named.values(), strict=True))  # renamed at export
            got = program(package_arrays(sample, specs))
            for name, ref in named.items():
                refs[name].append(ref.detach().double().cpu().numpy())
                gots[name].append(np.asarray(got[name], dtype=np.float64).reshape(ref.shape))
            count += 1
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("inputs holds no sample; give at least one")
    per_output = {name: _measure(refs[name], gots[name], count, mode, engine) for name in wanted}
    return Verification(
        samples=count,
        mode=mode,
        psnr_db=min(v.psnr_db for v in per_output.values()),
        max_abs_error=max(v.max_abs_error for v in per_output.values()),
        max_rel_error=max(v.max_rel_error for v in per_output.values()),
        top1_agreement=min(v.top1_agreement for v in per_output.values()),
        outputs=per_output if len(per_output) > 1 else {},
        engine=engine,
    )

"""Give an untrained model the unequal weights of a trained one, for exports that must look real.

A freshly built model is full of equal constants: every norm starts with a scale of exactly one
and a shift of exactly zero, every batch norm with a running mean of zeros and a running variance
of ones. Core ML's converter stores equal constants only once, so a package made from such a
model is not representative of a trained one: the weights are shared between unrelated layers,
and a tool that attributes an op to a layer by the name of the constant it reads (as
:meth:`ane_lib.coreml.report.Report.padding_by_stage` does) finds the name of whichever layer
happened to come first. :func:`perturb_weights_` is a stand-in for training: small random
changes after which no two constants are equal, while the model stays close to its initial
function.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ane_lib._checks import check_nonnegative_int

__all__ = ["perturb_weights_"]


def perturb_weights_(
    model: nn.Module, *, seed: int = 0, scale: float = 0.1, noise: float = 0.01
) -> nn.Module:
    """Multiply every float weight and buffer by a random factor and add noise, in place.

    Each value ``w`` of every floating-point parameter and persistent buffer (what
    ``model.state_dict()`` holds) becomes ``w * u + noise * n``, with ``u`` uniform in
    ``[1, 1 + scale)`` and ``n`` standard normal, drawn independently for every value. Batch-norm
    running variances (buffers named ``running_var``) are only multiplied, so they stay positive.
    Integer buffers (``num_batches_tracked``, index tables) and non-persistent buffers (derived
    constants, not weights) are left alone; a tensor shared between modules is changed once.

    Why: an untrained model is full of equal constants (norm scales of one, shifts of zero), and
    Core ML's converter stores equal constants once. A package made from it is then not
    representative, and attributing ops to layers by the names of their constants fails. After
    this call, no two float32 tensors are equal, and with probability close to one no two values
    of a small model either (in fp16 or bfloat16 the rounding makes equal values likely).

    The same ``seed`` on the same architecture gives the same weights. Standard and Neural Engine
    forms order their tensors differently, so perturb one form and convert it with
    :func:`~ane_lib.models.to_ane` / :func:`~ane_lib.models.to_standard` to get the same model
    in both.

    Args:
        model: any module; its tensors keep their dtype, device and ``requires_grad``.
        seed: seed of the random numbers (an int >= 0), drawn in float32 on the CPU.
        scale: width of the factor's range, ``>= 0`` (0: no scaling).
        noise: standard deviation of the added noise, ``>= 0`` (0: no noise).

    Returns:
        ``model`` itself, changed in place.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_nonnegative_int("seed", seed)
    scale = _check_nonnegative_float("scale", scale)
    noise = _check_nonnegative_float("noise", noise)

    generator = torch.Generator().manual_seed(seed)
    seen: set[int] = set()
    with torch.no_grad():
        # keep_vars: the Parameter objects themselves, so that tied weights are seen once
        for name, tensor in model.state_dict(keep_vars=True).items():
            if not tensor.is_floating_point() or id(tensor) in seen:
                continue
            seen.add(id(tensor))
            factor = 1 + scale * torch.rand(tensor.shape, generator=generator, dtype=torch.float32)
            tensor.mul_(factor.to(tensor.device, tensor.dtype))
            if name.rsplit(".", 1)[-1] == "running_var":
                continue  # a variance must stay positive: scale it, never shift it
            shift = noise * torch.randn(tensor.shape, generator=generator, dtype=torch.float32)
            tensor.add_(shift.to(tensor.device, tensor.dtype))
    return model


def _check_nonnegative_float(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite real number >= 0, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)

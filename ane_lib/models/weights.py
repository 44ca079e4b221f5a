"""Give an untrained model the unequal weights of a trained one, for exports that must look real.

Two stand-ins for training: :func:`perturb_weights_` (unequal constants, below) and
:func:`unit_variance_init_` (activations of unit scale, for fp16 measurements; its docstring
says why).

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
from typing import Any

import torch
from torch import nn

from ane_lib._checks import check_nonnegative_int

__all__ = ["perturb_weights_", "unit_variance_init_"]

#: Layer types :func:`unit_variance_init_` rescales: outputs linear in (weight, bias), so that
#: dividing both by s divides the output by s. A subclass that overrides ``forward`` (e.g. a
#: weight-standardised convolution) is left alone.
_LINEAR_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


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


def unit_variance_init_(model: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
    """Rescale every linear and convolution layer so that its output has unit standard
    deviation on the example inputs, in place (the variance-scaling step of LSUV).

    One forward pass ``model(*args, **kwargs)`` in eval mode and without autograd: when a
    ``nn.Linear`` or ``nn.Conv1d/2d/3d`` (whose ``forward`` is PyTorch's own) first runs, its
    output's standard deviation ``s`` is measured, its weight and bias are divided by ``s``,
    and the output is divided by ``s`` too, so the layers after it see what the rescaled model
    computes. A layer whose output is constant (``s == 0``) or not finite is left alone; a layer
    that runs again, or whose weight another layer shares, is rescaled once, at its first call.

    Why: a model built from a configuration with its library's initialisation is not a trained
    model. Hugging Face's initialisers draw convolution weights with a standard deviation of
    0.02 whatever their fan-in, so a deep network's activations shrink layer after layer:
    MobileNetV1's logits come out near 1e-29, below fp16's smallest subnormal (6e-8), and
    every fp16 measurement on it is meaningless. Re-estimating batch-norm statistics instead
    gives unit scales too, but divides each channel by its own, often tiny, deviation and
    amplifies the rounding of fp16 far beyond what trained weights do. One scale per layer,
    as LSUV (Mishkin and Matas, "All you need is a good init", ICLR 2016) does after its
    orthonormal start, keeps every activation near unit scale and the channels' relative sizes
    as the initialiser drew them.

    Args:
        model: any module; ``model(*args, **kwargs)`` must run.
        args, kwargs: example inputs, e.g. a batch of images ``(B, 3, H, W)`` in ``[0, 1)``.

    Returns:
        ``model`` itself, changed in place, in eval mode.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    done: set[int] = set()

    def rescale(module: nn.Module, _inputs: Any, output: Any) -> Any:
        # keyed on the weight: a module that runs again, or shares its weight, is done once
        if id(module.weight) in done or not isinstance(output, torch.Tensor):
            return None
        done.add(id(module.weight))
        s = float(output.float().std()) if output.numel() > 1 else 0.0
        if not math.isfinite(s) or s == 0.0:
            return None
        for tensor in (module.weight, getattr(module, "bias", None)):
            if isinstance(tensor, torch.Tensor):
                tensor.div_(s)
        return output / s

    hooks = [
        m.register_forward_hook(rescale)
        for m in model.modules()
        if isinstance(m, _LINEAR_LAYERS) and type(m).forward is _base_forward(m)
    ]
    model.eval()
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    return model


def _base_forward(module: nn.Module) -> Any:
    """The ``forward`` of the PyTorch layer class ``module`` derives from."""
    base = next(cls for cls in _LINEAR_LAYERS if isinstance(module, cls))
    return base.forward

"""Copying a source encoder's weights into the ANE form's modules, by module type.

The converters of :mod:`ane_lib.models.torch_transformer` and :mod:`ane_lib.models.hf_distilbert`
walk the source model's modules, check each one's type and settings, and copy its tensors into
the matching ANE module: a Linear weight ``(O, I)`` into a 1x1 convolution ``(O, I, 1, 1)``, an
``nn.LayerNorm`` into a :class:`~ane_lib.nn.LayerNormANE`. No state-dict key is matched by name.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

from ane_lib.functional.projection import linear_weight_to_conv1x1
from ane_lib.nn.encoder import SelfAttentionANE
from ane_lib.nn.norm import LayerNormANE

__all__ = [
    "Projection",
    "UnsupportedModuleError",
    "check_dropout",
    "check_layer_norm",
    "check_type",
    "copy_attention",
    "copy_layer_norm",
    "copy_projection",
    "layer_norm_like",
    "place_like",
]

ModuleT = TypeVar("ModuleT", bound=nn.Module)
#: A Linear's (weight ``(O, I)``, bias ``(O,)`` or None).
Projection = tuple[torch.Tensor, torch.Tensor | None]


class UnsupportedModuleError(TypeError):
    """A module of the source model has a type or setting the ANE conversion does not support."""


def _qualname(t: type) -> str:
    return f"{t.__module__}.{t.__qualname__}"


def check_type(module: object, path: str, expected: type | tuple[type, ...]) -> None:
    """Raise :class:`UnsupportedModuleError` unless ``type(module)`` is exactly ``expected``.

    Exact: a subclass may override ``forward`` with a computation the conversion would not
    reproduce, so it is refused rather than silently converted as its parent.
    """
    allowed = expected if isinstance(expected, tuple) else (expected,)
    if type(module) not in allowed:
        names = " or ".join(_qualname(t) for t in allowed)
        raise UnsupportedModuleError(
            f"module {path!r} is a {_qualname(type(module))}; the ANE conversion supports "
            f"{names} here (a subclass or a custom module may compute something else, so it is "
            "not converted)"
        )


def check_dropout(model: nn.Module, root: str) -> None:
    """Refuse a model in training mode whose dropouts are active: the ANE form has none."""
    if not model.training:
        return
    for name, module in model.named_modules():
        if isinstance(module, nn.Dropout) and module.p > 0:
            where = f"{root}.{name}" if name else root
            raise ValueError(
                f"module {where!r} is a Dropout(p={module.p}) in training mode; the ANE form is "
                "for inference and has no dropout: call model.eval() before converting"
            )


def place_like(target: ModuleT, source: nn.Module) -> ModuleT:
    """Move ``target`` to the device and floating dtype of ``source``'s first parameter, and
    give it ``source``'s training flag. Call it before copying weights, so none is rounded."""
    reference = next(iter(source.parameters()), None)
    if reference is not None:
        target.to(device=reference.device, dtype=reference.dtype)
    target.train(source.training)
    return target


def copy_projection(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Copy a Linear's ``weight`` ``(O, I)`` and ``bias`` ``(O,)`` into a 1x1 ``conv``."""
    with torch.no_grad():
        conv.weight.copy_(linear_weight_to_conv1x1(weight))
        if conv.bias is not None:
            assert bias is not None, "bias presence is checked by the converter"
            conv.bias.copy_(bias)


def linear_projection(linear: nn.Module, path: str) -> Projection:
    """(weight, bias) of an ``nn.Linear`` at ``path`` (checked to be one)."""
    if not isinstance(linear, nn.Linear):
        raise UnsupportedModuleError(
            f"module {path!r} is a {_qualname(type(linear))}; expected an nn.Linear"
        )
    return linear.weight, linear.bias


def check_layer_norm(norm: nn.Module, path: str, dim: int, *, bias: bool = True) -> float:
    """Check that ``norm`` is an affine ``nn.LayerNorm(dim)`` (with a bias iff ``bias``) and
    return its eps."""
    check_type(norm, path, nn.LayerNorm)
    assert isinstance(norm, nn.LayerNorm)
    if tuple(norm.normalized_shape) != (dim,) or not norm.elementwise_affine:
        raise UnsupportedModuleError(
            f"module {path!r} is LayerNorm({tuple(norm.normalized_shape)}, elementwise_affine="
            f"{norm.elementwise_affine}); the ANE form supports an affine LayerNorm over the "
            f"{dim} channels, normalized_shape=({dim},)"
        )
    if (norm.bias is not None) != bias:
        raise UnsupportedModuleError(
            f"module {path!r} has bias={norm.bias is not None} but the rest of the layer has "
            f"bias={bias}; the ANE form needs them to agree"
        )
    return float(norm.eps)


def layer_norm_like(norm: nn.LayerNorm, path: str) -> LayerNormANE:
    """A new :class:`LayerNormANE` equal to ``norm`` (on its device, in its dtype)."""
    dim = int(norm.normalized_shape[0]) if norm.normalized_shape else 0
    eps = check_layer_norm(norm, path, dim, bias=norm.bias is not None)
    target = place_like(LayerNormANE(dim, eps=eps, bias=norm.bias is not None), norm)
    copy_layer_norm(target, norm)
    return target


def copy_layer_norm(target: LayerNormANE, norm: nn.LayerNorm) -> None:
    """Copy ``norm``'s weight and bias ``(C,)`` into ``target`` (same names and shapes)."""
    with torch.no_grad():
        for name in ("weight", "bias"):
            src, dst = getattr(norm, name), getattr(target, name)
            if src is not None and dst is not None:
                dst.copy_(src)


def copy_attention(
    target: SelfAttentionANE, q: Projection, k: Projection, v: Projection, out: Projection
) -> None:
    """Copy four (weight ``(C, C)``, bias ``(C,)``) projections into ``target``."""
    convs = (target.q_proj, target.k_proj, target.v_proj, target.out_proj)
    for conv, (weight, bias) in zip(convs, (q, k, v, out), strict=True):
        copy_projection(conv, weight, bias)

"""Merge layers with no nonlinearity between them into one, exactly, or say why it cannot be done.

- :func:`merge_convs`: two convolutions in a row -> one ``nn.Conv1d/2d/3d``.
- :func:`fold_batchnorm`: a batch norm (eval mode) into the convolution or linear layer next to
  it, in either order.
- :func:`merge_chain`: a sequence of convolutions (or of linear layers) with batch norms and
  identities between them -> one layer.

Each returns a new module and leaves its inputs untouched. The result equals the original
layers for every input size on which they are defined (tests: float64, many shapes); where no
exact merge exists a ValueError names the condition that fails and the values involved.

Where the merge is exact. Write the first conv's kernel ``a``, stride ``s1``, dilation ``d1``
and padding ``p1``, and the second's padding ``p2``, per axis and side.

- Padding on the first conv only (``p2 = 0``) is always exact: the second conv reads only values
  the first one computed, and the merged conv pads its input exactly as the first one did.
- Padding on the second conv inserts zeros *between* the convs. The merged conv sees them as
  the first conv applied to (zero) input padding, which is zero only if the first conv has no
  bias and its padding is at least *full* on that side: ``p1 >= d1 (a - 1)`` (on the leading
  side a strided first conv may need a little less; :func:`merge_convs` computes the exact
  bound). The source note's example (full padding on both, stride 1, no bias) satisfies this;
  'same' padding on both convs does not: the merged conv is then wrong on a border band.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, TypeGuard

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from ane_lib.functional.conv import resolve_conv_padding
from ane_lib.functional.merge import (
    batchnorm_scale_shift,
    compose_conv_weights,
    fold_scale_shift_after,
    fold_scale_shift_before,
)

__all__ = ["fold_batchnorm", "merge_chain", "merge_convs"]

_CONV_TYPES: tuple[type[_ConvNd], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN_FOR_CONV: dict[type[_ConvNd], type[_BatchNorm]] = {
    nn.Conv1d: nn.BatchNorm1d,
    nn.Conv2d: nn.BatchNorm2d,
    nn.Conv3d: nn.BatchNorm3d,
}

Pads = tuple[tuple[int, int], ...]


def _check_conv(name: str, module: object) -> _ConvNd:
    if type(module) not in _CONV_TYPES:
        raise TypeError(
            f"{name} must be an nn.Conv1d, nn.Conv2d or nn.Conv3d, got {type(module).__name__}"
        )
    assert isinstance(module, _ConvNd)
    return module


def conv_padding(conv: _ConvNd) -> Pads:
    """``((left, right), ...)`` per spatial axis of a conv module (``'same'`` resolved)."""
    padding = conv.padding if isinstance(conv.padding, str) else tuple(conv.padding)
    return resolve_conv_padding(
        padding,  # type: ignore[arg-type]  # nn.ConvNd types it str; it is 'valid' or 'same'
        conv.kernel_size,
        conv.stride,
        conv.dilation,
    )


def _pads_argument(
    pads: Pads, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]
) -> str | tuple[int, ...]:
    """The ``padding=`` argument of an ``nn.ConvNd`` that pads ``pads``, or a ValueError."""
    if all(left == right for left, right in pads):
        return tuple(left for left, _ in pads)
    if all(s == 1 for s in stride) and pads == resolve_conv_padding(
        "same", tuple(kernel), 1, tuple(dilation)
    ):
        return "same"
    raise ValueError(
        f"the merged conv would need asymmetric padding {pads} ((left, right) per axis), "
        "which an nn.ConvNd cannot express"
    )


def _new_conv(
    like: _ConvNd,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    stride: Sequence[int],
    padding: str | tuple[int, ...],
    dilation: Sequence[int],
    groups: int,
    padding_mode: str,
) -> _ConvNd:
    """A conv of ``like``'s type holding copies of ``weight`` and ``bias``."""
    kind: Any = type(like)  # nn.Conv1d, nn.Conv2d or nn.Conv3d
    conv: _ConvNd = kind(
        in_channels=weight.shape[1] * groups,
        out_channels=weight.shape[0],
        kernel_size=tuple(weight.shape[2:]),
        stride=tuple(stride),
        padding=padding,
        dilation=tuple(dilation),
        groups=groups,
        bias=bias is not None,
        padding_mode=padding_mode,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            assert conv.bias is not None
            conv.bias.copy_(bias)
    return conv


def _full_padding_needed(
    a: int, s1: int, d1: int, l2: int, r2: int, b: int, s2: int, d2: int
) -> tuple[int, int]:
    """The least (left, right) padding of conv1 on one axis for which the zeros that conv2's
    padding ``(l2, r2)`` puts between the convs are what the merged conv computes there.

    A row ``i`` of conv1's output outside its range reads input rows ``s1 i + d1 u - l1``; the
    merged conv sees zero there only if all of them are input padding. Past the end, the first
    padded row is read for some input size whatever the strides, which needs ``r1 >= d1 (a - 1)``.
    Before the start, conv2 reads the rows ``s2 j + d2 v - l2 < 0``; only the last of those, ``i``,
    matters: ``s1 i + d1 (a - 1) - l1 < 0``.
    """
    full = d1 * (a - 1)
    left = 0
    if l2:
        last = max(
            s2 * j + d2 * v - l2 for j in range(l2 + 1) for v in range(b) if s2 * j + d2 * v < l2
        )
        left = max(0, s1 * last + full + 1)
    return left, full if r2 else 0


def merge_convs(conv1: _ConvNd, conv2: _ConvNd) -> _ConvNd:
    """One convolution exactly equal to ``conv2(conv1(x))`` for every input size.

    conv1: ``(B, C, *in) -> (B, M, *mid)``; conv2: ``(B, M, *mid) -> (B, O, *out)``; both
    ``nn.Conv1d``, ``nn.Conv2d`` or ``nn.Conv3d`` of one kind. The result has kernel
    ``d1 (a - 1) + s1 d2 (b - 1) + 1`` per axis (``a + b - 1`` for plain convs; on the lattice
    ``gcd(d1, s1 d2)`` when both are dilated), stride ``s1 s2``, padding ``p1 + s1 p2``,
    ``gcd(g1, g2)`` groups (a depthwise conv followed by a dense 1x1 becomes a dense conv) and
    the bias ``b2 + sum(W2) b1`` per output channel. Rectangular kernels, strides, dilations,
    groups, biases and 'valid' or 'same' paddings are all covered, within the conditions below.

    Raises:
        TypeError: if a module is not a conv, or the two are of different kinds.
        ValueError: where no exact merge exists, naming the condition: mismatched channels;
            conv2 pads while conv1 has a bias, or while conv1's padding is less than full;
            conv2 pads with a padding mode other than zeros (or conv1 does while conv2 pads);
            the merged padding would be asymmetric.
    """
    c1 = _check_conv("conv1", conv1)
    c2 = _check_conv("conv2", conv2)
    if type(c1) is not type(c2):
        raise TypeError(
            f"conv1 and conv2 must be the same kind of conv, got {type(c1).__name__} and "
            f"{type(c2).__name__}"
        )
    if c2.in_channels != c1.out_channels:
        raise ValueError(
            f"mismatched channels: conv1 has out_channels={c1.out_channels} but conv2 has "
            f"in_channels={c2.in_channels}"
        )
    pads1, pads2 = conv_padding(c1), conv_padding(c2)
    a, s1, d1 = c1.kernel_size, c1.stride, c1.dilation
    if any(left or right for left, right in pads2):
        if c2.padding_mode != "zeros":
            raise ValueError(
                f"conv2 pads its input (padding={c2.padding!r}) with "
                f"padding_mode={c2.padding_mode!r}: those values depend on conv1's output "
                "and no padding of the merged conv's input reproduces them"
            )
        if c1.bias is not None:
            raise ValueError(
                f"conv1 has a bias and conv2 pads its input (padding={c2.padding!r}): conv2 "
                "reads zeros there, the merged conv would read conv1's bias; merge only "
                "with conv1 bias=False or conv2 padding=0"
            )
        if c1.padding_mode != "zeros" and any(left or right for left, right in pads1):
            raise ValueError(
                f"conv2 pads its input (padding={c2.padding!r}) but conv1 pads with "
                f"padding_mode={c1.padding_mode!r}: the merged conv would read copies of the "
                "input where conv2 reads zeros"
            )
        for axis, ((l1, r1), (l2, r2)) in enumerate(zip(pads1, pads2, strict=True)):
            need = _full_padding_needed(
                a[axis],
                s1[axis],
                d1[axis],
                l2,
                r2,
                c2.kernel_size[axis],
                c2.stride[axis],
                c2.dilation[axis],
            )
            if l1 < need[0] or r1 < need[1]:
                raise ValueError(
                    f"conv2 pads its input (padding {(l2, r2)} on axis {axis}) but conv1's "
                    f"padding {(l1, r1)} on that axis is less than full (need at least "
                    f"{need}, with d1 (k1 - 1) = {d1[axis] * (a[axis] - 1)}): the zeros conv2 "
                    "inserts between the convs would be read by the merged conv as conv1 of "
                    "real input"
                )
    merged = compose_conv_weights(
        c1.weight.detach(),
        c2.weight.detach(),
        bias1=None if c1.bias is None else c1.bias.detach(),
        bias2=None if c2.bias is None else c2.bias.detach(),
        stride1=s1,
        dilation1=d1,
        dilation2=c2.dilation,
        groups1=c1.groups,
        groups2=c2.groups,
    )
    stride = tuple(x * y for x, y in zip(s1, c2.stride, strict=True))
    pads = tuple(
        (l1 + s * l2, r1 + s * r2) for (l1, r1), (l2, r2), s in zip(pads1, pads2, s1, strict=True)
    )
    padding = _pads_argument(pads, merged.weight.shape[2:], stride, merged.dilation)
    conv1_pads = any(left or right for left, right in pads1)
    return _new_conv(
        c1,
        merged.weight,
        merged.bias,
        stride=stride,
        padding=padding,
        dilation=merged.dilation,
        groups=merged.groups,
        padding_mode=c1.padding_mode if conv1_pads else "zeros",
    )


# --------------------------------------------------------------------------- batch norms


def _check_batchnorm(name: str, bn: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """The (scale, shift) of an eval-mode batch norm, or a ValueError saying why not."""
    if bn.training:
        raise ValueError(
            f"{name} is in training mode, where it normalises with each batch's statistics; "
            "only an eval-mode batch norm (running statistics) is a fixed affine map: call "
            ".eval() first"
        )
    if not bn.track_running_stats or bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            f"{name} has track_running_stats=False: it always uses batch statistics, so it is "
            "not a fixed affine map and cannot be folded"
        )
    return batchnorm_scale_shift(bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps)


def _pair_kind(layer: nn.Module, bn: _BatchNorm, names: tuple[str, str]) -> None:
    """Raise unless the batch norm's kind matches the layer (Conv2d <-> BatchNorm2d, ...)."""
    if isinstance(layer, nn.Linear):
        want: type[_BatchNorm] = nn.BatchNorm1d
    else:
        want = _BN_FOR_CONV[type(layer)]  # type: ignore[index]
    if type(bn) is not want:
        raise TypeError(
            f"{names[1]} must be an nn.{want.__name__} to go with the "
            f"{type(layer).__name__} {names[0]}, got {type(bn).__name__}"
        )


def _is_layer(module: object) -> TypeGuard[nn.Linear | _ConvNd]:
    """A conv (1, 2 or 3D, not transposed) or a linear layer: what a batch norm folds into."""
    return type(module) in _CONV_TYPES or type(module) is nn.Linear


def _with_weights(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    """A copy of a conv or linear layer with new weights and a bias."""
    if isinstance(layer, nn.Linear):
        new = nn.Linear(
            layer.in_features, layer.out_features, device=weight.device, dtype=weight.dtype
        )
        with torch.no_grad():
            new.weight.copy_(weight)
            new.bias.copy_(bias)
        return new
    assert isinstance(layer, _ConvNd)
    padding = layer.padding if isinstance(layer.padding, str) else tuple(layer.padding)
    return _new_conv(
        layer,
        weight,
        bias,
        stride=layer.stride,
        padding=padding,
        dilation=layer.dilation,
        groups=layer.groups,
        padding_mode=layer.padding_mode,
    )


def fold_batchnorm(first: nn.Module, second: nn.Module) -> nn.Module:
    """Fold an eval-mode batch norm into the conv or linear layer beside it (data order).

    - ``fold_batchnorm(conv, bn)``: a batch norm that follows the conv. Always exact:
      ``W' = W * scale`` per output channel, ``b' = b * scale + shift``, with ``scale =
      gamma / sqrt(var + eps)`` and ``shift = beta - mean * scale``.
    - ``fold_batchnorm(bn, conv)``: a batch norm that precedes the conv. ``W' = W * scale`` per
      input channel, ``b' = b + sum(W * shift)``; exact only if the conv reads no zero padding
      (``padding=0``; a padding mode that copies input values, such as ``'reflect'``, commutes
      with the batch norm and is fine). Otherwise a ValueError.
    - ``fold_batchnorm(linear, bn1d)`` and ``fold_batchnorm(bn1d, linear)``: the same for
      ``nn.Linear`` on ``(N, F)`` inputs, where the batch norm's channels are the features.

    Returns a new ``nn.Conv1d/2d/3d`` or ``nn.Linear`` (with a bias), in the layer's dtype.
    Raises TypeError for other module pairs or a batch norm of the wrong dimension, and
    ValueError for a batch norm in training mode or without running statistics, mismatched
    channels, or a padded conv after the batch norm.
    """
    layer: nn.Linear | _ConvNd
    if _is_layer(first) and isinstance(second, _BatchNorm):
        layer, bn, names = first, second, ("first", "second")
        channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
        side = "output"
    elif isinstance(first, _BatchNorm) and _is_layer(second):
        layer, bn, names = second, first, ("second", "first")
        channels = layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels
        side = "input"
    else:
        raise TypeError(
            "fold_batchnorm takes (conv or linear, batch norm) or (batch norm, conv or "
            f"linear) in data order, got ({type(first).__name__}, {type(second).__name__})"
        )
    _pair_kind(layer, bn, names)
    if bn.num_features != channels:
        raise ValueError(
            f"mismatched channels: the batch norm has num_features={bn.num_features} but the "
            f"{type(layer).__name__} has {channels} {side} channels"
        )
    scale, shift = _check_batchnorm(f"{names[1]} ({type(bn).__name__})", bn)
    weight = layer.weight.detach()
    bias = None if layer.bias is None else layer.bias.detach()
    if side == "output":
        new_weight, new_bias = fold_scale_shift_after(weight, bias, scale, shift)
        return _with_weights(layer, new_weight, new_bias)
    groups = 1
    if isinstance(layer, _ConvNd):
        groups = layer.groups
        pads = conv_padding(layer)
        if layer.padding_mode == "zeros" and any(left or right for left, right in pads):
            raise ValueError(
                f"the batch norm precedes a conv that zero-pads its input "
                f"(padding={layer.padding!r}): the padded border holds zeros where the "
                "unfolded pair sees the batch norm's shift, so no exact fold exists; fold a "
                "batch norm that follows a conv instead, or use padding=0"
            )
    new_weight, new_bias = fold_scale_shift_before(weight, bias, scale, shift, groups)
    return _with_weights(layer, new_weight, new_bias)


# --------------------------------------------------------------------------- chains


def _merge_linears(first: nn.Linear, second: nn.Linear) -> nn.Linear:
    """``second(first(x))`` as one linear layer: ``W = W2 W1``, ``b = W2 b1 + b2``."""
    if second.in_features != first.out_features:
        raise ValueError(
            f"mismatched features: a layer with out_features={first.out_features} is followed "
            f"by one with in_features={second.in_features}"
        )
    w1 = first.weight.detach().to(torch.float64)
    w2 = second.weight.detach().to(torch.float64)
    weight = w2 @ w1
    bias = torch.zeros(second.out_features, dtype=torch.float64, device=w1.device)
    if first.bias is not None:
        bias += w2 @ first.bias.detach().to(torch.float64)
    if second.bias is not None:
        bias += second.bias.detach().to(torch.float64)
    dtype = torch.promote_types(first.weight.dtype, second.weight.dtype)
    new = nn.Linear(first.in_features, second.out_features, device=w1.device, dtype=dtype)
    with torch.no_grad():
        new.weight.copy_(weight.to(dtype))
        new.bias.copy_(bias.to(dtype))
    return new


def merge_chain(layers: nn.Sequential | Sequence[nn.Module]) -> nn.Module:
    """Merge a chain of layers with no nonlinearity between them into one layer.

    layers: an ``nn.Sequential`` or a list of convs of one kind (``nn.Conv2d``, ...) or of
    ``nn.Linear`` layers, with eval-mode batch norms and ``nn.Identity`` anywhere between
    them. Batch norms are folded first (into the layer before them, or into the next one when
    a batch norm comes first); then the layers are merged left to right with
    :func:`merge_convs` (a chain of 1x1 convs is a product of matrices, ``W = W_n ... W_1``) or
    as linear layers (``W = W_n ... W_1``, ``b = W_n (... (W_2 b_1 + b_2) ...) + b_n``).

    Returns one new ``nn.ConvNd`` or ``nn.Linear``; raises TypeError for a module that is not
    linear (an activation, a pooling layer, ...) naming its position, and ValueError where a
    merge or fold is not exact (see :func:`merge_convs`, :func:`fold_batchnorm`).
    """
    if isinstance(layers, nn.Module) and not isinstance(layers, nn.Sequential):
        raise TypeError(f"layers must be an nn.Sequential or a list, got {type(layers).__name__}")
    items = [(i, m) for i, m in enumerate(layers) if not isinstance(m, nn.Identity)]
    for i, module in items:
        if not (_is_layer(module) or isinstance(module, _BatchNorm)):
            raise TypeError(
                f"layers[{i}] is {type(module).__name__}: only convolutions, linear layers, "
                "batch norms and identities can be merged (a nonlinearity breaks the merge)"
            )
    # fold the batch norms into a neighbour
    folded: list[nn.Module] = []
    pending: list[tuple[int, _BatchNorm]] = []  # leading batch norms, folded into the next layer
    for i, module in items:
        if isinstance(module, _BatchNorm):
            if folded:
                folded[-1] = fold_batchnorm(folded[-1], module)
            else:
                pending.append((i, module))
            continue
        layer = module
        for _, bn in reversed(pending):
            layer = fold_batchnorm(bn, layer)
        pending = []
        folded.append(layer)
    if not folded:
        raise ValueError("layers holds no convolution or linear layer to merge")
    kinds = {type(m) for m in folded}
    if len(kinds) > 1:
        raise TypeError(
            "layers must be all convs of one kind or all linear layers, got "
            f"{sorted(k.__name__ for k in kinds)}"
        )
    result = folded[0]
    for layer in folded[1:]:
        if isinstance(layer, nn.Linear):
            assert isinstance(result, nn.Linear)
            result = _merge_linears(result, layer)
        else:
            assert isinstance(result, _ConvNd) and isinstance(layer, _ConvNd)
            result = merge_convs(result, layer)
    if any(result is module for _, module in items):
        result = copy.deepcopy(result)  # a chain of one layer: still a new module
    return result

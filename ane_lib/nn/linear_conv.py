"""``nn.Linear`` <-> ``nn.Conv2d(kernel_size=1)``, and loading either one's weights into the other.

A model rewritten for the Neural Engine replaces its Linear layers by 1x1 convolutions over a
``(B, C, 1, S)`` tensor. The weights are the same numbers, only the shape differs: ``(O, I)`` for
the Linear, ``(O, I, 1, 1)`` for the convolution. So a checkpoint of the standard model does not
load into the rewritten one as it is: ``load_state_dict`` reports a size mismatch for every
projection.

Apple's DistilBERT port (apple/ml-ane-transformers, ``linear_to_conv2d_map``) fixes this with a
state-dict pre-hook that picks the keys to reshape by their *names*: in one revision a 2D
``.weight`` whose key contains ``"lin"`` or ``"classifier"``, in another a list of DistilBERT's
key suffixes. Either suits DistilBERT's names and nothing else: with the substring rule a head
called ``proj_out`` or ``fc_final`` is missed, and the 2D weight of another kind of module whose
name happens to contain ``"lin"`` (an embedding table called ``timeline_embed``) is reshaped.
The hook here picks modules by their *type*: every ``nn.Conv2d`` with a 1x1 kernel and
``groups=1`` (found with ``named_modules``) gets a pre-hook that reshapes the incoming
``<its prefix>weight`` when it is 2D, and checks its shape.

The same pre-hook, installed on ``nn.Linear`` layers too, works in both directions: each
projection converts an incoming weight of the other form to its own rank. The library's layers
and models install it for good (:func:`register_projection_layout_hooks`), so a standard model
and its Neural Engine twin load each other's state dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ane_lib.functional.projection import conv1x1_weight_to_linear, linear_weight_to_conv1x1
from ane_lib.nn.load_hooks import register_load_hook

if TYPE_CHECKING:
    from torch.nn.modules.module import _IncompatibleKeys

__all__ = [
    "conv1x1_from_linear",
    "linear_from_conv1x1",
    "Conv1x1LoadHooks",
    "register_linear_to_conv1x1_hook",
    "register_projection_layout_hooks",
    "load_linear_state_dict",
]


def conv1x1_from_linear(linear: nn.Linear) -> nn.Conv2d:
    """Build the ``nn.Conv2d(I, O, kernel_size=1)`` that computes ``linear`` on ``(B, I, H, W)``.

    Args:
        linear: an ``nn.Linear(I, O)``, with or without bias.

    Returns:
        A new ``nn.Conv2d`` with weight ``(O, I, 1, 1)`` and bias ``(O,)`` (if ``linear`` has one)
        copied from ``linear`` (no shared storage), on the same device, with the same dtype,
        ``requires_grad`` and training mode. For ``x: (B, S, I)``,
        ``conv(bsc_to_bc1s(x))`` equals ``bsc_to_bc1s(linear(x))``.
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
    if isinstance(linear.weight, nn.parameter.UninitializedParameter):
        raise ValueError(
            "linear is an uninitialized lazy layer (nn.LazyLinear); run one forward pass first"
        )
    conv = nn.Conv2d(
        linear.in_features,
        linear.out_features,
        kernel_size=1,
        bias=linear.bias is not None,
        device=linear.weight.device,
        dtype=linear.weight.dtype,
    )
    _copy_parameters(conv, linear_weight_to_conv1x1(linear.weight), linear)
    conv.train(linear.training)
    return conv


def linear_from_conv1x1(conv: nn.Conv2d) -> nn.Linear:
    """Build the ``nn.Linear(I, O)`` that computes a 1x1 ``conv`` at every position.

    Args:
        conv: an ``nn.Conv2d(I, O, kernel_size=1)`` with ``groups=1``, ``stride=1`` and no padding,
            with or without bias.

    Returns:
        A new ``nn.Linear`` with weight ``(O, I)`` and bias ``(O,)`` (if ``conv`` has one) copied
        from ``conv``, on the same device, with the same dtype, ``requires_grad`` and training mode.

    Any other convolution is rejected, because it is not the same map as a Linear: a larger
    kernel mixes neighbouring pixels, a stride drops positions, padding adds border pixels that hold
    only the bias, and ``groups > 1`` is a block-diagonal projection (its weight is
    ``(O, I / groups, 1, 1)``).
    """
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"conv must be an nn.Conv2d, got {type(conv).__name__}")
    if tuple(conv.kernel_size) != (1, 1):
        raise ValueError(
            f"conv must have kernel_size (1, 1), got {tuple(conv.kernel_size)}; only a 1x1 "
            "convolution is a per-position linear projection"
        )
    if conv.groups != 1:
        raise ValueError(
            f"conv must have groups=1, got groups={conv.groups}; a grouped 1x1 convolution is a "
            "block-diagonal projection, not a dense nn.Linear"
        )
    if tuple(conv.stride) != (1, 1):
        raise ValueError(f"conv must have stride (1, 1), got {tuple(conv.stride)}")
    if conv.padding not in ((0, 0), "valid", "same"):
        raise ValueError(f"conv must have no padding, got padding={conv.padding!r}")
    linear = nn.Linear(
        conv.in_channels,
        conv.out_channels,
        bias=conv.bias is not None,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    _copy_parameters(linear, conv1x1_weight_to_linear(conv.weight), conv)
    linear.train(conv.training)
    return linear


def _copy_parameters(
    target: nn.Linear | nn.Conv2d, weight: torch.Tensor, source: nn.Linear | nn.Conv2d
) -> None:
    """Copy ``weight`` and ``source.bias`` into ``target`` (no shared storage)."""
    with torch.no_grad():
        target.weight.copy_(weight)
        target.weight.requires_grad_(source.weight.requires_grad)
        if source.bias is not None:
            assert target.bias is not None  # built with bias= source.bias is not None
            target.bias.copy_(source.bias)
            target.bias.requires_grad_(source.bias.requires_grad)


def _is_dense_conv1x1(module: nn.Module) -> bool:
    """True for an ``nn.Conv2d`` whose weight is ``(O, I, 1, 1)`` with ``groups=1``."""
    return (
        isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1) and module.groups == 1
    )


def _is_projection(module: nn.Module) -> bool:
    """True for an ``nn.Linear`` or a dense 1x1 ``nn.Conv2d``: the two forms of a projection."""
    return isinstance(module, nn.Linear) or _is_dense_conv1x1(module)


def _projection_weight_to_own_rank(
    module: nn.Module, state_dict: dict[str, Any], prefix: str
) -> None:
    """Load-state-dict pre-hook of one projection: ``(O, I)`` <-> ``(O, I, 1, 1)``.

    An incoming ``weight`` in the other form's layout is checked against the module's own shape
    and converted to the module's rank: a Linear weight ``(O, I)`` for a 1x1 ``nn.Conv2d``, a 1x1
    convolution weight ``(O, I, 1, 1)`` for an ``nn.Linear``. Any other rank is left for
    ``load_state_dict`` to report as a size mismatch.

    ``prefix`` is the module's own name in the state dict (e.g. ``"head.proj_out."``), given by
    ``load_state_dict``, so the key is found without guessing from names. ``state_dict`` is
    ``load_state_dict``'s private copy: the caller's dictionary is left untouched. A
    module-level function, so that a model holding the hook can be pickled and deep-copied.
    """
    key = prefix + "weight"
    incoming = state_dict.get(key)
    if not isinstance(incoming, torch.Tensor):
        return  # absent: strict loading reports it
    if isinstance(module, nn.Linear) and incoming.ndim == 4:
        kind, other = "Linear", "1x1-convolution"
        expected: tuple[int, ...] = (module.out_features, module.in_features, 1, 1)
        convert = conv1x1_weight_to_linear
    elif isinstance(module, nn.Conv2d) and incoming.ndim == 2:
        kind, other = "1x1 convolution", "Linear"
        expected = (module.out_channels, module.in_channels)
        convert = linear_weight_to_conv1x1
    else:
        return  # already the module's rank, or one that load_state_dict reports as a mismatch
    if tuple(incoming.shape) != expected:
        raise ValueError(
            f"state_dict[{key!r}] has shape {tuple(incoming.shape)}, but the {kind} "
            f"{prefix[:-1] or '<root>'!r} has weight shape {tuple(module.weight.shape)}, "
            f"so a {other} weight must have shape {expected}"
        )
    state_dict[key] = convert(incoming)


class Conv1x1LoadHooks:
    """The pre-hooks installed by :func:`register_linear_to_conv1x1_hook` or
    :func:`register_projection_layout_hooks`.

    ``module_names`` lists the hooked modules (``""`` is the root module); ``remove()``
    uninstalls every hook. Usable as a context manager, which removes the hooks on
    exit.
    """

    def __init__(self, module_names: tuple[str, ...], handles: tuple[RemovableHandle, ...]) -> None:
        self.module_names = module_names
        self._handles = handles

    def remove(self) -> None:
        """Uninstall every hook (calling it again does nothing)."""
        for handle in self._handles:
            handle.remove()

    def __enter__(self) -> Conv1x1LoadHooks:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"Conv1x1LoadHooks(module_names={self.module_names!r})"


def _register_projection_hooks(
    model: nn.Module, select: Callable[[nn.Module], bool], wanted: str
) -> Conv1x1LoadHooks:
    """Install :func:`_projection_weight_to_own_rank` on every module of ``model`` that
    ``select`` accepts (``model`` itself included); ``wanted`` names them in the error."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    targets = [(name, m) for name, m in model.named_modules() if select(m)]
    if not targets:
        raise ValueError(f"model ({type(model).__name__}) has no {wanted}")
    handles = tuple(register_load_hook(m, _projection_weight_to_own_rank) for _, m in targets)
    return Conv1x1LoadHooks(tuple(name for name, _ in targets), handles)


def register_linear_to_conv1x1_hook(model: nn.Module) -> Conv1x1LoadHooks:
    """Let ``model.load_state_dict`` accept Linear weights ``(O, I)`` for its 1x1 convolutions.

    Every ``nn.Conv2d`` in ``model`` (``model`` itself included) with a 1x1 kernel and ``groups=1``
    gets a load-state-dict pre-hook that, when the incoming ``<name>.weight`` is 2D, checks that it
    is ``(out_channels, in_channels)`` and reshapes it to ``(O, I, 1, 1)``. Modules are chosen by
    type, not by key names; weights of every other module (embeddings, 3x3 convs, norms, ...)
    load unchanged. Missing and unexpected keys are still reported as ``load_state_dict`` does.

    Args:
        model: any ``nn.Module`` containing at least one such convolution.

    Returns:
        A :class:`Conv1x1LoadHooks`; call ``.remove()`` (or use it in a ``with``) to uninstall.

    Raises:
        ValueError: at registration, if ``model`` has no 1x1 ``nn.Conv2d`` with ``groups=1``;
            at loading, if a 2D weight for one of them has the wrong shape (naming the key and
            both shapes).
    """
    return _register_projection_hooks(
        model,
        _is_dense_conv1x1,
        "nn.Conv2d with a 1x1 kernel and groups=1 to load Linear weights into",
    )


def register_projection_layout_hooks(model: nn.Module) -> Conv1x1LoadHooks:
    """Let ``model.load_state_dict`` accept each projection's weight in either layout.

    Every ``nn.Linear`` and every ``nn.Conv2d`` with a 1x1 kernel and ``groups=1`` in ``model``
    (``model`` itself included) gets a load-state-dict pre-hook that converts an incoming
    ``<name>.weight`` of the other layout to its own, after checking its shape: a Linear accepts a
    1x1-convolution weight ``(O, I, 1, 1)``, a 1x1 convolution a Linear weight ``(O, I)``. So a
    model written with Linear layers on ``(B, S, C)`` and its twin with 1x1 convolutions on
    ``(B, C, 1, S)`` load each other's state dicts. Modules are chosen by type, as in
    :func:`register_linear_to_conv1x1_hook`; biases and all other weights load unchanged.

    The library's layers install these hooks for good when they are built (e.g.
    :class:`~ane_lib.nn.attention.MultiHeadAttention` on its projections, the models on their
    head); they survive ``copy.deepcopy`` and pickling. Registering twice on one module is
    harmless (the second hook finds the weight already converted) but useless.

    Args:
        model: any ``nn.Module`` containing at least one such projection.

    Returns:
        A :class:`Conv1x1LoadHooks` listing the hooked modules; ``.remove()`` uninstalls them.

    Raises:
        ValueError: at registration, if ``model`` has no such projection; at loading, if a
            weight of the other layout has the wrong shape (naming the key and both shapes).
    """
    return _register_projection_hooks(
        model, _is_projection, "nn.Linear or nn.Conv2d with a 1x1 kernel and groups=1 to hook"
    )


def load_linear_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, strict: bool = True
) -> _IncompatibleKeys:
    """Load a state dict saved from Linear layers into ``model``'s 1x1 convolutions.

    Installs :func:`register_linear_to_conv1x1_hook`, calls ``model.load_state_dict(state_dict,
    strict=strict)`` and removes the hooks again. ``state_dict`` itself is not modified.

    Args:
        model: the rewritten model (1x1 ``nn.Conv2d`` where the source had ``nn.Linear``),
            with the same module names as the source.
        state_dict: key -> tensor, e.g. ``linear_model.state_dict()``.
        strict: as in ``load_state_dict``: raise on missing or unexpected keys.

    Returns:
        ``load_state_dict``'s result (``missing_keys``, ``unexpected_keys``).
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"state_dict must be a mapping of str to tensor, got {type(state_dict).__name__}"
        )
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be a bool, got {strict!r} ({type(strict).__name__})")
    with register_linear_to_conv1x1_hook(model):
        return model.load_state_dict(state_dict, strict=strict)

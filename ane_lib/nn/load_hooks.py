"""Load-state-dict pre-hooks written as ``hook(module, state_dict, prefix)``.

The library's layers load each other's state dicts across forms (a Linear weight into a 1x1
convolution, a fused ``qkv`` into three projections, a ``(1, S, C)`` embedding into
``(1, C, 1, S)``) by rewriting the incoming entries before ``load_state_dict`` copies them.
torch calls such a pre-hook with eight arguments; the rewrites need three: the module, the
state dict (``load_state_dict``'s private copy, free to edit) and the module's key prefix
(e.g. ``"stages.2.0.attention."``). :func:`register_load_hook` adapts one to the other::

    def _rename_old_key(module, state_dict, prefix):
        if prefix + "old" in state_dict:
            state_dict[prefix + "new"] = state_dict.pop(prefix + "old")

    register_load_hook(module, _rename_old_key)

``load_state_dict`` visits a module before its children, so a parent's hook runs before those
of its submodules (the attention layer renames ``qkv`` entries, then each projection reshapes
its own weight).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["LoadHook", "register_load_hook"]

LoadHook = Callable[[nn.Module, dict[str, Any], str], None]
"""``hook(module, state_dict, prefix)``: rewrite ``state_dict`` entries under ``prefix``."""


class _LoadPreHook:
    """torch's eight-argument pre-hook around a :data:`LoadHook`.

    A class (not a closure) so that a model holding it can be pickled and deep-copied, as long
    as the wrapped hook is a module-level function. (Not named ``hook``: torch's own wrapper
    copies this object's attributes onto itself and calls its ``hook``.)
    """

    def __init__(self, hook: LoadHook) -> None:
        self.load_hook = hook

    def __call__(
        self,
        module: nn.Module,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        self.load_hook(module, state_dict, prefix)

    def __repr__(self) -> str:
        return f"_LoadPreHook({getattr(self.load_hook, '__qualname__', self.load_hook)!r})"


def register_load_hook(module: nn.Module, hook: LoadHook) -> RemovableHandle:
    """Call ``hook(module, state_dict, prefix)`` whenever ``module``'s state dict is loaded.

    Args:
        module: the module whose incoming entries ``hook`` rewrites (it is ``hook``'s first
            argument; ``prefix`` is its key prefix, ``""`` at the root).
        hook: edits ``state_dict`` in place (rename, reshape, split or fuse entries); its return
            value is ignored. Use a module-level function so the model stays picklable.

    Returns:
        torch's handle; ``.remove()`` uninstalls the hook.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not callable(hook):
        raise TypeError(f"hook must be callable as hook(module, state_dict, prefix), got {hook!r}")
    return module.register_load_state_dict_pre_hook(_LoadPreHook(hook))

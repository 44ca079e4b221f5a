"""Load-state-dict pre-hooks that let the standard and the ANE form load each other's weights.

The two forms hold the same numbers in different shapes: a projection is an ``nn.Linear``
(weight ``(O, I)``) in one and a 1x1 ``nn.Conv2d`` (weight ``(O, I, 1, 1)``) in the other; an
embedding is stored ``(1, S, C)`` in one and ``(1, C, 1, S)`` in the other. Each module registers
a pre-hook (``nn.Module.register_load_state_dict_pre_hook``) that rewrites the incoming entries
under its own prefix into its own layout, so ``ane.load_state_dict(standard.state_dict())``
works at any level (one attention layer, one block, a whole model) and so does the reverse.

``load_state_dict`` hands every hook its private copy of the state dict, so the caller's
dictionary is never modified.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ane_lib.functional.projection import conv1x1_weight_to_linear, linear_weight_to_conv1x1

__all__ = ["ProjectionLayoutHook", "projections_as", "register_projection_hook"]


def projections_as(
    state_dict: dict[str, Any], prefix: str, names: Iterable[str], *, rank: int
) -> None:
    """Reshape the incoming ``<prefix><name>.weight`` of each projection to the given rank.

    ``rank=2`` turns a 1x1-convolution weight ``(O, I, 1, 1)`` into a Linear weight ``(O, I)``;
    ``rank=4`` does the reverse. Entries that are absent or already of that rank are left alone
    (``load_state_dict`` then reports them as usual).
    """
    for name in names:
        key = f"{prefix}{name}.weight"
        weight = state_dict.get(key)
        if not isinstance(weight, torch.Tensor) or weight.ndim == rank:
            continue
        if rank == 4 and weight.ndim == 2:
            state_dict[key] = linear_weight_to_conv1x1(weight)
        elif rank == 2 and weight.ndim == 4:
            state_dict[key] = conv1x1_weight_to_linear(weight)


class ProjectionLayoutHook:
    """Pre-hook letting a module load its projections ``names`` from either layout.

    The rank each projection is converted to is read from the module's own child at load time:
    2 for an ``nn.Linear``, 4 for an ``nn.Conv2d``. A class rather than a closure, so that a
    model holding the hook can still be pickled and deep-copied.
    """

    def __init__(self, names: Iterable[str]):
        self.names = tuple(names)

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
        for name in self.names:
            rank = 4 if isinstance(getattr(module, name), nn.Conv2d) else 2
            projections_as(state_dict, prefix, (name,), rank=rank)


def register_projection_hook(module: nn.Module, names: Iterable[str]) -> None:
    """Let ``module.load_state_dict`` accept its projections ``names`` as Linear or 1x1 conv."""
    module.register_load_state_dict_pre_hook(ProjectionLayoutHook(names))

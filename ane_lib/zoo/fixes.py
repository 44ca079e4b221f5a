"""Changes that make a zoo model's report clean, each equal to the model it changes.

The appendix "A field guide" applies them and shows the report before and after:

- :func:`mobilevit_v2_patch_layout`: MobileViT v2 cuts its feature maps into patches with
  ``F.unfold`` / ``F.fold``, which coremltools lowers to ``gather_along_axis`` (on the reported
  fallback list); :func:`ane_lib.functional.unfold_patches` / ``fold_patches`` move the same
  elements with ``pixel_unshuffle`` / ``pixel_shuffle`` and reshapes.

The other two fixes of the appendix need no code of their own: EfficientNet's pooler becomes
``nn.AdaptiveAvgPool2d(1)``, and DistilBERT goes through :func:`ane_lib.models.to_ane` with
its embedding lookup left outside the package.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ane_lib.functional.patches import fold_patches, unfold_patches

__all__ = ["mobilevit_v2_patch_layout"]


def _unfolding(patch: tuple[int, int]) -> Any:
    def unfolding(feature_map: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        # (B, C, H, W) -> (B, C, P, N), and the size to fold back to
        height, width = feature_map.shape[-2:]
        return unfold_patches(feature_map, patch), (int(height), int(width))

    return unfolding


def _folding(patch: tuple[int, int]) -> Any:
    def folding(patches: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
        return fold_patches(patches, output_size, patch)

    return folding


def mobilevit_v2_patch_layout(model: nn.Module) -> nn.Module:
    """A copy of a Hugging Face MobileViT v2 model whose layers cut and join patches without
    ``F.unfold`` / ``F.fold``: same weights, same outputs (the tests compare them).

    Every ``MobileViTV2Layer`` gets its ``unfolding`` and ``folding`` replaced by
    :func:`~ane_lib.functional.unfold_patches` and :func:`~ane_lib.functional.fold_patches`
    with its own patch size. Raises ValueError if ``model`` has no such layer.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    out = copy.deepcopy(model)
    layers = [m for m in out.modules() if type(m).__name__ == "MobileViTV2Layer"]
    if not layers:
        raise ValueError(
            f"model ({type(model).__name__}) has no MobileViTV2Layer: nothing to change"
        )
    for layer in layers:
        height, width = layer.patch_height, layer.patch_width
        patch = (int(height), int(width))  # type: ignore[arg-type]
        # instance attributes: the layer's forward calls self.unfolding / self.folding
        layer.unfolding = _unfolding(patch)
        layer.folding = _folding(patch)
    return out

"""What the image classifiers of this package share: the input check and the initialisation."""

from __future__ import annotations

import torch
from torch import nn

from ane_lib._checks import check_rank

__all__ = ["check_image", "init_weights"]


def check_image(x: torch.Tensor, image_size: tuple[int, int]) -> None:
    """Raise unless ``x`` is ``(B, 3, H, W)`` with ``(H, W) == image_size``.

    A model built for one image size has its position embeddings (and, in the Neural Engine's
    form, every reshape) sized for it, so any other size is an error, not a resize.
    """
    check_rank("x", x, (4,), "(B, 3, H, W)")
    if tuple(x.shape[1:]) != (3, *image_size):
        raise ValueError(
            f"x must have shape (B, 3, {image_size[0]}, {image_size[1]}) for this model "
            f"(config.image_size={image_size}), got {tuple(x.shape)}"
        )


def init_weights(module: nn.Module) -> None:
    """deeplab2's initialisation: conv and dense kernels ~ N(0, 0.02) (truncated), zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

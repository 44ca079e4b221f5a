"""Non-overlapping patches as MobileViT lays them out, without ``im2col``.

MobileViT v2 (Hugging Face's port) cuts a feature map ``(B, C, H, W)`` into ``ph x pw``
patches with ``F.unfold`` and stores them as ``(B, C, P, N)``: ``P = ph * pw`` positions inside
a patch, ``N = (H / ph) (W / pw)`` patches in row-major order; ``F.fold`` puts them back.
coremltools lowers ``unfold`` / ``fold`` (PyTorch's ``im2col`` / ``col2im``) to
``gather_along_axis`` ops, which are on the reported list of ops that leave the Neural Engine.
For non-overlapping patches the same numbers come from moves alone:

* :func:`unfold_patches` / :func:`fold_patches`: square patches go through
  ``pixel_unshuffle`` / ``pixel_shuffle`` (one op each, then a reshape); other patch shapes
  through a reshape to rank 5 (never 6, Core ML's limit), one transpose and a reshape.

Both equal ``F.unfold`` / ``F.fold`` exactly (they only move elements); the tests check it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ane_lib._checks import check_divides, check_rank, int_tuple

__all__ = ["fold_patches", "unfold_patches"]


def _patch(patch: int | Sequence[int]) -> tuple[int, int]:
    ph, pw = int_tuple("patch", patch, 2)
    return ph, pw


def unfold_patches(x: torch.Tensor, patch: int | Sequence[int]) -> torch.Tensor:
    """Cut ``x: (B, C, H, W)`` into non-overlapping ``patch`` patches: ``(B, C, ph * pw, N)``.

    Equal to ``F.unfold(x, patch, stride=patch).reshape(B, C, ph * pw, N)`` with
    ``N = (H / ph) (W / pw)``; ``H`` and ``W`` must be multiples of the patch sides.
    """
    check_rank("x", x, (4,), "(B, C, H, W)")
    ph, pw = _patch(patch)
    B, C, H, W = x.shape
    check_divides("patch height", ph, "H", H)
    check_divides("patch width", pw, "W", W)
    nh, nw = H // ph, W // pw
    if ph == pw:
        # (B, C * P, nh, nw): channel c * P + i * pw + j holds pixel (i, j) of each patch
        return F.pixel_unshuffle(x, ph).reshape(B, C, ph * pw, nh * nw)
    # (B*C, nh, ph, nw, pw) -> (B*C, ph, pw, nh, nw): rank 5 at most
    y = x.reshape(B * C, nh, ph, nw, pw).permute(0, 2, 4, 1, 3)
    return y.reshape(B, C, ph * pw, nh * nw)


def fold_patches(
    patches: torch.Tensor, output_size: Sequence[int], patch: int | Sequence[int]
) -> torch.Tensor:
    """Put ``patches: (B, C, ph * pw, N)`` back into a map ``(B, C, H, W)``, ``output_size =
    (H, W)``: the inverse of :func:`unfold_patches`, equal to ``F.fold(patches.reshape(B,
    C * ph * pw, N), output_size, patch, stride=patch)``."""
    check_rank("patches", patches, (4,), "(B, C, P, N)")
    ph, pw = _patch(patch)
    H, W = int_tuple("output_size", output_size, 2)
    check_divides("patch height", ph, "H", H)
    check_divides("patch width", pw, "W", W)
    B, C, P, N = patches.shape
    nh, nw = H // ph, W // pw
    if ph * pw != P or nh * nw != N:
        raise ValueError(
            f"patches has shape {tuple(patches.shape)}; output_size {(H, W)} with patch "
            f"{(ph, pw)} needs (B, C, {ph * pw}, {nh * nw})"
        )
    if ph == pw:
        return F.pixel_shuffle(patches.reshape(B, C * P, nh, nw), ph)
    y = patches.reshape(B * C, ph, pw, nh, nw).permute(0, 3, 1, 4, 2)
    return y.reshape(B, C, H, W)

"""Non-overlapping window partition and its inverse, in two forms.

Local attention (Swin, MOAT) cuts a feature map into ``wh x ww`` windows and attends inside
each one. The usual code does it with one reshape to a rank-6 tensor
``(B, nH, wh, nW, ww, C)`` and one transpose. Core ML's Neural Engine path handles tensors of
rank at most 5, so Apple's 2024 vision-transformer post relays the partition through rank-5
tensors: it factors one spatial axis at a time (height first, then width) and folds each
window count into the batch before factoring the next.

Both forms are given for both layouts and are exactly equal (they only move elements):

* ``method="6d"``: the Swin reference, rank-6 intermediate.
* ``method="5d"``: the relayed partition; no intermediate has rank above 5.

In NHWC (``channels_last=True``) the last axis of every intermediate is the channel axis, which
keeps it wide; in NCHW it is a window width (often 7 or 8 values), which the Neural Engine pads
to 64 bytes (see :mod:`ane_lib.functional.alignment`). NHWC also needs one transpose instead
of two in the relayed form.

Windows are ordered batch-major, then by window row, then by window column (Swin's order),
so window ``(b, i, j)`` is at index ``(b * nH + i) * nW + j``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, get_args

import torch

from ane_lib._checks import check_choice, check_positive_int, check_rank, int_tuple

__all__ = [
    "window_partition",
    "window_reverse",
    "check_window_divides",
    "WINDOW_METHODS",
    "WindowMethod",
]

WindowMethod = Literal["6d", "5d"]
"""``"6d"``: the Swin reference (rank-6 intermediate); ``"5d"``: the relayed partition."""
WINDOW_METHODS: tuple[WindowMethod, ...] = get_args(WindowMethod)


def _window_size(window: int | Sequence[int]) -> tuple[int, int]:
    wh, ww = int_tuple("window", window, 2)
    return wh, ww


def check_window_divides(
    window: int | Sequence[int],
    size: Sequence[int] | Mapping[str, Sequence[int]],
    *,
    where: str = "the feature map",
) -> tuple[int, int]:
    """Return ``window`` as ``(wh, ww)`` if it tiles every ``(H, W)`` map exactly, else raise.

    The one statement of the rule non-overlapping windows need (no padding, no partial window),
    used by :func:`window_partition`, the MOAT block and the MOAT config.

    Args:
        window: an int (square) or ``(wh, ww)``.
        size: one map's ``(H, W)``, or several maps by name, e.g.
            ``{"stage 3": (16, 16), "stage 4": (8, 8)}``.
        where: what the maps are, for the message, e.g. ``"the block's feature map"``.
    """
    wh, ww = _window_size(window)
    maps = dict(size) if isinstance(size, Mapping) else {"": size}
    if all(h % wh == 0 and w % ww == 0 for h, w in maps.values()):
        return wh, ww
    if isinstance(size, Mapping):
        listed = ", ".join(f"{name} is {tuple(s)}" for name, s in maps.items())
        raise ValueError(
            f"window={window!r} must divide {where}: {listed}; allowed windows divide all of them"
        )
    raise ValueError(f"window={window!r} must divide {where} (H, W)={tuple(size)}")


def _check_flags(channels_last: object, method: object) -> None:
    if not isinstance(channels_last, bool):
        raise TypeError(
            f"channels_last must be a bool, got {channels_last!r} ({type(channels_last).__name__})"
        )
    check_choice("method", method, WINDOW_METHODS)


def window_partition(
    x: torch.Tensor,
    window: int | Sequence[int],
    *,
    channels_last: bool,
    method: WindowMethod = "5d",
) -> torch.Tensor:
    """Cut a feature map into non-overlapping windows.

    Args:
        x: ``(B, H, W, C)`` if ``channels_last`` else ``(B, C, H, W)``.
        window: window size, an int ``w`` (square) or ``(wh, ww)``; must divide ``(H, W)``.
        channels_last: layout of ``x`` and of the result (NHWC if True, NCHW if False).
        method: ``"5d"`` (relayed partition, rank <= 5 throughout) or ``"6d"`` (Swin reference).

    Returns:
        ``(B * nH * nW, wh, ww, C)`` if ``channels_last`` else ``(B * nH * nW, C, wh, ww)``,
        with ``nH = H // wh`` and ``nW = W // ww``; windows ordered batch, window row,
        window column.
    """
    _check_flags(channels_last, method)
    layout = "(B, H, W, C)" if channels_last else "(B, C, H, W)"
    check_rank("x", x, (4,), layout)
    wh, ww = _window_size(window)
    if channels_last:
        B, H, W, C = x.shape
    else:
        B, C, H, W = x.shape
    check_window_divides((wh, ww), (H, W))
    nH, nW = H // wh, W // ww

    if method == "6d":
        if channels_last:
            x6 = x.reshape(B, nH, wh, nW, ww, C).permute(0, 1, 3, 2, 4, 5)
            return x6.reshape(B * nH * nW, wh, ww, C)
        x6 = x.reshape(B, C, nH, wh, nW, ww).permute(0, 2, 4, 1, 3, 5)
        return x6.reshape(B * nH * nW, C, wh, ww)

    if channels_last:
        # Rows of windows are contiguous in NHWC: fold nH into the batch for free, then factor
        # the width and swap the window column in front of the row inside the window.
        x5 = x.reshape(B * nH, wh, nW, ww, C).permute(0, 2, 1, 3, 4)
        return x5.reshape(B * nH * nW, wh, ww, C)
    # NCHW: factor the height, move the window row next to the batch and fold it in ...
    x5 = x.reshape(B, C, nH, wh, W).permute(0, 2, 1, 3, 4).reshape(B * nH, C, wh, W)
    # ... then factor the width and fold the window column in the same way.
    x5 = x5.reshape(B * nH, C, wh, nW, ww).permute(0, 3, 1, 2, 4)
    return x5.reshape(B * nH * nW, C, wh, ww)


def window_reverse(
    windows: torch.Tensor,
    window: int | Sequence[int],
    height: int,
    width: int,
    *,
    channels_last: bool,
    method: WindowMethod = "5d",
) -> torch.Tensor:
    """Put windows back together into a feature map: the exact inverse of :func:`window_partition`.

    Args:
        windows: ``(B * nH * nW, wh, ww, C)`` if ``channels_last`` else
            ``(B * nH * nW, C, wh, ww)``, in the order :func:`window_partition` produces.
        window: window size, an int or ``(wh, ww)``; must match the window axes of ``windows``.
        height, width: ``H`` and ``W`` of the feature map; ``window`` must divide them.
        channels_last: layout of ``windows`` and of the result.
        method: ``"5d"`` (rank <= 5 throughout) or ``"6d"`` (Swin reference).

    Returns:
        ``(B, H, W, C)`` if ``channels_last`` else ``(B, C, H, W)``.
    """
    _check_flags(channels_last, method)
    layout = "(B * nH * nW, wh, ww, C)" if channels_last else "(B * nH * nW, C, wh, ww)"
    check_rank("windows", windows, (4,), layout)
    wh, ww = _window_size(window)
    H = check_positive_int("height", height)
    W = check_positive_int("width", width)
    check_window_divides((wh, ww), (H, W))
    if channels_last:
        N, got_wh, got_ww, C = windows.shape
    else:
        N, C, got_wh, got_ww = windows.shape
    if (got_wh, got_ww) != (wh, ww):
        raise ValueError(
            f"windows must have window axes {(wh, ww)} for window={(wh, ww)}, got "
            f"{(got_wh, got_ww)} in shape {tuple(windows.shape)} (layout {layout})"
        )
    nH, nW = H // wh, W // ww
    if N % (nH * nW) != 0:
        raise ValueError(
            f"windows has {N} windows, which is not a multiple of the {nH * nW} windows "
            f"(nH, nW)=({nH}, {nW}) of one (H, W)=({H}, {W}) map"
        )
    B = N // (nH * nW)

    if method == "6d":
        if channels_last:
            x6 = windows.reshape(B, nH, nW, wh, ww, C).permute(0, 1, 3, 2, 4, 5)
            return x6.reshape(B, H, W, C)
        x6 = windows.reshape(B, nH, nW, C, wh, ww).permute(0, 3, 1, 4, 2, 5)
        return x6.reshape(B, C, H, W)

    if channels_last:
        x5 = windows.reshape(B * nH, nW, wh, ww, C).permute(0, 2, 1, 3, 4)
        return x5.reshape(B, H, W, C)
    # Undo the width step (unfold the window column), then the height step.
    x5 = windows.reshape(B * nH, nW, C, wh, ww).permute(0, 2, 3, 1, 4).reshape(B * nH, C, wh, W)
    x5 = x5.reshape(B, nH, C, wh, W).permute(0, 2, 1, 3, 4)
    return x5.reshape(B, C, H, W)

"""Small real models shared by several tests (the Core ML tests convert them for real)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ane_lib.functional.windows import window_partition, window_reverse


class Classifier(nn.Module):
    """x: (B, 3, H, W) -> logits (B, num_classes): conv, BN, GELU, mean pool, 1x1 conv head.

    Written with the shape arithmetic ANE layers use (``B, C, H, W = x.shape``), which
    ``torch.jit.trace`` cannot convert but ``torch.export`` can.
    """

    def __init__(self, num_classes: int = 4, width: int = 6) -> None:
        super().__init__()
        self.config = {"num_classes": num_classes, "width": width}
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.norm = nn.BatchNorm2d(width)
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        y = F.gelu(self.norm(self.stem(x)))
        y = y.reshape(B, -1, H * W).mean(-1).reshape(B, -1, 1, 1)
        return self.head(y).reshape(B, -1)


class WindowRoundtrip(nn.Module):
    """Window partition, a per-window op, window reverse: ``(B, C, 8, 8)`` NCHW, 4x4 windows."""

    def __init__(self, method: str) -> None:
        super().__init__()
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = window_partition(x, 4, channels_last=False, method=self.method)  # type: ignore[arg-type]
        return window_reverse(w * 2, 4, 8, 8, channels_last=False, method=self.method)  # type: ignore[arg-type]

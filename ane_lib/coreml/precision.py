"""The precisions a package is exported in and the executor computes in.

``"fp16"``: what the Neural Engine computes in (a deployment check); ``"fp32"``: a package that
runs on CPU/GPU only, with which the executor reproduces PyTorch's float32 forward (a check of
the executor itself).
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["PRECISIONS", "Precision"]

Precision = Literal["fp16", "fp32"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)

"""The precisions a program is exported in, shared by the Core ML and Core AI exports.

``"fp16"``: half-precision weights, activations and float inputs/outputs, what the Neural Engine
computes in (a deployment check); ``"fp32"``: single precision throughout, a program that runs on
CPU/GPU only, with which a runtime reproduces PyTorch's float32 forward (a check of the runtime
itself).
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["PRECISIONS", "Precision"]

Precision = Literal["fp16", "fp32"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)

"""Activation quantization (W8A8): ``quantize`` and ``dequantize``, as coremltools defines them.

Activation quantization adds ``quantize`` / ``dequantize`` pairs around ops; they use
coremltools' own ``quantize_by_scale_and_zp`` / ``dequantize_by_scale_and_zp``, computing in
float32 from the stored values as every op of the executor does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ane_lib.coreml.ops._registry import OpArgs, register
from ane_lib.coreml.ops.compression import declared, int_or_none

__all__ = ["QUANTIZATION_OPS"]

QUANTIZATION_OPS: tuple[str, ...] = ("quantize", "dequantize")
"""The run-time ops of activation quantization."""


def _optimize_utils() -> Any:
    from coremltools.optimize import _utils

    return _utils


def _scale_and_zero_point(a: OpArgs, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``scale`` and ``zero_point`` promoted to the rank of ``x`` along ``axis``."""
    utils = _optimize_utils()
    axis = int_or_none(a, "axis")
    scale = utils.promote_rank_to_same_as_data(np.asarray(a.numpy("scale")), x, axis)
    zero_point = declared(a, "zero_point")
    if zero_point is not None:
        zero_point = utils.promote_rank_to_same_as_data(zero_point, x, axis)
    return scale, zero_point


@register("quantize")
def _quantize(a: OpArgs) -> np.ndarray:
    # clip(round(x / scale) + zero_point) to int8 / uint8
    x = np.asarray(a.numpy("input"), dtype=np.float32)
    scale, zero_point = _scale_and_zero_point(a, x)
    return _optimize_utils().quantize_by_scale_and_zp(x, scale, zero_point, a.str("output_dtype"))


@register("dequantize")
def _dequantize(a: OpArgs) -> np.ndarray:
    # scale * (x - zero_point)
    x = declared(a, "input")
    scale, zero_point = _scale_and_zero_point(a, x)
    return _optimize_utils().dequantize_by_scale_and_zp(x, scale, zero_point)

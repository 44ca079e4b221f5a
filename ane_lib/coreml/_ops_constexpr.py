"""Compressed weights and quantized activations for the reference executor.

A compressed package (``ane_lib.coreml.compress``, or any ``coremltools.optimize.coreml`` call)
stores a weight not as a ``const`` but as a small program that rebuilds it: int8 values and a
scale per channel (``constexpr_affine_dequantize``, iOS16; ``constexpr_blockwise_shift_scale``,
iOS18), a look-up table and n-bit indices (``constexpr_lut_to_dense``), a bit mask and the
non-zero values (``constexpr_sparse_to_dense``), an fp16 constant widened to fp32
(``constexpr_cast``), and, for joint compression, their sparse-to-sparse forms
(``constexpr_lut_to_sparse``, ``constexpr_sparse_blockwise_shift_scale``). Core ML expands them
when it loads the model; the executor expands them when it reaches them.

The expansion is coremltools' own: each op calls the ``decompress`` function of the op's class in
coremltools (the one its iOS16 or iOS18 definition ships), on inputs of the types the program
declares, so a weight comes out bit for bit as ``coremltools.optimize.coreml.decompress_weights``
makes it. Activation quantization (W8A8) adds ``quantize`` / ``dequantize`` pairs around ops;
they use coremltools' ``quantize_by_scale_and_zp`` / ``dequantize_by_scale_and_zp``, computing in
float32 from the stored values as every op of the executor does.

Importing this module registers the ops in :data:`ane_lib.coreml._ops.OPS`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ane_lib.coreml._ops import OpArgs, _register

__all__ = ["CONSTEXPR_OPS", "QUANTIZATION_OPS"]

CONSTEXPR_OPS: tuple[str, ...] = (
    "constexpr_affine_dequantize",
    "constexpr_blockwise_shift_scale",
    "constexpr_cast",
    "constexpr_lut_to_dense",
    "constexpr_lut_to_sparse",
    "constexpr_sparse_blockwise_shift_scale",
    "constexpr_sparse_to_dense",
)
"""The compile-time ops that rebuild compressed weights."""

QUANTIZATION_OPS: tuple[str, ...] = ("quantize", "dequantize")
"""The run-time ops of activation quantization."""


def _types() -> Any:
    from coremltools.converters.mil.mil import types

    return types


def _optimize_utils() -> Any:
    from coremltools.optimize import _utils

    return _utils


def _declared(a: OpArgs, key: str) -> Any:
    """Input ``key`` in the numpy type the program declares for it (fp16 stays fp16), or None.

    The executor hands float inputs over as float32; a constexpr op's inputs are constants (or
    outputs of other constexpr ops) of their declared type, so the cast back is exact.
    """
    if not a.has(key):
        return None
    var = a.op.inputs[key]
    value = np.asarray(a.get(key))
    types = _types()
    if types.is_str(var.dtype):
        return str(value)
    return value.astype(types.nptype_from_builtin(var.dtype), copy=False)


def _int_or_none(a: OpArgs, key: str) -> int | None:
    value = _declared(a, key)
    return None if value is None else int(value.reshape(()))


def _is_ios16(a: OpArgs) -> bool:
    """The iOS16 definitions carry the output ``shape`` as an input; the iOS18 ones do not."""
    return "shape" in a.op.input_spec.input_types


@_register("constexpr_affine_dequantize")
def _affine_dequantize(a: OpArgs) -> np.ndarray:
    # scale * (quantized_data - zero_point), scale and zero point along ``axis``
    return type(a.op).decompress(
        _declared(a, "quantized_data"),
        _declared(a, "zero_point"),
        _declared(a, "scale"),
        _int_or_none(a, "axis"),
    )


@_register("constexpr_blockwise_shift_scale")
def _blockwise_shift_scale(a: OpArgs) -> np.ndarray:
    # scale * (data - offset), one scale (and offset) per block of data
    return type(a.op).decompress(
        _declared(a, "data"), _declared(a, "scale"), _declared(a, "offset")
    )


@_register("constexpr_cast")
def _cast(a: OpArgs) -> np.ndarray:
    # coremltools' value inference of this op is np.float32(source_val)
    return np.asarray(_declared(a, "source_val"), dtype=np.float32)


@_register("constexpr_lut_to_dense")
def _lut_to_dense(a: OpArgs) -> np.ndarray:
    # lut[indices]: iOS16 packs the n-bit indices into bytes and gives the shape; iOS18 has
    # one table per block of channels and optional vector entries
    if _is_ios16(a):
        return type(a.op).decompress(
            _declared(a, "lut"), _declared(a, "indices"), _declared(a, "shape")
        )
    return type(a.op).decompress(
        _declared(a, "indices"), _declared(a, "lut"), _int_or_none(a, "vector_axis")
    )


@_register("constexpr_sparse_to_dense")
def _sparse_to_dense(a: OpArgs) -> np.ndarray:
    # zeros with nonzero_data written where the mask's bits are set
    if _is_ios16(a):
        return type(a.op).decompress(
            _declared(a, "nonzero_data"), _declared(a, "mask"), _declared(a, "shape")
        )
    return type(a.op).decompress(_declared(a, "nonzero_data"), _declared(a, "mask"))


@_register("constexpr_lut_to_sparse")
def _lut_to_sparse(a: OpArgs) -> tuple[np.ndarray, np.ndarray]:
    return type(a.op).decompress(
        _declared(a, "indices_mask"),
        _declared(a, "indices_nonzero_data"),
        _declared(a, "lut"),
        _int_or_none(a, "vector_axis"),
    )


@_register("constexpr_sparse_blockwise_shift_scale")
def _sparse_blockwise_shift_scale(a: OpArgs) -> tuple[np.ndarray, np.ndarray]:
    return type(a.op).decompress(
        _declared(a, "data_mask"),
        _declared(a, "nonzero_data"),
        _declared(a, "scale"),
        _declared(a, "offset"),
    )


def _scale_and_zero_point(a: OpArgs, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``scale`` and ``zero_point`` promoted to the rank of ``x`` along ``axis``."""
    utils = _optimize_utils()
    axis = _int_or_none(a, "axis")
    scale = utils.promote_rank_to_same_as_data(np.asarray(a.get("scale")), x, axis)
    zero_point = _declared(a, "zero_point")
    if zero_point is not None:
        zero_point = utils.promote_rank_to_same_as_data(zero_point, x, axis)
    return scale, zero_point


@_register("quantize")
def _quantize(a: OpArgs) -> np.ndarray:
    # clip(round(x / scale) + zero_point) to int8 / uint8
    x = np.asarray(a.get("input"), dtype=np.float32)
    scale, zero_point = _scale_and_zero_point(a, x)
    return _optimize_utils().quantize_by_scale_and_zp(
        x, scale, zero_point, str(a.get("output_dtype"))
    )


@_register("dequantize")
def _dequantize(a: OpArgs) -> np.ndarray:
    # scale * (x - zero_point)
    x = _declared(a, "input")
    scale, zero_point = _scale_and_zero_point(a, x)
    return _optimize_utils().dequantize_by_scale_and_zp(x, scale, zero_point)

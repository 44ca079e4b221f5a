"""Compressed weights: the ``constexpr_*`` ops, expanded exactly as coremltools expands them.

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
makes it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ane_lib.coreml.ops._registry import OpArgs, register

__all__ = ["CONSTEXPR_OPS", "declared", "int_or_none"]

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


def _types() -> Any:
    from coremltools.converters.mil.mil import types

    return types


def declared(a: OpArgs, key: str) -> Any:
    """Input ``key`` in the numpy type the program declares for it (fp16 stays fp16), or None.

    The executor hands float inputs over as float32; a constexpr op's inputs are constants (or
    outputs of other constexpr ops) of their declared type, so the cast back is exact.
    """
    if not a.has(key):
        return None
    types = _types()
    dtype = a.var(key).dtype
    if types.is_str(dtype):
        return a.str(key)
    return np.asarray(a.numpy(key)).astype(types.nptype_from_builtin(dtype), copy=False)


def int_or_none(a: OpArgs, key: str) -> int | None:
    value = declared(a, key)
    return None if value is None else int(value.reshape(()))


def _is_ios16(a: OpArgs) -> bool:
    """The iOS16 definitions carry the output ``shape`` as an input; the iOS18 ones do not."""
    return "shape" in a.op.input_spec.input_types


@register("constexpr_affine_dequantize")
def _affine_dequantize(a: OpArgs) -> np.ndarray:
    # scale * (quantized_data - zero_point), scale and zero point along ``axis``
    return type(a.op).decompress(
        declared(a, "quantized_data"),
        declared(a, "zero_point"),
        declared(a, "scale"),
        int_or_none(a, "axis"),
    )


@register("constexpr_blockwise_shift_scale")
def _blockwise_shift_scale(a: OpArgs) -> np.ndarray:
    # scale * (data - offset), one scale (and offset) per block of data
    return type(a.op).decompress(declared(a, "data"), declared(a, "scale"), declared(a, "offset"))


@register("constexpr_cast")
def _cast(a: OpArgs) -> np.ndarray:
    # coremltools' value inference of this op is np.float32(source_val)
    return np.asarray(declared(a, "source_val"), dtype=np.float32)


@register("constexpr_lut_to_dense")
def _lut_to_dense(a: OpArgs) -> np.ndarray:
    # lut[indices]: iOS16 packs the n-bit indices into bytes and gives the shape; iOS18 has
    # one table per block of channels and optional vector entries
    if _is_ios16(a):
        return type(a.op).decompress(
            declared(a, "lut"), declared(a, "indices"), declared(a, "shape")
        )
    return type(a.op).decompress(
        declared(a, "indices"), declared(a, "lut"), int_or_none(a, "vector_axis")
    )


@register("constexpr_sparse_to_dense")
def _sparse_to_dense(a: OpArgs) -> np.ndarray:
    # zeros with nonzero_data written where the mask's bits are set
    if _is_ios16(a):
        return type(a.op).decompress(
            declared(a, "nonzero_data"), declared(a, "mask"), declared(a, "shape")
        )
    return type(a.op).decompress(declared(a, "nonzero_data"), declared(a, "mask"))


@register("constexpr_lut_to_sparse")
def _lut_to_sparse(a: OpArgs) -> tuple[np.ndarray, np.ndarray]:
    return type(a.op).decompress(
        declared(a, "indices_mask"),
        declared(a, "indices_nonzero_data"),
        declared(a, "lut"),
        int_or_none(a, "vector_axis"),
    )


@register("constexpr_sparse_blockwise_shift_scale")
def _sparse_blockwise_shift_scale(a: OpArgs) -> tuple[np.ndarray, np.ndarray]:
    return type(a.op).decompress(
        declared(a, "data_mask"),
        declared(a, "nonzero_data"),
        declared(a, "scale"),
        declared(a, "offset"),
    )

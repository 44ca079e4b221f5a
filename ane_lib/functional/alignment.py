"""The Neural Engine's 64-byte last-axis alignment, as arithmetic.

Apple's 2022 transformer post states that the last axis of every tensor the Neural Engine holds
is contiguous and aligned to 64 bytes: a last axis of ``n`` values of ``s`` bytes each occupies
``ceil(n * s / 64) * 64`` bytes. A last axis of one fp16 value therefore takes 32 times its size,
one 8-bit value 64 times; the 2024 vision post's NCHW 7x7 window has a last axis of 7 fp16
values, 14 bytes, padded by 50.

These functions compute the bytes a tensor occupies under that rule (``padded_nbytes``), the
bytes its values need (``real_nbytes``), and their ratio (``padding_overhead``). ``dtype`` may
be a ``torch.dtype``, a numpy dtype or scalar type, or a name such as ``"fp16"``,
``"float16"``, ``"int8"``. A rank-0 shape ``()`` is counted as one value on a last axis of 1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import torch

__all__ = [
    "ALIGNMENT_BYTES",
    "DTypeLike",
    "dtype_nbytes",
    "padded_last_axis_bytes",
    "padded_nbytes",
    "real_nbytes",
    "padding_nbytes",
    "padding_overhead",
]

ALIGNMENT_BYTES = 64
"""Every last axis starts on, and is padded to, a multiple of this many bytes."""

DTypeLike: TypeAlias = torch.dtype | np.dtype | type | str

# Short names used by Core ML / MIL and in the literature; anything else goes through np.dtype.
_NAMED_SIZES: dict[str, int] = {
    "fp16": 2,
    "bf16": 2,
    "bfloat16": 2,
    "fp32": 4,
    "fp64": 8,
    "fp8": 1,
    "int4": 0,  # sub-byte: rejected below with a clear message
    "uint4": 0,
}
_SUB_BYTE_TORCH = re.compile(r"u?int[1-7]|.*x2")


def dtype_nbytes(dtype: DTypeLike) -> int:
    """Bytes per value of ``dtype`` (torch dtype, numpy dtype or type, or a name like ``"fp16"``).

    >>> dtype_nbytes("fp16"), dtype_nbytes(torch.int8), dtype_nbytes(np.float32)
    (2, 1, 4)
    """
    size: int | None = None
    if isinstance(dtype, torch.dtype):
        # torch reports itemsize 1 for packed sub-byte types (uint4, int2, float4_e2m1fn_x2, ...)
        packed = _SUB_BYTE_TORCH.fullmatch(str(dtype).removeprefix("torch."))
        size = 0 if packed else int(dtype.itemsize)
    elif isinstance(dtype, str):
        key = dtype.strip().lower()
        if key in _NAMED_SIZES:
            size = _NAMED_SIZES[key]
        else:
            try:
                size = int(np.dtype(key).itemsize)
            except TypeError:
                size = None
    elif isinstance(dtype, np.dtype) or (isinstance(dtype, type) and issubclass(dtype, np.generic)):
        size = int(np.dtype(dtype).itemsize)
    else:
        raise TypeError(
            f"dtype must be a torch.dtype, a numpy dtype or a dtype name such as 'fp16', "
            f"got {dtype!r} ({type(dtype).__name__})"
        )
    if size is None:
        raise ValueError(f"dtype {dtype!r} is not a known dtype name (e.g. 'fp16', 'int8')")
    if size == 0:
        raise ValueError(f"dtype {dtype!r} packs values below one byte; only whole-byte types")
    return size


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise TypeError(f"shape must be a sequence of ints, got {shape!r} ({type(shape).__name__})")
    dims = tuple(shape)
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise TypeError(f"shape must contain only ints, got {shape!r}")
        if d < 1:
            raise ValueError(f"shape must have every dimension >= 1, got {dims}")
    return tuple(int(d) for d in dims)


def padded_last_axis_bytes(n: int, dtype: DTypeLike = torch.float16) -> int:
    """Bytes one last axis of ``n`` values occupies: ``ceil(n * itemsize / 64) * 64``.

    >>> padded_last_axis_bytes(7, "fp16")  # the 2024 post's NCHW 7x7 window row
    64
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an int, got {n!r} ({type(n).__name__})")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    row = int(n) * dtype_nbytes(dtype)
    return -(-row // ALIGNMENT_BYTES) * ALIGNMENT_BYTES


def padded_nbytes(shape: Sequence[int], dtype: DTypeLike = torch.float16) -> int:
    """Bytes a tensor of ``shape`` occupies when its last axis is padded to 64 bytes.

    ``shape = (..., n)``: ``prod(shape[:-1]) * padded_last_axis_bytes(n, dtype)``.
    """
    dims = _check_shape(shape) or (1,)
    return math.prod(dims[:-1]) * padded_last_axis_bytes(dims[-1], dtype)


def real_nbytes(shape: Sequence[int], dtype: DTypeLike = torch.float16) -> int:
    """Bytes the values of a tensor of ``shape`` need: ``prod(shape) * itemsize``."""
    dims = _check_shape(shape)
    return math.prod(dims) * dtype_nbytes(dtype)


def padding_nbytes(shape: Sequence[int], dtype: DTypeLike = torch.float16) -> int:
    """Bytes of padding alone: ``padded_nbytes - real_nbytes``."""
    return padded_nbytes(shape, dtype) - real_nbytes(shape, dtype)


def padding_overhead(shape: Sequence[int], dtype: DTypeLike = torch.float16) -> float:
    """How many times its real size a tensor occupies: ``padded_nbytes / real_nbytes`` (>= 1).

    >>> padding_overhead((1, 64, 1, 1), "fp16"), padding_overhead((1, 64, 1, 1), "int8")
    (32.0, 64.0)
    """
    return padded_nbytes(shape, dtype) / real_nbytes(shape, dtype)

"""64-byte last-axis arithmetic: the sources' numbers, properties, and argument errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ane_lib.functional.alignment import (
    ALIGNMENT_BYTES,
    dtype_nbytes,
    padded_last_axis_bytes,
    padded_nbytes,
    padding_nbytes,
    padding_overhead,
    real_nbytes,
)

FP16_SPELLINGS = ["fp16", "float16", "FP16", np.float16, np.dtype("float16"), torch.float16]
INT8_SPELLINGS = ["int8", "uint8", "fp8", np.int8, np.uint8, torch.int8, torch.float8_e4m3fn]


def test_alignment_is_64_bytes() -> None:
    assert ALIGNMENT_BYTES == 64


@pytest.mark.parametrize("dtype", FP16_SPELLINGS)
def test_fp16_spellings(dtype: object) -> None:
    assert dtype_nbytes(dtype) == 2  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", INT8_SPELLINGS)
def test_8bit_spellings(dtype: object) -> None:
    assert dtype_nbytes(dtype) == 1  # type: ignore[arg-type]


@pytest.mark.parametrize(("dtype", "size"), [("fp32", 4), (torch.float32, 4), (np.int32, 4)])
def test_wider_types(dtype: object, size: int) -> None:
    assert dtype_nbytes(dtype) == size  # type: ignore[arg-type]


def test_last_axis_of_one_costs_32x_in_fp16_and_64x_in_8bit() -> None:
    """Apple 2022: a last axis of 1 is padded to 64 bytes."""
    shape = (1, 768, 1, 1)
    assert padding_overhead(shape, torch.float16) == 32.0
    assert padding_overhead(shape, "int8") == 64.0
    assert padded_nbytes(shape, "fp16") == 768 * 64


def test_seven_wide_fp16_window_row() -> None:
    """Apple 2024: a 7-wide fp16 last axis is 14 bytes, padded by 50 bytes."""
    assert real_nbytes((7,), "fp16") == 14
    assert padded_last_axis_bytes(7, "fp16") == 64
    assert padding_nbytes((7,), "fp16") == 50
    # the NCHW windows of a 224x224, C=96 map cut into 7x7 windows, (B*nH*nW, C, 7, 7)
    shape = (32 * 32, 96, 7, 7)
    assert padded_nbytes(shape) == 32 * 32 * 96 * 7 * 64
    assert padding_overhead(shape) == pytest.approx(64 / 14)
    # in NHWC, (B*nH*nW, 7, 7, 96): 192-byte rows, no padding at all
    assert padding_overhead((32 * 32, 7, 7, 96)) == 1.0


def test_rank0_counts_as_one_value() -> None:
    assert padded_nbytes(()) == 64
    assert real_nbytes(()) == 2


@settings(max_examples=200, deadline=None)
@given(
    shape=st.lists(st.integers(1, 300), min_size=1, max_size=5),
    dtype=st.sampled_from(["fp16", "fp32", "int8", torch.float16, np.float32, torch.bool]),
)
def test_properties(shape: list[int], dtype: object) -> None:
    itemsize = dtype_nbytes(dtype)  # type: ignore[arg-type]
    padded = padded_nbytes(shape, dtype)  # type: ignore[arg-type]
    real = real_nbytes(shape, dtype)  # type: ignore[arg-type]
    row = shape[-1] * itemsize
    # independent form: the smallest multiple of 64 that holds a row, times the number of rows
    rows = math.prod(shape[:-1])
    assert padded == rows * next(m for m in range(64, row + 64, 64) if m >= row)
    assert real == math.prod(shape) * itemsize
    assert padded >= real
    assert (padded == real) == (row % 64 == 0)
    assert padded - real < rows * 64
    assert padding_nbytes(shape, dtype) == padded - real  # type: ignore[arg-type]
    assert padding_overhead(shape, dtype) == padded / real  # type: ignore[arg-type]
    assert 1.0 <= padding_overhead(shape, dtype) <= 64.0  # type: ignore[arg-type]
    # only the last axis is padded: moving a wide axis last never costs more than a 1-wide one
    assert padded_nbytes([*shape, 1], dtype) == real * 64 // itemsize  # type: ignore[arg-type]


def test_torch_size_and_numpy_ints_accepted() -> None:
    x = torch.empty(2, 3, 7, dtype=torch.float16)
    assert padded_nbytes(x.shape, x.dtype) == 6 * 64
    assert real_nbytes(x.shape, x.dtype) == x.numel() * x.element_size()
    assert padded_nbytes(np.zeros((2, 40)).shape, np.float16) == 2 * 128
    assert padded_nbytes([np.int64(2), np.int64(3)]) == 128


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"shape.*\(2, 0\)"):
        padded_nbytes((2, 0))
    with pytest.raises(TypeError, match=r"shape.*ints.*3\.0"):
        padded_nbytes((2, 3.0))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"shape.*sequence.*\b7\b"):
        padded_nbytes(7)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"shape.*sequence.*'77'"):
        real_nbytes("77")
    with pytest.raises(ValueError, match=r"\bn\b.*\b0\b"):
        padded_last_axis_bytes(0)
    with pytest.raises(TypeError, match=r"\bn\b.*int.*True"):
        padded_last_axis_bytes(True)
    with pytest.raises(ValueError, match=r"dtype.*'fp17'"):
        padded_nbytes((3,), "fp17")
    with pytest.raises(TypeError, match=r"dtype.*\b16\b"):
        padded_nbytes((3,), 16)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"byte"):
        padded_nbytes((3,), torch.uint4)
    with pytest.raises(ValueError, match=r"byte"):
        padded_nbytes((3,), "int4")

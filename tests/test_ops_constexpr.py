"""The executor's constexpr and quantization ops (ane_lib.coreml.ops: compression, quantization).

Each op is built with coremltools' MIL builder from random compressed data (hypothesis-drawn
shapes, bit widths and axes) and run by the executor. Two references: the formula of the op's
definition in coremltools' documentation, written out here in numpy, and coremltools' own
value inference of the op (``materialized_val_inference`` / ``value_inference``). Whole
compressed packages are checked against ``decompress_weights`` in tests/test_compress.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ane_lib.coreml.executor import SUPPORTED_OPS, run
from ane_lib.coreml.ops import REGISTRY
from ane_lib.coreml.ops.compression import CONSTEXPR_OPS
from ane_lib.coreml.ops.quantization import QUANTIZATION_OPS
from ane_lib.coreml.program import import_coremltools

ct = import_coremltools()
from coremltools.converters.mil import Builder as mb  # noqa: E402, N813
from coremltools.converters.mil.mil import types  # noqa: E402
from coremltools.optimize import _utils as optimize_utils  # noqa: E402

IOS16, IOS17, IOS18 = ct.target.iOS16, ct.target.iOS17, ct.target.iOS18
FLOATS = {"fp16": np.float16, "fp32": np.float32}


def _weight_program(build: Callable[[], Any], shape: tuple[int, ...], opset: Any) -> Any:
    """A program ``x + w`` where ``w = build()`` is the constexpr output under test."""

    def fn(x: Any) -> Any:
        w = build()
        if w.dtype != types.fp32:
            w = mb.cast(x=w, dtype="fp32")
        return mb.add(x=x, y=w, name="out")

    return mb.program(input_specs=[mb.TensorSpec(shape=shape)], opset_version=opset)(fn)


def _expanded(program: Any, op_type: str, precision: str = "fp32") -> tuple[np.ndarray, Any]:
    """(the executor's value of the first ``op_type`` op's last output, that op)."""
    function = program.functions["main"]
    op = next(o for o in function.operations if o.op_type == op_type)
    x = np.zeros(tuple(function.inputs["x"].shape), np.float32)
    value = run(program, {"x": x}, precision=precision, outputs=[op.outputs[-1].name])
    return next(iter(value.values())), op


def _check(got: np.ndarray, want: np.ndarray, op: Any) -> None:
    """Equal to the formula and to coremltools' value inference of the op, bit for bit."""
    inferred = op.materialized_val_inference()
    inferred = inferred[-1] if isinstance(inferred, tuple) else inferred
    np.testing.assert_array_equal(np.asarray(inferred, np.float32), np.asarray(want, np.float32))
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


def test_every_op_is_registered_and_listed() -> None:
    for name in (*CONSTEXPR_OPS, *QUANTIZATION_OPS):
        assert name in REGISTRY and name in SUPPORTED_OPS


shapes = st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple)


@settings(max_examples=10, deadline=None)
@given(shape=shapes, data=st.data())
def test_affine_dequantize_ios16(shape: tuple[int, ...], data: st.DataObject) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    src = data.draw(st.sampled_from([np.int8, np.uint8]))
    dst = FLOATS[data.draw(st.sampled_from(["fp16", "fp32"]))]
    info = np.iinfo(src)
    q = rng.integers(info.min, info.max + 1, size=shape).astype(src)
    n = shape[axis]
    per_channel = data.draw(st.booleans())
    scale = (rng.random(n if per_channel else ()) + 0.1).astype(dst)
    zero_point = rng.integers(info.min, info.max + 1, size=np.shape(scale)).astype(src)
    program = _weight_program(
        lambda: mb.constexpr_affine_dequantize(
            quantized_data=q, zero_point=zero_point, scale=scale, axis=axis
        ),
        shape,
        IOS16,
    )
    got, op = _expanded(program, "constexpr_affine_dequantize")
    view = [1] * len(shape)
    view[axis] = -1
    s = scale.reshape(view) if per_channel else scale
    z = zero_point.reshape(view) if per_channel else zero_point
    want = ((q.astype(np.float32) - z.astype(np.float32)) * s.astype(np.float32)).astype(dst)
    _check(got, want, op)


@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_blockwise_shift_scale_ios18(data: st.DataObject) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    blocks = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    block_size = data.draw(st.lists(st.integers(1, 4), min_size=len(blocks), max_size=len(blocks)))
    shape = tuple(b * s for b, s in zip(blocks, block_size, strict=True))
    src = data.draw(st.sampled_from(["int8", "uint8", "int4", "uint4"]))
    dst = FLOATS[data.draw(st.sampled_from(["fp16", "fp32"]))]
    np_src = types.nptype_from_builtin(types.string_to_builtin(src))
    low, high = {"int8": (-128, 127), "uint8": (0, 255), "int4": (-8, 7), "uint4": (0, 15)}[src]
    q = rng.integers(low, high + 1, size=shape).astype(np_src)
    scale = (rng.random(tuple(blocks)) + 0.1).astype(dst)
    with_offset = data.draw(st.booleans())
    offset = rng.integers(low, high + 1, size=tuple(blocks)).astype(np_src)
    program = _weight_program(
        lambda: mb.constexpr_blockwise_shift_scale(
            data=q, scale=scale, offset=offset if with_offset else None
        ),
        shape,
        IOS18,
    )
    got, op = _expanded(program, "constexpr_blockwise_shift_scale")
    expand = np.ones(block_size, dtype=np.int64)  # repeat each block value over its block
    s = np.kron(scale.astype(np.float32), expand)
    o = np.kron(offset.astype(np.float32), expand) if with_offset else 0.0
    want = (s * (q.astype(np.float32) - o)).astype(dst)
    _check(got, want, op)


@settings(max_examples=10, deadline=None)
@given(shape=shapes, nbits=st.sampled_from([1, 2, 4, 6, 8]), data=st.data())
def test_lut_to_dense_ios16(shape: tuple[int, ...], nbits: int, data: st.DataObject) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    dst = FLOATS[data.draw(st.sampled_from(["fp16", "fp32"]))]
    lut = rng.standard_normal(2**nbits).astype(dst)
    indices = rng.integers(0, 2**nbits, size=shape).astype(np.uint8)
    packed = optimize_utils.pack_elements_into_bits(indices.reshape(-1), nbits)
    program = _weight_program(
        lambda: mb.constexpr_lut_to_dense(
            indices=packed, lut=lut, shape=np.array(shape, dtype=np.uint32)
        ),
        shape,
        IOS16,
    )
    got, op = _expanded(program, "constexpr_lut_to_dense")
    _check(got, lut[indices], op)


@settings(max_examples=10, deadline=None)
@given(nbits=st.sampled_from([1, 2, 3, 4, 6, 8]), data=st.data())
def test_lut_to_dense_ios18_grouped_tables(nbits: int, data: st.DataObject) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    groups = data.draw(st.integers(1, 3))
    group_size = data.draw(st.integers(1, 4))
    rest = data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=2))
    shape = (groups * group_size, *rest)
    lut = rng.standard_normal((groups, *[1] * len(rest), 2**nbits, 1)).astype(np.float16)
    indices = rng.integers(0, 2**nbits, size=shape)
    indices = indices.astype(types.nptype_from_builtin(types.string_to_builtin(f"uint{nbits}")))
    program = _weight_program(
        lambda: mb.constexpr_lut_to_dense(indices=indices, lut=lut), shape, IOS18
    )
    got, op = _expanded(program, "constexpr_lut_to_dense", precision="fp16")
    table = lut.reshape(groups, 2**nbits)  # one table per block of group_size rows
    want = table[np.arange(shape[0])[:, None] // group_size, indices.reshape(shape[0], -1)]
    _check(got, want.reshape(shape), op)


@settings(max_examples=10, deadline=None)
@given(shape=shapes, ios=st.sampled_from([16, 18]), data=st.data())
def test_sparse_to_dense(shape: tuple[int, ...], ios: int, data: st.DataObject) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    mask = rng.random(shape) < 0.5
    values = rng.standard_normal(int(mask.sum())).astype(np.float16)
    if ios == 16:
        packed = np.packbits(mask.reshape(-1).astype(np.uint8), bitorder="little")

        def build() -> Any:
            return mb.constexpr_sparse_to_dense(
                nonzero_data=values, mask=packed, shape=np.array(shape, dtype=np.uint32)
            )

    else:

        def build() -> Any:
            return mb.constexpr_sparse_to_dense(
                nonzero_data=values, mask=mask.astype(types.np_uint1_dtype)
            )

    program = _weight_program(build, shape, IOS16 if ios == 16 else IOS18)
    got, op = _expanded(program, "constexpr_sparse_to_dense")
    want = np.zeros(shape, np.float16)
    want[mask] = values  # row-major order, as the op defines it
    _check(got, want, op)


def test_cast_widens_fp16_to_fp32() -> None:
    values = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float16)
    program = _weight_program(
        lambda: mb.constexpr_cast(source_val=values, output_dtype="fp32"), (3, 4), IOS16
    )
    got, op = _expanded(program, "constexpr_cast")
    _check(got, values.astype(np.float32), op)


def test_joint_sparse_palettized_and_sparse_quantized_chains() -> None:
    """lut_to_sparse and sparse_blockwise_shift_scale feed sparse_to_dense (iOS18)."""
    rng = np.random.default_rng(0)
    shape = (4, 6)
    mask = (rng.random(shape) < 0.5).astype(types.np_uint1_dtype)
    nnz = int(mask.sum())
    lut = rng.standard_normal((1, 1, 4, 1)).astype(np.float16)
    idx = rng.integers(0, 4, size=nnz).astype(types.np_uint2_dtype)
    q = rng.integers(-128, 128, size=nnz).astype(np.int8)
    scale = (rng.random((4, 1)) + 0.1).astype(np.float16)

    def palettized() -> Any:
        out_mask, nonzero = mb.constexpr_lut_to_sparse(
            indices_mask=mask, indices_nonzero_data=idx, lut=lut
        )
        return mb.constexpr_sparse_to_dense(nonzero_data=nonzero, mask=out_mask)

    def quantized() -> Any:
        out_mask, nonzero = mb.constexpr_sparse_blockwise_shift_scale(
            data_mask=mask, nonzero_data=q, scale=scale
        )
        return mb.constexpr_sparse_to_dense(nonzero_data=nonzero, mask=out_mask)

    dense = mask.astype(bool)
    want_pal = np.zeros(shape, np.float16)
    want_pal[dense] = lut.reshape(-1)[idx]
    want_q = np.zeros(shape, np.float32)
    want_q[dense] = q
    want_q = (want_q * np.repeat(scale.astype(np.float32), 1, axis=0)).astype(np.float16)
    for build, want in ((palettized, want_pal), (quantized, want_q)):
        program = _weight_program(build, shape, IOS18)
        got, _ = _expanded(program, "constexpr_sparse_to_dense")
        np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))


@settings(max_examples=10, deadline=None)
@given(shape=shapes, data=st.data())
def test_quantize_dequantize_ios17(shape: tuple[int, ...], data: st.DataObject) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    dtype = data.draw(st.sampled_from(["int8", "uint8"]))
    np_dtype = np.int8 if dtype == "int8" else np.uint8
    per_channel = data.draw(st.booleans())
    axis = data.draw(st.integers(0, len(shape) - 1))
    n = shape[axis]
    scale = (rng.random(n if per_channel else ()) * 0.1 + 0.01).astype(np.float32)
    zero_point = rng.integers(-20, 20, size=np.shape(scale)) + (0 if dtype == "int8" else 128)
    zero_point = zero_point.astype(np_dtype)
    kwargs = {"axis": axis} if per_channel else {}

    def fn(inp: Any) -> Any:
        q = mb.quantize(
            input=inp, scale=scale, zero_point=zero_point, output_dtype=dtype, name="q", **kwargs
        )
        return mb.dequantize(input=q, scale=scale, zero_point=zero_point, name="dq", **kwargs)

    program = mb.program(input_specs=[mb.TensorSpec(shape=shape)], opset_version=IOS17)(fn)
    out = run(program, {"inp": x}, precision="fp32", outputs=["q", "dq"])
    view = [1] * len(shape)
    view[axis] = -1
    s = scale.reshape(view) if per_channel else scale
    z = (zero_point.reshape(view) if per_channel else zero_point).astype(np.float32)
    info = np.iinfo(np_dtype)
    want_q = np.clip(np.round(x / s) + z, info.min, info.max).astype(np_dtype)
    np.testing.assert_array_equal(out["q"], want_q)
    np.testing.assert_array_equal(out["dq"], (want_q.astype(np.float32) - z) * s)

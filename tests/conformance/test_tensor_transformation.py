"""Conformance of the layout ops (coremltools ``tensor_transformation``).

Definitions as in coremltools' docstrings; in particular ``reshape``'s ``0`` copies the axis of
``x`` at the same position counted from the right (iOS17) and ``-1`` takes the rest;
``slice_by_index`` is NumPy slicing with begin/end masks and squeeze masks; ``squeeze`` leaves
axes that are not 1 alone (PyTorch's rule); ``space_to_depth`` / ``depth_to_space`` use
TensorFlow's channel order and ``space_to_batch`` / ``batch_to_space`` TensorFlow's batch order
(Core ML's outputs in coremltools' op tests, asserted below).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conformance._harness import IOS15, IOS17, IOS18, build, check, mb, run_built

_R = np.random.default_rng(41)


def _x(*shape: int) -> np.ndarray:
    return _R.normal(size=shape).astype(np.float32)


@pytest.mark.parametrize(
    ("shape", "target", "expected"),
    [
        ((2, 3, 4), [6, 4], (6, 4)),
        ((2, 3, 4), [0, -1], (3, 8)),  # 0 copies x's axis at that place from the right
        ((2, 3, 4), [-1, 0], (6, 4)),
        ((2, 3, 4), [0, 0, 0], (2, 3, 4)),
        ((2, 50), [1, 0, -1, 0], (1, 1, 2, 50)),  # the iOS17 example of the definition
        ((2, 3, 4), [4, -1, 1], (4, 6, 1)),
    ],
)
def test_reshape(shape: Any, target: list[int], expected: Any) -> None:
    x = _x(*shape)
    check(
        "reshape",
        lambda x: mb.reshape(x=x, shape=np.array(target, np.int32)),
        {"x": x},
        lambda x: x.reshape(expected),
        what=str(target),
    )


def test_reshape_like() -> None:
    # the definition's example: ref shapes (2, 3, 4) and (1, 5, 6), begins (0, 1), ends (2, 0),
    # end_masks (False, True) -> (2, 3, 5, 6)
    x = _x(180)
    ref1, ref2 = _x(2, 3, 4), _x(1, 5, 6)
    check(
        "reshape_like",
        lambda x, a, b: mb.reshape_like(
            x=x, ref_tensors=(a, b), begins=(0, 1), ends=(2, 0), end_masks=(False, True)
        ),
        {"x": x, "a": ref1, "b": ref2},
        lambda x, a, b: x.reshape(2, 3, 5, 6),
        opset=IOS17,
    )


@settings(max_examples=10, deadline=None)
@given(perm=st.permutations(range(4)))
def test_transpose(perm: list[int]) -> None:
    x = _x(2, 3, 4, 5)
    check(
        "transpose",
        lambda x: mb.transpose(x=x, perm=list(perm)),
        {"x": x},
        lambda x: x.transpose(perm),
    )


@pytest.mark.parametrize("axes", [[0], [-1], [1, 3], [-1, 0], [0, 1, 2]])
def test_expand_dims(axes: list[int]) -> None:
    x = _x(2, 3)
    rank = 2 + len(axes)

    def reference(x: Any) -> Any:
        return np.expand_dims(x, tuple(sorted(a % rank for a in axes)))

    check(
        "expand_dims", lambda x: mb.expand_dims(x=x, axes=axes), {"x": x}, reference, what=str(axes)
    )


@pytest.mark.parametrize("axes", [None, [0], [-1], [0, 2], [1, 3]])
def test_squeeze(axes: Any) -> None:
    x = _x(1, 3, 1, 4)

    def reference(x: Any) -> Any:
        if axes is None:
            return np.squeeze(x)
        return np.squeeze(x, tuple(a % 4 for a in axes if x.shape[a] == 1))  # size > 1: kept

    kwargs = {} if axes is None else {"axes": axes}
    # coremltools' value inference squeezes with NumPy, which rejects axes that are not 1
    unit = axes is None or all(x.shape[a] == 1 for a in axes)
    check(
        "squeeze",
        lambda x: mb.squeeze(x=x, **kwargs),
        {"x": x},
        reference,
        what=str(axes),
        value_inference=unit,
    )


@pytest.mark.parametrize("axes", [None, [0], [-1], [0, 2]])
def test_reverse(axes: Any) -> None:
    x = _x(2, 3, 4)
    kwargs = {} if axes is None else {"axes": axes}
    check(
        "reverse",
        lambda x: mb.reverse(x=x, **kwargs),
        {"x": x},
        lambda x: np.flip(x, None if axes is None else tuple(axes)),
    )


@pytest.mark.parametrize(("seq_axis", "batch_axis"), [(0, 1), (1, 0), (2, 0), (1, 2)])
def test_reverse_sequence(seq_axis: int, batch_axis: int) -> None:
    x = _x(3, 4, 5)
    lengths = _R.integers(0, x.shape[seq_axis] + 1, x.shape[batch_axis]).astype(np.int32)

    def reference(x: Any) -> Any:
        out = x.copy()
        for b, n in enumerate(lengths):
            index: list[Any] = [slice(None)] * 3
            index[batch_axis], index[seq_axis] = b, slice(0, n)
            part = x[tuple(index)]
            out[tuple(index)] = np.flip(part, seq_axis - (batch_axis < seq_axis))
        return out

    check(
        "reverse_sequence",
        lambda x: mb.reverse_sequence(
            x=x, lengths=lengths, seq_axis=seq_axis, batch_axis=batch_axis
        ),
        {"x": x},
        reference,
    )


@st.composite
def _slices(draw: Any) -> dict[str, Any]:
    shape = draw(st.lists(st.integers(1, 6), min_size=1, max_size=4))
    spec: dict[str, list[Any]] = {
        k: [] for k in ("begin", "end", "stride", "begin_mask", "end_mask", "squeeze_mask")
    }
    for d in shape:
        squeeze = draw(st.booleans()) and draw(st.booleans())
        spec["squeeze_mask"].append(squeeze)
        spec["begin"].append(draw(st.integers(-d, d - 1)))
        # ends in [-d, d]: coremltools rewrites an end beyond the start of the axis to 0 when
        # it builds the op (Core ML's index cannot point before 0), where NumPy reads -1
        spec["end"].append(draw(st.integers(-d, d)))
        spec["stride"].append(1 if squeeze else draw(st.sampled_from([1, 2, 3, -1, -2])))
        spec["begin_mask"].append(draw(st.booleans()))
        spec["end_mask"].append(draw(st.booleans()))
    return {"shape": shape, **spec}


def _numpy_slice(x: Any, s: dict[str, Any]) -> Any:
    index: list[Any] = []
    for i in range(x.ndim):
        if s["squeeze_mask"][i]:  # begin_mask applies first: index 0
            index.append(0 if s["begin_mask"][i] else s["begin"][i])
        else:
            index.append(
                slice(
                    None if s["begin_mask"][i] else s["begin"][i],
                    None if s["end_mask"][i] else s["end"][i],
                    s["stride"][i],
                )
            )
    return x[tuple(index)]


@settings(max_examples=100, deadline=None)
@given(s=_slices())
def test_slice_by_index(s: dict[str, Any]) -> None:
    x = _x(*s["shape"])
    # empty results and scalars are not tensors a program can hold
    assume(_numpy_slice(x, s).size > 0 and not all(s["squeeze_mask"]))
    kwargs = {
        k: np.array(v, np.int32 if k in ("begin", "end", "stride") else bool)
        for k, v in s.items()
        if k != "shape"
    }
    check(
        "slice_by_index",
        lambda x: mb.slice_by_index(x=x, **kwargs),
        {"x": x},
        lambda x: _numpy_slice(x, s),
        what=str(s),
    )


@settings(max_examples=60, deadline=None)
@given(s=_slices())
def test_slice_update(s: dict[str, Any]) -> None:
    x = _x(*s["shape"])
    target = _numpy_slice(x, s)
    assume(target.size > 0 and target.ndim > 0)  # the definition rules out rank-0 updates
    update = _x(*target.shape)
    kwargs = {
        k: np.array(v, np.int32 if k in ("begin", "end", "stride") else bool)
        for k, v in s.items()
        if k != "shape"
    }

    def reference(x: Any, u: Any) -> Any:
        out = x.copy()
        view = _numpy_slice(out, s)  # a view: writing it writes out
        view[...] = u
        return out

    check(
        "slice_update",
        lambda x, u: mb.slice_update(x=x, update=u, **kwargs),
        {"x": x, "u": update},
        reference,
        opset=IOS18,
        what=str(s),
    )


@pytest.mark.parametrize(
    ("begin", "size"),
    # (negative begins are not in the definition, and coremltools' type inference mis-sizes them)
    [([0, 1, 2], [2, 2, 2]), ([1, 0, 3], [-1, 3, 2]), ([2, 1, 0], [1, -1, -1])],
)
def test_slice_by_size(begin: list[int], size: list[int]) -> None:
    x = _x(3, 4, 5)

    def reference(x: Any) -> Any:
        index = []
        for b, n, d in zip(begin, size, x.shape, strict=True):
            b = b + d if b < 0 else b
            index.append(slice(b, d if n == -1 else b + n))
        return x[tuple(index)]

    check(
        "slice_by_size",
        lambda x: mb.slice_by_size(
            x=x, begin=np.array(begin, np.int32), size=np.array(size, np.int32)
        ),
        {"x": x},
        reference,
    )


@pytest.mark.parametrize(("axis", "size", "stride"), [(0, 2, 1), (1, 3, 2), (-1, 2, 3), (2, 5, 1)])
def test_sliding_windows(axis: int, size: int, stride: int) -> None:
    x = _x(4, 5, 6)
    a = axis % 3

    def reference(x: Any) -> Any:
        starts = range(0, x.shape[a] - size + 1, stride)
        return np.stack([np.take(x, np.arange(s0, s0 + size), axis=a) for s0 in starts], axis=a)

    check(
        "sliding_windows",
        lambda x: mb.sliding_windows(x=x, axis=axis, size=size, stride=stride),
        {"x": x},
        reference,
    )


def test_pixel_shuffle_and_unshuffle() -> None:
    # PyTorch's PixelShuffle: (N, C f^2, H, W) -> (N, C, H f, W f), channel-major ("CRD")
    x = _x(2, 8, 3, 4)

    def shuffle(x: Any) -> Any:
        n, c, h, w = x.shape
        return (
            x.reshape(n, c // 4, 2, 2, h, w)
            .transpose(0, 1, 4, 2, 5, 3)
            .reshape(n, c // 4, h * 2, w * 2)
        )

    def unshuffle(x: Any) -> Any:
        n, c, h, w = x.shape
        return (
            x.reshape(n, c, h // 2, 2, w // 2, 2)
            .transpose(0, 1, 3, 5, 2, 4)
            .reshape(n, c * 4, h // 2, w // 2)
        )

    check("pixel_shuffle", lambda x: mb.pixel_shuffle(x=x, upscale_factor=2), {"x": x}, shuffle)
    check(
        "pixel_unshuffle",
        lambda x: mb.pixel_unshuffle(x=x, downscale_factor=np.uint32(2)),
        {"x": _x(2, 3, 4, 6)},
        unshuffle,
        opset=IOS17,
    )


def _space_to_depth(x: Any, b: int) -> Any:
    # TensorFlow's order: out[n, (i b + j) C + c, h, w] = x[n, c, h b + i, w b + j]
    n, c, h, w = x.shape
    out = np.zeros((n, b * b * c, h // b, w // b))
    for i in range(b):
        for j in range(b):
            out[:, (i * b + j) * c : (i * b + j + 1) * c] = x[:, :, i::b, j::b]
    return out


@pytest.mark.parametrize("block", [2, 3])
def test_space_to_depth_and_back(block: int) -> None:
    x = _x(2, 3, 6, 6)
    check(
        "space_to_depth",
        lambda x: mb.space_to_depth(x=x, block_size=block),
        {"x": x},
        lambda x: _space_to_depth(x, block),
    )
    y = _x(2, 2 * block * block, 2, 3)

    def depth_to_space(y: Any) -> Any:  # the inverse of space_to_depth
        n, cb, h, w = y.shape
        c = cb // (block * block)
        out = np.zeros((n, c, h * block, w * block))
        for i in range(block):
            for j in range(block):
                out[:, :, i::block, j::block] = y[:, (i * block + j) * c : (i * block + j + 1) * c]
        return out

    check(
        "depth_to_space",
        lambda y: mb.depth_to_space(x=y, block_size=block),
        {"y": y},
        depth_to_space,
    )


def _space_to_batch(x: Any, block: Any, pads: Any) -> Any:
    # TensorFlow's order: out[(i bw + j) N + n, c, h, w] = padded[n, c, h bh + i, w bw + j]
    xp = np.pad(x, [(0, 0), (0, 0), tuple(pads[0]), tuple(pads[1])])
    bh, bw = block
    n = x.shape[0]
    parts = [xp[:, :, i::bh, j::bw] for i in range(bh) for j in range(bw)]
    return np.concatenate(parts, axis=0).reshape(bh * bw * n, *parts[0].shape[1:])


@pytest.mark.parametrize(
    ("block", "pads"),
    [([2, 2], [[0, 0], [2, 0]]), ([1, 3], [[1, 1], [0, 2]]), ([2, 1], [[0, 2], [0, 0]])],
)
def test_space_to_batch_and_back(block: list[int], pads: list[list[int]]) -> None:
    x = _x(2, 3, 4, 4)
    check(
        "space_to_batch",
        lambda x: mb.space_to_batch(x=x, block_shape=block, paddings=pads),
        {"x": x},
        lambda x: _space_to_batch(x, block, pads),
    )
    y = np.asarray(_space_to_batch(x.astype(np.float64), block, pads), np.float32)
    hp, wp = 4 + sum(pads[0]), 4 + sum(pads[1])
    check(
        "batch_to_space",
        lambda y: mb.batch_to_space(x=y, block_shape=block, crops=pads),
        {"y": y},
        lambda y: (
            x.astype(np.float64)
            if y.dtype != np.float16
            else x.astype(np.float16).astype(np.float64)
        ),
        fp16=False,
        what=f"{hp}x{wp}",
    )


def test_block_rearrangements_match_core_ml_outputs() -> None:
    # coremltools' iOS14 op tests (Core ML's outputs)
    d2s_in = np.array([[[[9.0]], [[5.0]], [[1.0]], [[3.0]]]], np.float32)
    s2d_in = np.array([[[[7.0, 9.0], [4.0, 6.0]]]], np.float32)
    s2b_in = np.array(
        [[[[1, 2, 3, 4], [5, 6, 7, 8]]], [[[9, 10, 11, 12], [13, 14, 15, 16]]]], np.float32
    )
    batched = np.array(
        [
            [[[0, 1, 3]]],
            [[[0, 9, 11]]],
            [[[0, 2, 4]]],
            [[[0, 10, 12]]],
            [[[0, 5, 7]]],
            [[[0, 13, 15]]],
            [[[0, 6, 8]]],
            [[[0, 14, 16]]],
        ],
        np.float32,
    )
    (d2s,) = run_built(
        build(lambda x: mb.depth_to_space(x=x, block_size=2), {"x": d2s_in}, IOS15), {"x": d2s_in}
    )
    (s2d,) = run_built(
        build(lambda x: mb.space_to_depth(x=x, block_size=2), {"x": s2d_in}, IOS15), {"x": s2d_in}
    )
    (s2b,) = run_built(
        build(
            lambda x: mb.space_to_batch(x=x, block_shape=[2, 2], paddings=[[0, 0], [2, 0]]),
            {"x": s2b_in},
            IOS15,
        ),
        {"x": s2b_in},
    )
    (b2s,) = run_built(
        build(
            lambda x: mb.batch_to_space(x=x, block_shape=[2, 2], crops=[[0, 0], [2, 0]]),
            {"x": batched},
            IOS15,
        ),
        {"x": batched},
    )
    np.testing.assert_array_equal(d2s, [[[[9.0, 5.0], [1.0, 3.0]]]])
    np.testing.assert_array_equal(s2d, [[[[7.0]], [[9.0]], [[4.0]], [[6.0]]]])
    np.testing.assert_array_equal(s2b, batched)
    np.testing.assert_array_equal(b2s, s2b_in)


def test_every_layout_op_is_covered() -> None:
    from ane_lib.coreml.ops import REGISTRY

    covered = {
        "reshape",
        "reshape_like",
        "transpose",
        "expand_dims",
        "squeeze",
        "reverse",
        "reverse_sequence",
        "slice_by_index",
        "slice_update",
        "slice_by_size",
        "sliding_windows",
        "pixel_shuffle",
        "pixel_unshuffle",
        "space_to_depth",
        "depth_to_space",
        "space_to_batch",
        "batch_to_space",
    }
    assert {n for n, d in REGISTRY.items() if d.family == "tensor_transformation"} == covered

"""Conformance of the tensor ops (coremltools ``tensor_operation``).

Definitions as in coremltools' docstrings; in particular ``concat`` of rank-0 values makes a
vector (its value inference stacks them: the shape arithmetic of dynamic-shape conversions),
``topk`` from iOS16 may return the values only (``return_indices=False``) and from iOS17 takes
``k = -1`` for all, ``pad`` mirrors without the edge (``reflect``) or repeats it
(``replicate``), ``non_maximum_suppression`` keeps boxes greedily by score (its reference is
the one in coremltools' op tests).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance._harness import IOS15, IOS16, IOS17, build, check, mb, run_built

_R = np.random.default_rng(31)


def _x(*shape: int) -> np.ndarray:
    return _R.normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("axis", [-3, 0, 1, 2])
@pytest.mark.parametrize("interleave", [False, True])
def test_concat(axis: int, interleave: bool) -> None:
    a, b, c = _x(2, 3, 4), _x(2, 3, 4), _x(2, 3, 4)
    if not interleave:
        b = _x(*[3 if d == axis % 3 else n for d, n in enumerate((2, 3, 4))])

    def reference(a: Any, b: Any, c: Any) -> Any:
        if not interleave:
            return np.concatenate([a, b, c], axis=axis)
        stacked = np.stack([a, b, c], axis=axis % 3 + 1)
        shape = list(a.shape)
        shape[axis] *= 3
        return stacked.reshape(shape)

    # coremltools' value inference ignores interleave (it concatenates): compared without it
    check(
        "concat",
        lambda a, b, c: mb.concat(values=(a, b, c), axis=axis, interleave=interleave),
        {"a": a, "b": b, "c": c},
        reference,
        value_inference=not interleave,
    )


def test_concat_of_scalars_makes_a_vector() -> None:
    # the dynamic-shape arithmetic a conversion emits: shape -> gather one axis -> concat
    x = _x(2, 3, 5)

    def fn(x: Any) -> Any:
        shape = mb.shape(x=x)
        h = mb.gather(x=shape, indices=np.int32(1), axis=0)
        w = mb.gather(x=shape, indices=np.int32(2), axis=0)
        size = mb.concat(values=(h, w, np.int32(7)), axis=0)
        steps = mb.range_1d(
            start=np.int32(0), end=mb.gather(x=shape, indices=np.int32(2)), step=np.int32(2)
        )
        return size, steps, mb.fill(shape=size, value=1.5)

    size, steps, filled = run_built(build(fn, {"x": x}), {"x": x})
    np.testing.assert_array_equal(size, [3, 5, 7])
    np.testing.assert_array_equal(steps, [0, 2, 4])
    np.testing.assert_array_equal(filled, np.full((3, 5, 7), 1.5, np.float32))


@pytest.mark.parametrize("axis", [-4, 0, 2, 3])
def test_stack(axis: int) -> None:
    a, b = _x(2, 3, 4), _x(2, 3, 4)
    check(
        "stack",
        lambda a, b: mb.stack(values=(a, b), axis=axis),
        {"a": a, "b": b},
        lambda a, b: np.stack([a, b], axis=axis),
    )


@pytest.mark.parametrize(
    ("kwargs", "cuts"), [({"num_splits": 3}, 3), ({"split_sizes": [1, 4, 1]}, [1, 5])]
)
@pytest.mark.parametrize("axis", [-1, 1])
def test_split(kwargs: Any, cuts: Any, axis: int) -> None:
    x = _x(2, 6, 6)
    check(
        "split",
        lambda x: mb.split(x=x, axis=axis, **kwargs),
        {"x": x},
        lambda x: tuple(np.split(x, cuts, axis=axis)),
    )


@pytest.mark.parametrize("reps", [[1, 1, 1], [2, 1, 3], [1, 4, 1]])
def test_tile(reps: list[int]) -> None:
    x = _x(2, 3, 2)
    check("tile", lambda x: mb.tile(x=x, reps=reps), {"x": x}, lambda x: np.tile(x, reps))


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1])
def test_flatten2d(axis: int) -> None:
    x = _x(2, 3, 4)
    a = axis % 3 if axis < 0 else axis
    # coremltools' value inference fails for axis 0 and 3 (np.prod([]) is the float 1.0)
    check(
        "flatten2d",
        lambda x: mb.flatten2d(x=x, axis=axis),
        {"x": x},
        lambda x: x.reshape(int(np.prod(x.shape[:a])), -1),
        value_inference=a not in (0, 3),
    )


def test_identity_and_shape() -> None:
    x = _x(2, 3, 4)
    check("identity", lambda x: mb.identity(x=x), {"x": x}, lambda x: x)
    check("shape", lambda x: mb.shape(x=x), {"x": x}, lambda x: np.array(x.shape, np.int32))


def _pad_reference(x: Any, pad: list[int], mode: str, value: float) -> Any:
    n = len(pad) // 2
    widths = [(0, 0)] * (x.ndim - n) + [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    if mode == "constant":
        return np.pad(x, widths, constant_values=value)
    return np.pad(x, widths, mode="reflect" if mode == "reflect" else "edge")


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate"])
@pytest.mark.parametrize(
    "pad", [[1, 2], [0, 1, 2, 0], [1, 1, 2, 2, 0, 3], [2, 2, 1, 0, 1, 1, 0, 2]]
)
def test_pad(mode: str, pad: list[int]) -> None:
    x = _x(3, 4, 5, 6)
    kwargs: dict[str, Any] = {"pad": np.array(pad, np.int32), "mode": mode}
    params = {"constant_val": 0.75} if mode == "constant" else {}
    check(
        "pad",
        lambda x, **p: mb.pad(x=x, **kwargs, **p),
        {"x": x},
        lambda x, constant_val=0.0: _pad_reference(x, pad, mode, constant_val),
        params=params,
        what=f"{mode} {pad}",
    )


def test_fill_and_fill_like() -> None:
    x = _x(2, 3)
    check(
        "fill",
        lambda x: mb.fill(shape=np.array([2, 4], np.int32), value=np.float32(2.5)),
        {"x": x},
        lambda x: np.full((2, 4), 2.5),
        fp16=False,
    )
    check(
        "fill_like",
        lambda x: mb.fill_like(ref_tensor=x, value=np.float32(-1.0)),
        {"x": x},
        lambda x: np.full(x.shape, -1.0),
        opset=IOS17,
        fp16=False,
    )


@pytest.mark.parametrize(
    ("start", "end", "step"), [(0, 10, 3), (5, -2, -2), (0.5, 3.0, 0.75), (2, 2, 1)]
)
def test_range_1d(start: Any, end: Any, step: Any) -> None:
    dtype = np.float32 if isinstance(start, float) else np.int32
    x = np.zeros(1, dtype=np.float32)
    check(
        "range_1d",
        lambda x: mb.range_1d(start=dtype(start), end=dtype(end), step=dtype(step)),
        {"x": x},
        lambda x: np.arange(start, end, step).astype(dtype),
        fp16=False,
    )


@pytest.mark.parametrize(("lower", "upper"), [(-1, -1), (0, -1), (-1, 0), (0, 0), (1, 2), (2, 0)])
def test_band_part(lower: int, upper: int) -> None:
    x = _x(2, 4, 5)
    m, n = np.arange(4)[:, None], np.arange(5)[None, :]
    keep = ((lower < 0) | (m - n <= lower)) & ((upper < 0) | (n - m <= upper))
    check(
        "band_part",
        lambda x: mb.band_part(x=x, lower=lower, upper=upper),
        {"x": x},
        lambda x: np.where(keep, x, 0),
    )


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("exclusive", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_cumsum(axis: int, exclusive: bool, reverse: bool) -> None:
    x = _x(3, 4, 5)

    def reference(x: Any) -> Any:
        y = np.flip(x, axis) if reverse else x
        out = np.cumsum(y, axis=axis) - (y if exclusive else 0)
        return np.flip(out, axis) if reverse else out

    # coremltools' value inference of an exclusive cumsum fails (np.zeros(shape, data))
    check(
        "cumsum",
        lambda x: mb.cumsum(x=x, axis=axis, exclusive=exclusive, reverse=reverse),
        {"x": x},
        reference,
        value_inference=not exclusive,
    )


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_one_hot(axis: int) -> None:
    idx = np.array([[0, 3, 1], [2, 2, 0]], np.int32)

    def reference(idx: Any) -> Any:
        hot = np.eye(4)[idx] * 5.0 + (1 - np.eye(4)[idx]) * -1.0
        return np.moveaxis(hot, -1, axis)

    check(
        "one_hot",
        lambda idx: mb.one_hot(
            indices=idx,
            one_hot_vector_size=4,
            axis=axis,
            on_value=np.float32(5.0),
            off_value=np.float32(-1.0),
        ),
        {"idx": idx},
        reference,
    )


@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("ascending", [False, True])
def test_argsort(axis: int, ascending: bool) -> None:
    # distinct values: the definition leaves the order of ties open
    x = _R.permutation(60).reshape(3, 5, 4).astype(np.float32)

    def reference(x: Any) -> Any:
        return np.argsort(x if ascending else -x, axis=axis, kind="stable").astype(np.int32)

    check("argsort", lambda x: mb.argsort(x=x, axis=axis, ascending=ascending), {"x": x}, reference)


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 5), axis=st.integers(-3, 2), ascending=st.booleans(), seed=st.integers(0, 99)
)
def test_topk(k: int, axis: int, ascending: bool, seed: int) -> None:
    x = np.random.default_rng(seed).permutation(3 * 5 * 4).reshape(3, 5, 4).astype(np.float32)
    k = min(k, x.shape[axis])

    def reference(x: Any) -> Any:
        order = np.argsort(x if ascending else -x, axis=axis, kind="stable")
        idx = np.take(order, np.arange(k), axis=axis)
        return np.take_along_axis(x, idx, axis=axis), idx.astype(np.int32)

    check(
        "topk",
        lambda x: mb.topk(x=x, k=k, axis=axis, ascending=ascending),
        {"x": x},
        reference,
        opset=IOS15,
    )


def test_topk_values_only_and_all_of_them() -> None:
    # iOS16: return_indices=False gives one output, not two (issue 15); iOS17: k = -1
    x = _x(2, 6)
    check(
        "topk",
        lambda x: mb.topk(x=x, k=2, return_indices=False),
        {"x": x},
        lambda x: -np.sort(-x, axis=-1)[:, :2],
        opset=IOS16,
    )
    # coremltools' value inference of k = -1 drops the last value (it slices [:-1]), and its
    # type inference declares the axis as -1: compared with the definition only
    check(
        "topk",
        lambda x: mb.topk(x=x, k=-1, ascending=True),
        {"x": x},
        lambda x: (np.sort(x, axis=-1), np.argsort(x, axis=-1).astype(np.int32)),
        opset=IOS17,
        value_inference=False,
    )


def test_non_zero() -> None:
    x = (_R.random((3, 4, 2)) > 0.6).astype(np.float32) * _x(3, 4, 2)
    (got,) = run_built(build(lambda x: mb.non_zero(x=x), {"x": x}), {"x": x})
    np.testing.assert_array_equal(got, np.argwhere(x != 0))
    assert got.dtype == np.int32


def _nms_reference(
    boxes: Any, scores: Any, iou: float, min_score: float, max_boxes: int, per_class: bool
) -> tuple[Any, ...]:
    """Greedy NMS as coremltools' op tests define it: by best class score, suppressing IoU above
    the threshold (within a class when per_class), keeping the best box if none passes."""
    n, b, k = scores.shape
    out = (
        np.zeros((n, max_boxes, 4)),
        np.zeros((n, max_boxes, k)),
        -np.ones((n, max_boxes), np.int32),
        np.zeros(n, np.int32),
    )
    for i in range(n):
        best, label = scores[i].max(-1), scores[i].argmax(-1)
        x, y, w, h = boxes[i].T
        kept: list[int] = []
        for j in np.argsort(-best, kind="stable"):
            if best[j] < min_score:
                continue
            ok = True
            for m in kept:
                if per_class and label[m] != label[j]:
                    continue
                iw = max(
                    0.0,
                    min(x[j] + w[j] / 2, x[m] + w[m] / 2) - max(x[j] - w[j] / 2, x[m] - w[m] / 2),
                )
                ih = max(
                    0.0,
                    min(y[j] + h[j] / 2, y[m] + h[m] / 2) - max(y[j] - h[j] / 2, y[m] - h[m] / 2),
                )
                inter = iw * ih
                if inter / (w[j] * h[j] + w[m] * h[m] - inter) > iou:
                    ok = False
                    break
            if ok:
                kept.append(int(j))
        kept = (kept or [int(np.argmax(best))])[:max_boxes]
        out[0][i, : len(kept)] = boxes[i, kept]
        out[1][i, : len(kept)] = scores[i, kept]
        out[2][i, : len(kept)] = kept
        out[3][i] = len(kept)
    return out


@pytest.mark.parametrize("per_class", [False, True])
@pytest.mark.parametrize(("iou", "min_score"), [(0.2, -1.0), (0.5, 0.3), (0.0, 0.0)])
def test_non_maximum_suppression(per_class: bool, iou: float, min_score: float) -> None:
    r = np.random.default_rng(4)
    boxes = np.concatenate([r.uniform(0, 4, (2, 12, 2)), r.uniform(0.5, 2, (2, 12, 2))], -1).astype(
        np.float32
    )
    scores = r.uniform(0, 1, (2, 12, 3)).astype(np.float32)
    check(
        "non_maximum_suppression",
        lambda b, s: mb.non_maximum_suppression(
            boxes=b,
            scores=s,
            iou_threshold=np.float32(iou),
            score_threshold=np.float32(min_score),
            max_boxes=5,
            per_class_suppression=per_class,
        ),
        {"b": boxes, "s": scores},
        lambda b, s: _nms_reference(b, s, iou, min_score, 5, per_class),
        opset=IOS15,
        fp16=False,
    )
    # iOS17's layout: boxes (n, 4, B), scores (n, K, B), no score threshold, no counts
    ref = _nms_reference(
        boxes.astype(np.float64), scores.astype(np.float64), iou, -np.inf, 5, per_class
    )
    b17, s17 = (
        np.ascontiguousarray(boxes.transpose(0, 2, 1)),
        np.ascontiguousarray(scores.transpose(0, 2, 1)),
    )
    got = run_built(
        build(
            lambda b, s: mb.non_maximum_suppression(
                boxes=b,
                scores=s,
                iou_threshold=np.float32(iou),
                max_boxes=5,
                per_class_suppression=per_class,
            ),
            {"b": b17, "s": s17},
            IOS17,
        ),
        {"b": b17, "s": s17},
    )
    np.testing.assert_allclose(got[0], ref[0].transpose(0, 2, 1), rtol=1e-6)
    np.testing.assert_allclose(got[1], ref[1].transpose(0, 2, 1), rtol=1e-6)
    np.testing.assert_array_equal(got[2], ref[2])


def test_non_maximum_suppression_matches_core_ml_outputs() -> None:
    # coremltools' iOS14 TestNonMaximumSuppression smoke test (Core ML's outputs)
    boxes = np.array([[[0.0] * 4, [1.0] * 4, [2.0] * 4, [3.0] * 4]], np.float32)
    scores = np.array([[[-3.5], [9.4], [2.3], [0.7]]], np.float32)
    got = run_built(
        build(
            lambda b, s: mb.non_maximum_suppression(
                boxes=b,
                scores=s,
                iou_threshold=0.2,
                score_threshold=0.4,
                max_boxes=2,
                per_class_suppression=True,
            ),
            {"b": boxes, "s": scores},
            IOS15,
        ),
        {"b": boxes, "s": scores},
    )
    np.testing.assert_array_equal(got[0], [[[1.0] * 4, [2.0] * 4]])
    np.testing.assert_allclose(got[1], [[[9.4], [2.3]]], rtol=1e-6)
    np.testing.assert_array_equal(got[2], [[1, 2]])
    np.testing.assert_array_equal(got[3], [2])


def test_every_tensor_operation_is_covered() -> None:
    from ane_lib.coreml.ops import REGISTRY

    covered = {
        "concat",
        "stack",
        "split",
        "tile",
        "flatten2d",
        "identity",
        "shape",
        "pad",
        "fill",
        "fill_like",
        "range_1d",
        "band_part",
        "cumsum",
        "one_hot",
        "argsort",
        "topk",
        "non_zero",
        "non_maximum_suppression",
    }
    assert {n for n, d in REGISTRY.items() if d.family == "tensor_operation"} == covered

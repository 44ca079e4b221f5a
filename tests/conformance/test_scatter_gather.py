"""Conformance of gathers and scatters (coremltools ``scatter_gather``).

Definitions: ``gather`` takes ``x[..., indices, ...]`` along ``axis`` (iOS16: the first
``batch_dims`` axes of x and indices paired); ``gather_along_axis`` NumPy's
``take_along_axis``; ``gather_nd`` indexes with the last axis of ``indices``; the scatters write
``updates`` into a copy of ``data`` at those places, combining by ``mode`` (update, add, sub,
mul, div, max, min). Negative indices count from the end up to iOS16; from iOS17 they are out
of range (the executor raises, where Core ML's result is undefined).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ane_lib.coreml import ExecutorError
from conformance._harness import IOS15, IOS16, IOS17, build, check, mb, run_built

_R = np.random.default_rng(51)
MODES = ["update", "add", "sub", "mul", "div", "max", "min"]


def _x(*shape: int) -> np.ndarray:
    return _R.normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("opset", [IOS15, IOS17])
def test_gather(axis: int, opset: Any) -> None:
    x = _x(3, 4, 5)
    size = x.shape[axis]
    low = -size if opset == IOS15 else 0
    idx = _R.integers(low, size, (2, 3)).astype(np.int32)
    check(
        "gather",
        lambda x: mb.gather(x=x, indices=idx, axis=axis),
        {"x": x},
        lambda x: np.take(x, idx % size, axis=axis),
        opset=opset,
    )


@pytest.mark.parametrize(("axis", "batch_dims"), [(1, 1), (2, 1), (2, 2)])
def test_gather_batch_dims(axis: int, batch_dims: int) -> None:
    x = _x(2, 3, 4)
    idx = _R.integers(0, x.shape[axis], (2, 3, 2)[:batch_dims] + (2,)).astype(np.int32)

    def reference(x: Any) -> Any:
        if batch_dims == 1:
            return np.stack([np.take(x[b], idx[b], axis=axis - 1) for b in range(2)])
        return np.stack(
            [
                np.stack([np.take(x[b, c], idx[b, c], axis=axis - 2) for c in range(3)])
                for b in range(2)
            ]
        )

    check(
        "gather",
        lambda x: mb.gather(x=x, indices=idx, axis=axis, batch_dims=batch_dims),
        {"x": x},
        reference,
        opset=IOS16,
    )


def test_gather_of_a_scalar_index() -> None:
    x = _x(3, 4)
    check(
        "gather", lambda x: mb.gather(x=x, indices=np.int32(2), axis=1), {"x": x}, lambda x: x[:, 2]
    )


def test_gather_negative_indices_are_out_of_range_from_ios17() -> None:
    x = _x(3, 4)
    idx = np.array([0, -1], np.int32)
    program = build(lambda x: mb.gather(x=x, indices=idx, axis=1), {"x": x}, IOS17)
    with pytest.raises(ExecutorError, match=r"indices must lie in \[0, 4\)"):
        run_built(program, {"x": x})
    (got,) = run_built(
        build(lambda x: mb.gather(x=x, indices=idx, axis=1), {"x": x}, IOS16), {"x": x}
    )
    np.testing.assert_array_equal(got, x[:, [0, 3]])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather_along_axis(axis: int) -> None:
    x = _x(3, 4, 5)
    shape = list(x.shape)
    shape[axis] = 2
    idx = _R.integers(0, x.shape[axis], shape).astype(np.int32)
    check(
        "gather_along_axis",
        lambda x: mb.gather_along_axis(x=x, indices=idx, axis=axis),
        {"x": x},
        lambda x: np.take_along_axis(x, idx, axis=axis),
    )


@pytest.mark.parametrize("k", [1, 2, 3])
def test_gather_nd(k: int) -> None:
    x = _x(3, 4, 5)
    idx = np.stack([_R.integers(0, d, (2, 2)) for d in x.shape[:k]], -1).astype(np.int32)
    check(
        "gather_nd",
        lambda x: mb.gather_nd(x=x, indices=idx),
        {"x": x},
        lambda x: x[tuple(np.moveaxis(idx, -1, 0))],
    )


def test_gather_nd_batch_dims() -> None:
    x = _x(3, 4, 5)
    idx = _R.integers(0, 4, (3, 2, 1)).astype(np.int32)
    check(
        "gather_nd",
        lambda x: mb.gather_nd(x=x, indices=idx, batch_dims=1),
        {"x": x},
        lambda x: np.stack([x[b][idx[b, :, 0]] for b in range(3)]),
        opset=IOS16,
    )


def _combine(mode: str, old: Any, new: Any) -> Any:
    return {
        "update": lambda: new,
        "add": lambda: old + new,
        "sub": lambda: old - new,
        "mul": lambda: old * new,
        "div": lambda: old / new,
        "max": lambda: np.maximum(old, new),
        "min": lambda: np.minimum(old, new),
    }[mode]()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("axis", [0, 2])
def test_scatter(mode: str, axis: int) -> None:
    data = _x(3, 4, 5)
    idx = np.array([2, 0, 2] if mode != "update" else [2, 0], np.int32)  # repeats combine in order
    shape = list(data.shape)
    shape[axis] = len(idx)
    updates = _R.uniform(0.5, 2, shape).astype(np.float32)

    def reference(data: Any, updates: Any) -> Any:
        out = data.copy()
        for i, j in enumerate(idx):
            src = np.take(updates, i, axis=axis)
            index: list[Any] = [slice(None)] * 3
            index[axis] = j
            out[tuple(index)] = _combine(mode, out[tuple(index)], src)
        return out

    check(
        "scatter",
        lambda data, updates: mb.scatter(
            data=data, indices=idx, updates=updates, axis=axis, mode=mode
        ),
        {"data": data, "updates": updates},
        reference,
        what=mode,
    )


@pytest.mark.parametrize("mode", MODES)
def test_scatter_along_axis(mode: str) -> None:
    data = _x(3, 5)
    idx = (
        np.array([[0, 1], [4, 4], [2, 0]], np.int32)
        if mode != "update"
        else np.array([[0, 1], [4, 3], [2, 0]], np.int32)
    )
    updates = _R.uniform(0.5, 2, (3, 2)).astype(np.float32)

    def reference(data: Any, updates: Any) -> Any:
        out = data.copy()
        for r in range(3):
            for c in range(2):
                out[r, idx[r, c]] = _combine(mode, out[r, idx[r, c]], updates[r, c])
        return out

    # coremltools' value inference ignores mode (it always writes, np.put_along_axis): compared
    # with it for "update" only
    check(
        "scatter_along_axis",
        lambda data, updates: mb.scatter_along_axis(
            data=data, indices=idx, updates=updates, axis=1, mode=mode
        ),
        {"data": data, "updates": updates},
        reference,
        value_inference=mode == "update",
        what=mode,
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k", [1, 2])
def test_scatter_nd(mode: str, k: int) -> None:
    data = _x(3, 4, 2)
    rows = [[0, 1], [2, 3], [0, 1]] if mode != "update" else [[0, 1], [2, 3], [1, 0]]
    idx = np.array([r[:k] for r in rows], np.int32)
    updates = _R.uniform(0.5, 2, (3, *data.shape[k:])).astype(np.float32)

    def reference(data: Any, updates: Any) -> Any:
        out = data.copy()
        for i, where in enumerate(idx):
            out[tuple(where)] = _combine(mode, out[tuple(where)], updates[i])
        return out

    check(
        "scatter_nd",
        lambda data, updates: mb.scatter_nd(data=data, indices=idx, updates=updates, mode=mode),
        {"data": data, "updates": updates},
        reference,
        what=f"{mode} k={k}",
    )


def test_scatter_of_integers() -> None:
    data = _R.integers(-5, 5, (3, 4)).astype(np.int32)
    updates = _R.integers(-5, 5, (2, 4)).astype(np.int32)
    idx = np.array([2, 0], np.int32)
    check(
        "scatter",
        lambda d, u: mb.scatter(data=d, indices=idx, updates=u, mode="add"),
        {"d": data, "u": updates},
        lambda d, u: d + np.stack([u[1], np.zeros(4), u[0]]),
    )


def test_every_scatter_gather_op_is_covered() -> None:
    from ane_lib.coreml.ops import REGISTRY

    covered = {
        "gather",
        "gather_along_axis",
        "gather_nd",
        "scatter",
        "scatter_along_axis",
        "scatter_nd",
    }
    assert {n for n, d in REGISTRY.items() if d.family == "scatter_gather"} == covered

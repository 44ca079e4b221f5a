"""Conformance of control flow, ``select`` and lists (coremltools ``control_flow``).

Definitions: ``const`` holds its value; ``cond`` runs its first block when ``pred`` is true, its
second otherwise, and returns that block's outputs; ``while_loop`` feeds ``loop_vars`` through
its body while its condition block returns true; ``select`` picks ``a`` where ``cond`` holds,
``b`` elsewhere (broadcast), and without ``a`` and ``b`` returns the indices where ``cond``
holds; lists are growable arrays of equally shaped tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from conformance._harness import IOS15, build, check, mb, run_built

_R = np.random.default_rng(61)


def test_const() -> None:
    value = _R.normal(size=(2, 3)).astype(np.float32)
    x = np.zeros(1, np.float32)
    check("const", lambda x: mb.const(val=value), {"x": x}, lambda x: value, fp16=False)
    check(
        "const",
        lambda x: mb.const(val=value.astype(np.float16)),
        {"x": x},
        lambda x: value.astype(np.float16),
        fp16=False,
    )


@pytest.mark.parametrize("positive", [True, False])
def test_cond(positive: bool) -> None:
    x = np.abs(_R.normal(size=(2, 3))).astype(np.float32) * (1 if positive else -1)

    def fn(x: Any) -> Any:
        pred = mb.greater(x=mb.reduce_sum(x=x), y=np.float32(0))
        return mb.cond(
            pred=pred,
            _true_fn=lambda: (mb.mul(x=x, y=np.float32(2)), mb.add(x=x, y=np.float32(1))),
            _false_fn=lambda: (mb.sub(x=x, y=np.float32(1)), mb.mul(x=x, y=np.float32(-1))),
        )

    def reference(x: Any) -> Any:
        return (2 * x, x + 1) if positive else (x - 1, -x)

    check("cond", fn, {"x": x}, reference, fp16=False)


@pytest.mark.parametrize("steps", [0, 1, 5])
def test_while_loop(steps: int) -> None:
    x = _R.normal(size=(2, 3)).astype(np.float32)

    def fn(x: Any) -> Any:
        def keep_going(i: Any, acc: Any) -> Any:
            return mb.less(x=i, y=np.int32(steps))

        def body(i: Any, acc: Any) -> Any:
            return mb.add(x=i, y=np.int32(1)), mb.add(x=mb.mul(x=acc, y=np.float32(0.5)), y=x)

        return mb.while_loop(_cond=keep_going, _body=body, loop_vars=(np.int32(0), x))

    def reference(x: Any) -> Any:
        acc = x.copy()
        for _ in range(steps):
            acc = acc * 0.5 + x
        return np.int32(steps), acc

    check("while_loop", fn, {"x": x}, reference, fp16=False)


@pytest.mark.parametrize(
    "shapes", [((2, 3), (2, 3), (2, 3)), ((2, 1), (1, 3), (2, 3)), ((3,), (2, 3), ())]
)
def test_select(shapes: Any) -> None:
    c = _R.random(shapes[0]) > 0.5
    a = _R.normal(size=shapes[1]).astype(np.float32)
    b = np.asarray(_R.normal(size=shapes[2]), np.float32)
    if b.ndim == 0:
        check(
            "select",
            lambda c, a: mb.select(cond=c, a=a, b=np.float32(b)),
            {"c": c, "a": a},
            lambda c, a: np.where(c, a, b.astype(a.dtype)),
            fp16=False,
        )
        return
    check(
        "select",
        lambda c, a, b: mb.select(cond=c, a=a, b=b),
        {"c": c, "a": a, "b": b},
        lambda c, a, b: np.where(c, a, b),
    )


def test_lists() -> None:
    # make_list -> list_write x3 (growing) -> list_read, list_gather, list_length, list_scatter
    x = _R.normal(size=(4, 3)).astype(np.float32)

    def fn(x: Any) -> Any:
        ls = mb.make_list(init_length=1, dynamic_length=True, elem_shape=(3,), dtype="fp32")
        for i in range(3):
            row = mb.gather(x=x, indices=np.int32(i), axis=0)
            ls = mb.list_write(ls=ls, index=np.int32(i), value=row)
        last = mb.slice_by_index(x=x, begin=[3, 0], end=[4, 3])
        ls = mb.list_scatter(ls=ls, indices=np.array([0], np.int32), value=last)
        return (
            mb.list_read(ls=ls, index=np.int32(1)),
            mb.list_gather(ls=ls, indices=np.array([2, 0], np.int32)),
            mb.list_length(ls=ls),
        )

    read, gathered, length = run_built(build(fn, {"x": x}, IOS15), {"x": x})
    np.testing.assert_array_equal(read, x[1])
    np.testing.assert_array_equal(gathered, np.stack([x[2], x[3]]))
    assert int(length) == 3


def test_every_control_flow_op_is_covered() -> None:
    from ane_lib.coreml.ops import REGISTRY

    covered = {
        "const",
        "cond",
        "while_loop",
        "select",
        "make_list",
        "list_read",
        "list_write",
        "list_gather",
        "list_scatter",
        "list_length",
    }
    assert {n for n, d in REGISTRY.items() if d.family == "control_flow"} == covered

"""Conformance of the elementwise binary ops (coremltools ``elementwise_binary``).

Definition: ``op(x, y)`` elementwise with NumPy broadcasting; T is fp16, fp32 or int32 (bool
for the logical ops); comparisons return bool. ``mod`` follows Python's ``%`` (the sign of the
divisor) and ``floor_div`` rounds toward -inf (coremltools' ``operator.mod`` / ``floordiv``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance._harness import IOS17, broadcast_shapes, check, mb

ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "real_div": np.true_divide,
    "pow": np.power,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "floor_div": np.floor_divide,
    "mod": np.mod,
}
COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "equal": np.equal,
    "not_equal": np.not_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "less": np.less,
    "less_equal": np.less_equal,
}
LOGICAL: dict[str, Callable[[Any, Any], Any]] = {
    "logical_and": np.logical_and,
    "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
}
OPS = (*ARITHMETIC, *COMPARISONS, *LOGICAL)


def _operands(op: str, shapes: tuple[Any, Any], seed: int, integer: bool) -> dict[str, Any]:
    r = np.random.default_rng(seed)
    if integer:
        x = r.integers(-9, 10, shapes[0]).astype(np.int32)
        y = r.integers(-9, 10, shapes[1]).astype(np.int32)
    else:
        # values on a 1/8 grid: exact in fp16, so comparisons and floors are decided by the
        # values, not by rounding
        x = (r.integers(-24, 25, shapes[0]) / 8).astype(np.float32)
        y = (r.integers(-24, 25, shapes[1]) / 8).astype(np.float32)
    if op in ("real_div", "floor_div", "mod"):
        y = np.where(y == 0, 3, y).astype(y.dtype)  # no division by zero
    if op == "pow":
        x = np.abs(x) + (1 if integer else 0.5)  # positive bases
        y = np.clip(y, 0 if integer else -3, 3).astype(y.dtype)
        x = x.astype(y.dtype)
    if op == "real_div" and integer:
        x = (y * r.integers(-3, 4, np.broadcast_shapes(x.shape, y.shape))).astype(np.int32)
    return {"x": x, "y": y}


@pytest.mark.parametrize("op", [*ARITHMETIC, *COMPARISONS])
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_arithmetic_and_comparisons(op: str, data: st.DataObject) -> None:
    shapes = data.draw(broadcast_shapes())
    seed = data.draw(st.integers(0, 2**16))
    reference = {**ARITHMETIC, **COMPARISONS}[op]
    fn = getattr(mb, op)
    for integer in (False, True):
        inputs = _operands(op, shapes, seed, integer)
        # real_div of integers: the definition's x / y, exact divisions only (how Core ML
        # rounds an inexact integer quotient is not documented)
        check(
            op,
            lambda x, y, fn=fn: fn(x=x, y=y),
            inputs,
            lambda x, y: reference(x, y),
            opset=IOS17,
            what=f"{'int32' if integer else 'float'} {inputs['x'].shape} {inputs['y'].shape}",
        )


@pytest.mark.parametrize("op", list(LOGICAL))
def test_logical(op: str) -> None:
    r = np.random.default_rng(1)
    x = r.random((3, 1, 4)) > 0.5
    y = r.random((2, 1)) > 0.5
    fn = getattr(mb, op)
    check(op, lambda x, y: fn(x=x, y=y), {"x": x, "y": y}, lambda x, y: LOGICAL[op](x, y))


def test_mod_and_floor_div_follow_the_divisor_sign() -> None:
    # Python's % and //: -7 % 3 == 2, 7 % -3 == -2, -7 // 2 == -4
    x = np.array([-7.0, 7.0, -7.0, 7.5], np.float32)
    y = np.array([3.0, -3.0, 2.0, 2.0], np.float32)
    check("mod", lambda x, y: mb.mod(x=x, y=y), {"x": x, "y": y}, lambda x, y: x % y)
    check("floor_div", lambda x, y: mb.floor_div(x=x, y=y), {"x": x, "y": y}, lambda x, y: x // y)


def test_every_binary_op_is_covered() -> None:
    from ane_lib.coreml.ops import REGISTRY

    family = {n for n, d in REGISTRY.items() if d.family == "elementwise_binary"}
    assert family == set(OPS)

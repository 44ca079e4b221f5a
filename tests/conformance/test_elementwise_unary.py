"""Conformance of the elementwise unary ops (coremltools ``elementwise_unary``).

Definitions: the named function of ``x`` elementwise; ``inverse`` is ``1 / (x + epsilon)``,
``log`` is ``log(x + epsilon)``, ``rsqrt`` is ``1 / sqrt(x + epsilon)`` (defaults 1e-4, 1e-45,
1e-12); ``clip`` is ``min(max(x, alpha), beta)``, ``threshold`` is ``max(x, alpha)``;
``round`` rounds halves to even; ``cast`` converts to ``dtype`` (float -> int truncates toward
zero, as coremltools' value inference does).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance._harness import IOS17, check, input_dtypes, mb

_erf = np.vectorize(math.erf)

# op -> (reference, low, high): inputs drawn uniformly from [low, high], the function's domain
FUNCTIONS: dict[str, tuple[Callable[[Any], Any], float, float]] = {
    "abs": (np.abs, -4, 4),
    "acos": (np.arccos, -0.99, 0.99),
    "asin": (np.arcsin, -0.99, 0.99),
    "atan": (np.arctan, -6, 6),
    "atanh": (np.arctanh, -0.95, 0.95),
    "ceil": (np.ceil, -4, 4),
    "cos": (np.cos, -6, 6),
    "cosh": (np.cosh, -5, 5),
    "erf": (_erf, -3, 3),
    "exp": (np.exp, -8, 8),
    "exp2": (np.exp2, -8, 8),
    "floor": (np.floor, -4, 4),
    "round": (np.round, -4, 4),  # numpy rounds halves to even, as the definition says
    "sign": (np.sign, -4, 4),
    "sin": (np.sin, -6, 6),
    "sinh": (np.sinh, -5, 5),
    "sqrt": (np.sqrt, 0, 9),
    "square": (np.square, -9, 9),
    "tan": (np.tan, -1.4, 1.4),
    "tanh": (np.tanh, -4, 4),
}


def _draw(low: float, high: float, shape: tuple[int, ...], seed: int, grid: bool) -> np.ndarray:
    r = np.random.default_rng(seed)
    x = r.uniform(low, high, shape)
    if grid:  # steps of 1/4: halves and integers included, exact in fp16
        x = np.round(x * 4) / 4
    return x.astype(np.float32)


@pytest.mark.parametrize("op", list(FUNCTIONS))
@settings(max_examples=8, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple), seed=st.integers(0, 999)
)
def test_functions(op: str, shape: tuple[int, ...], seed: int) -> None:
    reference, low, high = FUNCTIONS[op]
    fn = getattr(mb, op)
    steps = op in ("ceil", "floor", "round", "sign")
    x = _draw(low, high, shape, seed, grid=steps)
    check(op, lambda x: fn(x=x), {"x": x}, reference, what=f"{shape}")
    if "int32" in input_dtypes(op, "x"):
        # integer results only (exp2 of a negative integer has no int32 value to compare)
        xi = np.abs(np.round(x)).astype(np.int32) if op == "exp2" else np.round(x).astype(np.int32)
        check(op, lambda x: fn(x=x), {"x": xi}, reference, what=f"int32 {shape}")


@pytest.mark.parametrize(
    ("op", "reference", "default"),
    [
        ("inverse", lambda x, epsilon: 1 / (x + epsilon), 1e-4),
        ("log", lambda x, epsilon: np.log(x + epsilon), 1e-45),
        ("rsqrt", lambda x, epsilon: 1 / np.sqrt(x + epsilon), 1e-12),
    ],
)
@pytest.mark.parametrize("epsilon", [None, 0.5])
def test_functions_with_epsilon(op: str, reference: Any, default: float, epsilon: Any) -> None:
    x = _draw(0.05, 6, (3, 4), 7, grid=False)
    fn = getattr(mb, op)
    if epsilon is None:  # the default, which the op holds in fp32
        check(op, lambda x: fn(x=x), {"x": x}, lambda x: reference(x, default), what="default")
    else:
        check(
            op,
            lambda x, epsilon: fn(x=x, epsilon=epsilon),
            {"x": x},
            reference,
            params={"epsilon": epsilon},
            what=f"epsilon={epsilon}",
        )


@pytest.mark.parametrize(("alpha", "beta"), [(-0.5, 0.7), (0.0, 6.0), (-2.0, -1.0)])
def test_clip_and_threshold(alpha: float, beta: float) -> None:
    x = _draw(-4, 4, (2, 3, 5), 3, grid=True)
    check(
        "clip",
        lambda x, alpha, beta: mb.clip(x=x, alpha=alpha, beta=beta),
        {"x": x},
        lambda x, alpha, beta: np.minimum(np.maximum(x, alpha), beta),
        params={"alpha": alpha, "beta": beta},
    )
    check(
        "threshold",
        lambda x, alpha: mb.threshold(x=x, alpha=alpha),
        {"x": x},
        lambda x, alpha: np.maximum(x, alpha),
        params={"alpha": alpha},
    )


def test_logical_not() -> None:
    x = np.random.default_rng(2).random((3, 4)) > 0.5
    check("logical_not", lambda x: mb.logical_not(x=x), {"x": x}, np.logical_not)


_NP = {
    "fp32": np.float32,
    "fp16": np.float16,
    "int32": np.int32,
    "int16": np.int16,
    "int8": np.int8,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "bool": np.bool_,
}


@pytest.mark.parametrize("source", ["fp32", "int32", "bool"])
@pytest.mark.parametrize("target", ["fp16", "fp32", "int32", "int16", "int8", "uint8", "bool"])
def test_cast(source: str, target: str) -> None:
    r = np.random.default_rng(5)
    values = r.uniform(-100, 100, (4, 6))
    if target.startswith("uint"):
        values = np.abs(values)  # negative values to unsigned types are left undefined
    if source == "bool":
        x = values > 0
    elif source == "int32":
        x = np.trunc(values).astype(np.int32)
    else:
        x = values.astype(np.float32)
    x[0, :3] = 0  # zeros: the boolean "not zero" rule

    def reference(x: Any) -> Any:
        if target == "bool":
            return x != 0
        if target == "fp16":
            return np.asarray(x, np.float16)
        if target == "fp32":
            return np.asarray(x, np.float64)
        return np.trunc(np.asarray(x, np.float64)).astype(_NP[target])

    check(
        "cast",
        lambda x: mb.cast(x=x, dtype=target),
        {"x": x},
        reference,
        opset=IOS17,
        what=f"{source} -> {target}",
    )


def test_every_unary_op_is_covered() -> None:
    from ane_lib.coreml.ops import REGISTRY

    covered = {*FUNCTIONS, "inverse", "log", "rsqrt", "clip", "threshold", "logical_not", "cast"}
    family = {n for n, d in REGISTRY.items() if d.family == "elementwise_unary"}
    assert family == covered

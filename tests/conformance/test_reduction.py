"""Conformance of the reductions (coremltools ``reduction``).

Definitions: ``reduce_<f>(x, axes, keep_dims)`` applies f over ``axes`` (all axes when absent),
keeping them as size 1 when ``keep_dims``: sum, mean, max, min, prod, sum of squares, L1 norm
(sum |x|), L2 norm (sqrt of the sum of squares), log of the sum, log of the sum of exp;
``reduce_argmax`` / ``reduce_argmin`` give the index of the first extreme value along ``axis``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance._harness import check, input_dtypes, mb


def _lse(x: Any, axis: Any, keepdims: bool) -> Any:
    m = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


REDUCTIONS: dict[str, Callable[..., Any]] = {
    "reduce_sum": np.sum,
    "reduce_mean": np.mean,
    "reduce_max": np.max,
    "reduce_min": np.min,
    "reduce_prod": np.prod,
    "reduce_sum_square": lambda x, axis, keepdims: np.sum(x * x, axis=axis, keepdims=keepdims),
    "reduce_l1_norm": lambda x, axis, keepdims: np.sum(np.abs(x), axis=axis, keepdims=keepdims),
    "reduce_l2_norm": lambda x, axis, keepdims: np.sqrt(
        np.sum(x * x, axis=axis, keepdims=keepdims)
    ),
    "reduce_log_sum": lambda x, axis, keepdims: np.log(np.sum(x, axis=axis, keepdims=keepdims)),
    "reduce_log_sum_exp": _lse,
}


@st.composite
def _shape_and_axes(draw: Any) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=5)))
    rank = len(shape)
    if draw(st.booleans()) and rank > 1:
        return shape, None
    axes = draw(
        st.lists(
            st.integers(-rank, rank - 1), min_size=1, max_size=rank, unique_by=lambda a: a % rank
        )
    )
    return shape, tuple(axes)


@pytest.mark.parametrize("op", list(REDUCTIONS))
@settings(max_examples=12, deadline=None)
@given(case=_shape_and_axes(), keep=st.booleans(), seed=st.integers(0, 99))
def test_reductions(op: str, case: Any, keep: bool, seed: int) -> None:
    shape, axes = case
    r = np.random.default_rng(seed)
    x = (
        r.uniform(0.5, 1.5, shape)
        if op in ("reduce_log_sum", "reduce_prod")
        else r.normal(size=shape)
    )
    reference = REDUCTIONS[op]
    fn = getattr(mb, op)
    kwargs: dict[str, Any] = {"keep_dims": keep}
    if axes is not None:
        kwargs["axes"] = list(axes)
    check(
        op,
        lambda x: fn(x=x, **kwargs),
        {"x": x.astype(np.float32)},
        lambda x: reference(x, axis=axes, keepdims=keep),
        fp16_extra=1e-3,  # a sum of up to 4^5 fp16 inputs in float32
        what=f"{shape} axes={axes} keep={keep}",
    )
    if "int32" in input_dtypes(op, "x") and op in ("reduce_sum", "reduce_max", "reduce_min"):
        xi = r.integers(-9, 10, shape).astype(np.int32)
        check(
            op,
            lambda x: fn(x=x, **kwargs),
            {"x": xi},
            lambda x: reference(x, axis=axes, keepdims=keep),
        )


@pytest.mark.parametrize("op", ["reduce_argmax", "reduce_argmin"])
@pytest.mark.parametrize("axis", [-3, -1, 0, 1, 2])
@pytest.mark.parametrize("keep", [False, True])
def test_arg_reductions(op: str, axis: int, keep: bool) -> None:
    # values on a coarse grid: ties, decided by the lowest index
    x = np.random.default_rng(axis + 5).integers(-3, 4, (3, 4, 5)).astype(np.float32)
    fn = getattr(mb, op)
    pick = np.argmax if op == "reduce_argmax" else np.argmin

    def reference(x: Any) -> Any:
        out = pick(x, axis=axis)
        return np.expand_dims(out, axis) if keep else out

    check(
        op,
        lambda x: fn(x=x, axis=axis, keep_dims=keep),
        {"x": x},
        lambda x: reference(x).astype(np.int32),
    )


def test_every_reduction_is_covered() -> None:
    from ane_lib.coreml.ops import REGISTRY

    covered = {*REDUCTIONS, "reduce_argmax", "reduce_argmin"}
    assert {n for n, d in REGISTRY.items() if d.family == "reduction"} == covered

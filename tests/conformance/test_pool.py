"""Conformance of the pooling ops (coremltools ``pool``): ``avg_pool``, ``max_pool``, ``l2_pool``.

Definitions: windows of ``kernel_sizes`` every ``strides`` over 1 to 3 spatial axes, padded by
``pad_type`` (as ``conv``; padding is -inf for the max, 0 for the sums); ``d_out = floor((d +
pads - K) / s) + 1``, or with ``ceil_mode`` (PyTorch's) ``ceil(...) + 1`` less one when the last
window would start in the right padding; the average divides by the window's positions,
excluding the padding when ``exclude_padding_from_average``; l2_pool is the square root of the
sum of squares.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conformance._harness import check, mb
from conformance.test_conv import _pads


def _out(d: int, p0: int, p1: int, k: int, s: int, ceil: bool) -> int:
    if not ceil:
        return (d + p0 + p1 - k) // s + 1
    out = math.ceil((d + p0 + p1 - k) / s) + 1
    if (out - 1) * s >= d + p0 and (p0 + p1) > 0:
        out -= 1
    return out


def pool_reference(
    x: Any, kind: str, kernel: Any, strides: Any, pads: Any, ceil: bool, exclude: bool
) -> Any:
    """Each output position's window read from x directly, position by position."""
    sizes = x.shape[2:]
    outs = [
        _out(d, p0, p1, k, s, ceil)
        for d, (p0, p1), k, s in zip(sizes, pads, kernel, strides, strict=True)
    ]
    out = np.zeros((*x.shape[:2], *outs))
    for pos in itertools.product(*(range(o) for o in outs)):
        starts = [p * s - p0 for p, s, (p0, _) in zip(pos, strides, pads, strict=True)]
        values, positions = [], 0
        for tap in itertools.product(*(range(k) for k in kernel)):
            idx = [st_ + t for st_, t in zip(starts, tap, strict=True)]
            inside = all(0 <= i < d for i, d in zip(idx, sizes, strict=True))
            in_pad = all(-p0 <= i < d + p1 for i, d, (p0, p1) in zip(idx, sizes, pads, strict=True))
            if inside:
                values.append(x[(slice(None), slice(None), *idx)])
            if inside or (in_pad and not exclude):
                positions += 1
        stacked = np.stack(values) if values else np.zeros((1, *x.shape[:2]))
        if kind == "max":  # the padding is -inf: it never wins
            v = stacked.max(0)
        elif kind == "avg":
            v = stacked.sum(0) / positions
        else:
            v = np.sqrt((stacked**2).sum(0))
        out[(slice(None), slice(None), *pos)] = v
    return out


@st.composite
def _pool_case(draw: Any) -> dict[str, Any]:
    kind = draw(st.sampled_from(["avg", "max", "l2"]))
    # coremltools allows l2_pool and ceil_mode on 1 or 2 spatial axes only
    n_sp = draw(st.integers(1, 2 if kind == "l2" else 3))
    kernel = [draw(st.integers(1, 3)) for _ in range(n_sp)]
    strides = [draw(st.integers(1, 3)) for _ in range(n_sp)]
    pad_type = draw(st.sampled_from(["valid", "same", "same_lower", "custom"]))
    ceil = pad_type in ("valid", "custom") and n_sp < 3 and draw(st.booleans())
    # ceil_mode wants symmetric padding; padding below the kernel size (one window reads input)
    half = [draw(st.integers(0, k - 1)) for k in kernel]
    pad = (
        [p for h in half for p in (h, h)]
        if ceil
        else [draw(st.integers(0, k - 1)) for k in kernel for _ in (0, 1)]
    )
    sizes = [draw(st.integers(k, 6 if n_sp < 3 else 4)) for k in kernel]
    return {
        "kind": kind,
        "shape": (2, 2, *sizes),
        "kernel": kernel,
        "strides": strides,
        "pad_type": pad_type,
        "pad": pad,
        "ceil": ceil,
        "exclude": draw(st.booleans()),
    }


@settings(max_examples=150, deadline=None)
@given(case=_pool_case(), seed=st.integers(0, 99))
def test_pools(case: dict[str, Any], seed: int) -> None:
    kind = case["kind"]
    # with ceil_mode the definition may keep a last window that starts past the input (when
    # nothing is padded), where it defines no value: such cases are not drawn
    n_sp = len(case["kernel"])
    pads = _pads(
        case["pad_type"],
        case["pad"],
        case["shape"][2:],
        case["kernel"],
        case["strides"],
        [1] * n_sp,
    )
    for d, k, s_, (p0, p1) in zip(
        case["shape"][2:], case["kernel"], case["strides"], pads, strict=True
    ):
        assume(not case["ceil"] or (_out(d, p0, p1, k, s_, True) - 1) * s_ - p0 < d)
    attrs: dict[str, Any] = {
        "kernel_sizes": case["kernel"],
        "strides": case["strides"],
        "pad_type": case["pad_type"],
        "ceil_mode": case["ceil"],
    }
    if case["pad_type"] == "custom":
        attrs["pad"] = case["pad"]
    if kind == "avg":
        attrs["exclude_padding_from_average"] = case["exclude"]
    x = np.random.default_rng(seed).normal(size=case["shape"]).astype(np.float32)
    op = f"{kind}_pool"
    fn = getattr(mb, op)
    exclude = kind == "avg" and case["exclude"]
    check(
        op,
        lambda x: fn(x=x, **attrs),
        {"x": x},
        lambda x: pool_reference(
            x, kind, case["kernel"], case["strides"], pads, case["ceil"], exclude
        ),
        fp16_extra=1e-4,
        what=str(case),
    )


def test_every_pool_is_covered() -> None:
    from ane_lib.coreml.ops import REGISTRY

    assert {n for n, d in REGISTRY.items() if d.family == "pool"} == {
        "avg_pool",
        "max_pool",
        "l2_pool",
    }

"""Conformance of the linear-algebra ops (coremltools ``linear``, ``transformers``).

Definitions: linear ``x W^T + b``; matmul NumPy's matmul with optional transposes of the last
two axes (no effect on a 1-D operand); einsum the equations ``"nchw,nwhu->nchu"`` and
``"chw,whr->chr"`` and their renamings, batch axes of size 1 broadcasting (other equations,
even the ANE attention's ``"bchq,bkhc->bkhq"``, are rejected by coremltools' builder: the
converter lowers them to ``matmul`` and ``transpose``);
scaled_dot_product_attention (iOS18) ``softmax(Q K^T / sqrt(E) + mask) V``, a bool mask keeping
the positions where it is True.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance._harness import IOS18, check, mb

_R = np.random.default_rng(3)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("bias", [False, True])
def test_linear(rank: int, bias: bool) -> None:
    x = _R.normal(size=(2, 3, 5)[-rank:]).astype(np.float32)
    params = {"weight": _R.normal(size=(4, 5))}
    if bias:
        params["bias"] = _R.normal(size=4)

    def reference(x: Any, weight: Any, bias: Any = None) -> Any:
        y = x @ weight.T
        return y if bias is None else y + bias

    check("linear", lambda x, **p: mb.linear(x=x, **p), {"x": x}, reference, params=params)


@st.composite
def _matmul_case(draw: Any) -> tuple[tuple[int, ...], tuple[int, ...], bool, bool]:
    m, k, n = (draw(st.integers(1, 4)) for _ in range(3))
    batch = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    bx = tuple(d if draw(st.booleans()) else 1 for d in batch)
    by = tuple(d if draw(st.booleans()) else 1 for d in batch)
    # a 1-D y cannot be built (coremltools' type inference reads y.shape[-2]), and coremltools
    # rejects transposing a 1-D x, which the definition calls a no-op
    kind = draw(st.sampled_from(["nd", "x1d"]))
    tx = kind != "x1d" and draw(st.booleans())
    ty = draw(st.booleans())
    xs = (k,) if kind == "x1d" else bx + ((k, m) if tx else (m, k))
    # with a 1-D x, coremltools' type inference drops the wrong axis when y has batch axes
    # (it declares (1, 1, 1) for (1,) @ (2, 1, 1, 1), where NumPy gives (2, 1, 1)): y 2-D only
    ys = (() if kind == "x1d" else by) + ((n, k) if ty else (k, n))
    return xs, ys, tx, ty


@settings(max_examples=60, deadline=None)
@given(case=_matmul_case(), seed=st.integers(0, 99))
def test_matmul(case: Any, seed: int) -> None:
    xs, ys, tx, ty = case
    r = np.random.default_rng(seed)
    x, y = r.normal(size=xs).astype(np.float32), r.normal(size=ys).astype(np.float32)

    def reference(x: Any, y: Any) -> Any:
        a = np.swapaxes(x, -1, -2) if tx and x.ndim > 1 else x
        b = np.swapaxes(y, -1, -2) if ty and y.ndim > 1 else y
        return np.matmul(a, b)

    check(
        "matmul",
        lambda x, y: mb.matmul(x=x, y=y, transpose_x=tx, transpose_y=ty),
        {"x": x, "y": y},
        reference,
        what=f"{xs} {ys} {tx} {ty}",
    )


def test_matmul_int32() -> None:
    x = _R.integers(-5, 6, (2, 3, 4)).astype(np.int32)
    y = _R.integers(-5, 6, (4, 2)).astype(np.int32)
    check("matmul", lambda x, y: mb.matmul(x=x, y=y), {"x": x, "y": y}, np.matmul)


EINSUMS = [
    ("nchw,nwhu->nchu", (2, 3, 4, 5), (2, 5, 4, 6)),
    ("nchw,nwhu->nchu", (1, 3, 4, 5), (2, 5, 1, 6)),  # batch and h broadcast
    ("abcd,adce->abce", (1, 4, 2, 6), (1, 6, 2, 4)),  # a renaming
    ("chw,whr->chr", (3, 4, 5), (5, 4, 2)),
    ("chw,whr->chr", (3, 1, 5), (5, 4, 2)),
]


@pytest.mark.parametrize(("equation", "xs", "ys"), EINSUMS)
def test_einsum(equation: str, xs: tuple[int, ...], ys: tuple[int, ...]) -> None:
    x, y = _R.normal(size=xs).astype(np.float32), _R.normal(size=ys).astype(np.float32)
    check(
        "einsum",
        lambda x, y: mb.einsum(values=(x, y), equation=equation),
        {"x": x, "y": y},
        lambda x, y: np.einsum(equation, x, y),
        what=equation,
    )


@pytest.mark.parametrize("mask", [None, "bool", "float"])
@pytest.mark.parametrize(("l_len", "s_len", "ev"), [(5, 5, 4), (3, 6, 2)])
def test_scaled_dot_product_attention(mask: Any, l_len: int, s_len: int, ev: int) -> None:
    q = _R.normal(size=(2, 3, l_len, 4)).astype(np.float32)
    k = _R.normal(size=(2, 3, s_len, 4)).astype(np.float32)
    v = _R.normal(size=(2, 3, s_len, ev)).astype(np.float32)
    inputs: dict[str, Any] = {"q": q, "k": k, "v": v}
    keep = _R.random((l_len, s_len)) > 0.3
    keep[:, 0] = True  # every query keeps a key
    bias = _R.normal(size=(l_len, s_len))

    def build(q: Any, k: Any, v: Any) -> Any:
        kwargs: dict[str, Any] = {}
        if mask == "bool":
            kwargs["attn_mask"] = keep
        elif mask == "float":
            kwargs["attn_mask"] = bias.astype(np.float16 if q.dtype == 1 else np.float32)
        return mb.scaled_dot_product_attention(query=q, key=k, value=v, **kwargs)

    def reference(q: Any, k: Any, v: Any) -> Any:
        logits = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
        if mask == "bool":
            logits = np.where(keep, logits, -np.inf)
        elif mask == "float":
            logits = logits + bias.astype(np.float32)
        e = np.exp(logits - logits.max(-1, keepdims=True))
        return (e / e.sum(-1, keepdims=True)) @ v

    # a float mask has the query's type: fp32 here (the fp16 variant is covered unmasked)
    check(
        "scaled_dot_product_attention",
        build,
        inputs,
        reference,
        opset=IOS18,
        fp16=mask != "float",
        fp16_extra=1e-4,
        what=f"mask={mask}",
    )


def test_every_linear_op_is_covered() -> None:
    from ane_lib.coreml.ops import REGISTRY

    assert {n for n, d in REGISTRY.items() if d.family == "linear"} == {
        "linear",
        "matmul",
        "einsum",
    }
    assert {n for n, d in REGISTRY.items() if d.family == "transformers"} == {
        "scaled_dot_product_attention"
    }

"""Conformance of the activation ops (coremltools ``activation``).

Definitions (coremltools' docstrings): relu max(x, 0); relu6 min(max(x, 0), 6); sigmoid
1 / (1 + exp(-x)); silu x sigmoid(x); softplus log(1 + exp(x)); softsign x / (1 + |x|);
gelu EXACT 0.5 x (1 + erf(x / sqrt 2)), TANH_APPROXIMATION 0.5 x (1 + tanh(sqrt(2 / pi)
(x + 0.044715 x^3))), SIGMOID_APPROXIMATION x sigmoid(1.702 x); leaky_relu x if x >= 0 else
alpha x; elu x if x > 0 else alpha (exp(x) - 1); clamped_relu min(beta, x if x >= 0 else alpha
x); linear_activation alpha x + beta; scaled_tanh alpha tanh(beta x); sigmoid_hard
min(max(alpha x + beta, 0), 1); thresholded_relu x if x >= alpha else 0; prelu and
softplus_parametric with per-channel (axis 1) alpha, beta; softmax exp(x) / sum exp(x) over axis.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from conformance._harness import check, mb

_erf = np.vectorize(math.erf)


def _sigmoid(x: Any) -> Any:
    return 1 / (1 + np.exp(-x))


def _x(shape: tuple[int, ...] = (2, 3, 4, 5), seed: int = 0, scale: float = 3.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


PLAIN = {
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.minimum(np.maximum(x, 0), 6),
    "sigmoid": _sigmoid,
    "silu": lambda x: x * _sigmoid(x),
    "softplus": lambda x: np.log1p(np.exp(x)),
    "softsign": lambda x: x / (1 + np.abs(x)),
}


@pytest.mark.parametrize("op", list(PLAIN))
@pytest.mark.parametrize("shape", [(7,), (2, 3, 4, 5)])
def test_plain_activations(op: str, shape: tuple[int, ...]) -> None:
    fn = getattr(mb, op)
    check(op, lambda x: fn(x=x), {"x": _x(shape)}, PLAIN[op])


GELU = {
    "EXACT": lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    "TANH_APPROXIMATION": lambda x: (
        0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    ),
    "SIGMOID_APPROXIMATION": lambda x: x * _sigmoid(1.702 * x),
}


@pytest.mark.parametrize("mode", list(GELU))
def test_gelu(mode: str) -> None:
    check("gelu", lambda x: mb.gelu(x=x, mode=mode), {"x": _x()}, GELU[mode], what=mode)


PARAMETRIC = {
    "leaky_relu": (lambda x, a, b: np.where(x >= 0, x, a * x), ("alpha",)),
    "elu": (lambda x, a, b: np.where(x > 0, x, a * (np.exp(x) - 1)), ("alpha",)),
    "clamped_relu": (lambda x, a, b: np.minimum(b, np.where(x >= 0, x, a * x)), ("alpha", "beta")),
    "linear_activation": (lambda x, a, b: a * x + b, ("alpha", "beta")),
    "scaled_tanh": (lambda x, a, b: a * np.tanh(b * x), ("alpha", "beta")),
    "sigmoid_hard": (lambda x, a, b: np.minimum(np.maximum(a * x + b, 0), 1), ("alpha", "beta")),
    "thresholded_relu": (lambda x, a, b: np.where(x >= a, x, 0), ("alpha",)),
}


@pytest.mark.parametrize("op", list(PARAMETRIC))
@pytest.mark.parametrize(("alpha", "beta"), [(0.2, 0.5), (1.5, 2.0), (-0.3, 4.0)])
def test_parametric_activations(op: str, alpha: float, beta: float) -> None:
    reference, names = PARAMETRIC[op]
    fn = getattr(mb, op)
    params = {p: v for p, v in (("alpha", alpha), ("beta", beta)) if p in names}

    def expected(x: Any, alpha: Any = None, beta: Any = None) -> Any:
        return reference(x, alpha, beta)

    check(
        op,
        lambda x, **p: fn(x=x, **p),
        {"x": _x(seed=1)},
        expected,
        params=params,
        what=f"alpha={alpha} beta={beta}",
    )


@pytest.mark.parametrize("rank", [3, 4, 5])
def test_per_channel_activations(rank: int) -> None:
    shape = (2, 4, 3, 2, 3)[:rank]
    r = np.random.default_rng(rank)
    # prelu of rank 3 and 5 takes one slope for all channels (coremltools checks this)
    alpha = r.uniform(0.1, 2, 4) if rank == 4 else np.full(4, 0.3)
    beta = r.uniform(0.2, 2, 4)
    per = (1, 4) + (1,) * (rank - 2)
    check(
        "prelu",
        lambda x, alpha: mb.prelu(x=x, alpha=alpha),
        {"x": _x(shape)},
        lambda x, alpha: np.where(x >= 0, x, alpha.reshape(per) * x),
        params={"alpha": alpha},
    )
    check(
        "softplus_parametric",
        lambda x, alpha, beta: mb.softplus_parametric(x=x, alpha=alpha, beta=beta),
        {"x": _x(shape)},
        lambda x, alpha, beta: alpha.reshape(per) * np.log1p(np.exp(beta.reshape(per) * x)),
        params={"alpha": r.uniform(0.1, 2, 4), "beta": beta},
    )


@pytest.mark.parametrize("axis", [-4, -3, -1, 0, 1, 2, 3])
def test_softmax(axis: int) -> None:
    def reference(x: Any) -> Any:
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)

    check(
        "softmax",
        lambda x: mb.softmax(x=x, axis=axis),
        {"x": _x(scale=4)},
        reference,
        what=f"axis {axis}",
    )


def test_every_activation_is_covered() -> None:
    from ane_lib.coreml.ops import REGISTRY

    covered = {*PLAIN, "gelu", *PARAMETRIC, "prelu", "softplus_parametric", "softmax"}
    assert {n for n, d in REGISTRY.items() if d.family == "activation"} == covered

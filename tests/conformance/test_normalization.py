"""Conformance of the normalizations (coremltools ``normalization``).

Definitions: batch_norm gamma (x - mean) / sqrt(variance + epsilon) + beta per channel (axis
1); instance_norm the same with each (n, c) slice's own mean and (biased) variance over the
spatial axes; layer_norm over ``axes`` with gamma, beta of the normalised axes' shape;
l2_norm x / sqrt(sum of squares over the last three axes + epsilon); local_response_norm
x / (k + alpha / size * sum of x^2 over neighbouring channels)^beta. The channel axis of
local_response_norm is -3: the definition says axis 1 of ``(n, C, *D)``, but Core ML's own
outputs for a rank-3 input (recorded in coremltools' op tests, below) normalise across axis 0;
the two agree for rank 4.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from conformance._harness import IOS15, IOS17, build, check, ct, mb, run_built

_R = np.random.default_rng(11)


def _per(v: Any, rank: int) -> Any:
    return v.reshape((1, -1) + (1,) * (rank - 2))


@pytest.mark.parametrize("rank", [3, 4, 5])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("epsilon", [None, 1e-3])
def test_batch_norm(rank: int, affine: bool, epsilon: Any) -> None:
    c = 4
    x = _R.normal(size=(2, c, 3, 4, 2)[:rank]).astype(np.float32)
    params = {"mean": _R.normal(size=c), "variance": _R.uniform(0.5, 2, c)}
    if affine:
        params |= {"gamma": _R.normal(size=c), "beta": _R.normal(size=c)}
    if epsilon is not None:
        params["epsilon"] = epsilon

    def reference(
        x: Any, mean: Any, variance: Any, gamma: Any = None, beta: Any = None, epsilon: Any = 1e-5
    ) -> Any:
        y = (x - _per(mean, rank)) / np.sqrt(_per(variance, rank) + epsilon)
        if gamma is not None:
            y = y * _per(gamma, rank) + _per(beta, rank)
        return y

    check(
        "batch_norm",
        lambda x, **p: mb.batch_norm(x=x, **p),
        {"x": x},
        reference,
        params=params,
        what=f"rank {rank} affine={affine} eps={epsilon}",
    )


def test_batch_norm_fp16_statistics_on_fp32_input() -> None:
    # iOS17 lets x (fp32) and the parameters (fp16) differ: the statistics are the fp16 values
    x = _R.normal(size=(1, 3, 4, 4)).astype(np.float32)
    mean, var = _R.normal(size=3).astype(np.float16), _R.uniform(0.5, 2, 3).astype(np.float16)
    (got,) = run_built(
        build(lambda x: mb.batch_norm(x=x, mean=mean, variance=var), {"x": x}), {"x": x}
    )
    ref = (x - _per(mean.astype(np.float64), 4)) / np.sqrt(_per(var.astype(np.float64), 4) + 1e-5)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("rank", [3, 4])
@pytest.mark.parametrize("affine", [False, True])
def test_instance_norm(rank: int, affine: bool) -> None:
    c = 3
    x = _R.normal(2, 3, size=(2, c, 5, 4)[:rank]).astype(np.float32)
    params: dict[str, Any] = {"epsilon": 1e-3}
    if affine:
        params |= {"gamma": _R.normal(size=c), "beta": _R.normal(size=c)}
    axes = tuple(range(2, rank))

    def reference(x: Any, epsilon: Any, gamma: Any = None, beta: Any = None) -> Any:
        y = (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + epsilon)
        return y if gamma is None else y * _per(gamma, rank) + _per(beta, rank)

    check(
        "instance_norm",
        lambda x, **p: mb.instance_norm(x=x, **p),
        {"x": x},
        reference,
        params=params,
        fp16_extra=1e-3,
    )


# (axes omitted cannot be built: coremltools' default range(rank) is not a valid constant)
@pytest.mark.parametrize("axes", [[-1], [1], [0, 2], [3, 1], [-1, -2], [0, 1, 2, 3]])
@pytest.mark.parametrize("affine", [False, True])
def test_layer_norm(axes: Any, affine: bool) -> None:
    shape = (2, 3, 4, 5)
    x = _R.normal(1, 2, size=shape).astype(np.float32)
    dims = tuple(a % 4 for a in axes)
    # gamma and beta: the shape of x.shape[axes] (coremltools), i.e. the normalised axes
    # in x's order (the definition's example: x (3, 4, 5, 6), axes [2, 3] -> (5, 6))
    norm_shape = tuple(shape[d] for d in sorted(dims))
    params: dict[str, Any] = {"epsilon": 1e-4}
    if affine:
        params |= {"gamma": _R.normal(size=norm_shape), "beta": _R.normal(size=norm_shape)}
    full = [shape[d] if d in dims else 1 for d in range(4)]

    def reference(x: Any, epsilon: Any, gamma: Any = None, beta: Any = None) -> Any:
        y = (x - x.mean(dims, keepdims=True)) / np.sqrt(x.var(dims, keepdims=True) + epsilon)
        return y if gamma is None else y * gamma.reshape(full) + beta.reshape(full)

    check(
        "layer_norm",
        lambda x, **p: mb.layer_norm(x=x, axes=axes, **p),
        {"x": x},
        reference,
        params=params,
        fp16_extra=1e-3,
        what=f"axes={axes}",
    )


@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 3, 4, 5), (2, 2, 3, 2, 4)])
def test_l2_norm(shape: tuple[int, ...]) -> None:
    x = _R.normal(size=shape).astype(np.float32)
    axes = tuple(range(len(shape) - 3, len(shape)))
    check(
        "l2_norm",
        lambda x, epsilon: mb.l2_norm(x=x, epsilon=epsilon),
        {"x": x},
        lambda x, epsilon: x / np.sqrt(np.sum(x * x, axis=axes, keepdims=True) + epsilon),
        params={"epsilon": 1e-6},
    )


def _lrn(x: Any, size: int, alpha: float, beta: float, k: float) -> Any:
    # the window of channel c (axis -3): c - floor(size / 2) .. c + floor((size - 1) / 2)
    xc = np.moveaxis(x, -3, 0)
    c = xc.shape[0]
    sq = xc * xc
    out = np.empty_like(xc)
    for i in range(c):
        lo, hi = max(0, i - size // 2), min(c - 1, i + (size - 1) // 2)
        out[i] = xc[i] / (k + alpha / size * sq[lo : hi + 1].sum(axis=0)) ** beta
    return np.moveaxis(out, 0, -3)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("rank", [3, 4, 5])
def test_local_response_norm(size: int, rank: int) -> None:
    x = _R.normal(size=(2, 6, 3, 4, 2)[:rank]).astype(np.float32) * 3
    params = {"alpha": 0.01, "beta": 0.75, "k": 2.0}
    check(
        "local_response_norm",
        lambda x, **p: mb.local_response_norm(x=x, size=size, **p),
        {"x": x},
        lambda x, alpha, beta, k: _lrn(x, size, alpha, beta, k),
        params=params,
        what=f"size {size} rank {rank}",
    )


def test_local_response_norm_matches_core_ml_outputs() -> None:
    # Core ML's outputs for this case, recorded in coremltools' op tests
    # (ops/tests/iOS14/test_normalization.py, TestNormalizationLocalResponseNorm): for this
    # (1, 3, 2) input every value is normalised by its own square only, so the channel axis
    # is -3 (size 1 here), not axis 1
    x = np.array([[[1.0, -7.0], [5.0, -6.0], [-3.0, -5.0]]], dtype=np.float32)
    program = build(
        lambda x: (
            mb.local_response_norm(x=x, size=2),
            mb.local_response_norm(x=x, size=3, alpha=1e-4, beta=0.75, k=1.0),
        ),
        {"x": x},
        IOS15,
    )
    size2, size3 = run_built(program, {"x": x})
    np.testing.assert_allclose(
        size2,
        [[[0.99996257, -6.98716545], [4.99531746, -5.99191284], [-2.99898791, -4.99531746]]],
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        size3,
        [[[0.99997497, -6.99143696], [4.99687672, -5.99460602], [-2.99932504, -4.99687672]]],
        rtol=1e-6,
    )


def test_every_normalization_is_covered() -> None:
    from ane_lib.coreml.ops import REGISTRY

    covered = {"batch_norm", "instance_norm", "layer_norm", "l2_norm", "local_response_norm"}
    assert {n for n, d in REGISTRY.items() if d.family == "normalization"} == covered
    assert ct.target.iOS17 == IOS17

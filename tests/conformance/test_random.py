"""Conformance of the random ops (coremltools ``random``): the distributions, not the values.

Core ML's random stream cannot be reproduced off the device; the definitions fix only the
distributions: normal(mean, stddev), uniform on [low, high), Bernoulli(prob), categorical over
the last axis (from logits or probabilities), drawn with replacement. Each test draws enough
samples that a wrong distribution fails (a Kolmogorov-Smirnov distance, or a mean and a
variance, at least 6 standard errors away), and checks that an op's seed fixes its values.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from conformance._harness import build, mb

N = 20000


def _draw(fn: Any, seed_run: int = 0) -> np.ndarray:
    x = np.zeros(1, np.float32)
    program = build(lambda x: fn(), {"x": x})
    from ane_lib.coreml import run

    (out,) = run(program, {"x": x}, seed=seed_run).values()
    return np.asarray(out, np.float64)


def _ks_distance(samples: np.ndarray, cdf: Any) -> float:
    s = np.sort(samples.ravel())
    n = s.size
    theory = cdf(s)
    return float(max(np.max(np.arange(1, n + 1) / n - theory), np.max(theory - np.arange(n) / n)))


_KS_LIMIT = 1.95 / math.sqrt(N)  # the 0.1% critical value of the one-sample KS test


@pytest.mark.parametrize(("mean", "stddev"), [(0.0, 1.0), (2.5, 0.3)])
def test_random_normal(mean: float, stddev: float) -> None:
    v = _draw(
        lambda: mb.random_normal(
            shape=np.array([N], np.int32), mean=np.float32(mean), stddev=np.float32(stddev)
        )
    )
    erf = np.vectorize(math.erf)
    assert (
        _ks_distance(v, lambda s: 0.5 * (1 + erf((s - mean) / (stddev * math.sqrt(2))))) < _KS_LIMIT
    )
    assert v.shape == (N,)


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (-3.0, 5.0)])
def test_random_uniform(low: float, high: float) -> None:
    v = _draw(
        lambda: mb.random_uniform(
            shape=np.array([N // 100, 100], np.int32), low=np.float32(low), high=np.float32(high)
        )
    )
    assert v.shape == (N // 100, 100)
    assert v.min() >= low and v.max() < high
    assert _ks_distance(v, lambda s: (s - low) / (high - low)) < _KS_LIMIT


@pytest.mark.parametrize("prob", [0.5, 0.1])
def test_random_bernoulli(prob: float) -> None:
    v = _draw(lambda: mb.random_bernoulli(shape=np.array([N], np.int32), prob=np.float32(prob)))
    assert set(np.unique(v)) <= {0.0, 1.0}
    assert abs(v.mean() - prob) < 6 * math.sqrt(prob * (1 - prob) / N)


@pytest.mark.parametrize("mode", ["logits", "probs"])
def test_random_categorical(mode: str) -> None:
    p = np.array([[0.1, 0.6, 0.3], [0.5, 0.25, 0.25]])
    x = np.log(p) if mode == "logits" else p
    v = _draw(lambda: mb.random_categorical(x=x.astype(np.float32), mode=mode, size=N // 2))
    assert v.shape == (2, N // 2)
    for row in range(2):
        freq = np.bincount(v[row].astype(int), minlength=3) / (N // 2)
        assert np.all(np.abs(freq - p[row]) < 6 * np.sqrt(p[row] * (1 - p[row]) / (N // 2))), (
            row,
            freq,
        )


def test_seeds_fix_the_values() -> None:
    # an op's own seed gives the same values on every run; without one, run(seed=...) does
    seeded = lambda: mb.random_normal(shape=np.array([5], np.int32), seed=7)  # noqa: E731
    unseeded = lambda: mb.random_uniform(shape=np.array([5], np.int32))  # noqa: E731
    np.testing.assert_array_equal(_draw(seeded, 0), _draw(seeded, 1))
    np.testing.assert_array_equal(_draw(unseeded, 3), _draw(unseeded, 3))
    assert not np.array_equal(_draw(unseeded, 3), _draw(unseeded, 4))


def test_every_random_op_is_covered() -> None:
    from ane_lib.coreml.ops import REGISTRY

    covered = {"random_normal", "random_uniform", "random_bernoulli", "random_categorical"}
    assert {n for n, d in REGISTRY.items() if d.family == "random"} == covered

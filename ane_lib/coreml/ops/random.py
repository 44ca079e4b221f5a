"""Random sampling (coremltools ``random``): ``random_normal``, ``random_uniform``,
``random_bernoulli``, ``random_categorical``.

Core ML's random stream cannot be reproduced off the device, so these ops draw from torch's
generator: seeded by the op's ``seed`` when it is >= 0 (the same values on every run), else by
``run(..., seed=...)`` and the op's position. The distributions are the op definitions'; the
values are not Core ML's.
"""

from __future__ import annotations

import torch

from ane_lib.coreml.ops._registry import OpArgs, register


def _shape(a: OpArgs) -> list[int]:
    return [int(v) for v in a.get("shape").reshape(-1).tolist()]


def _generator(a: OpArgs) -> torch.Generator:
    return a.runtime.generator(a.op, a.int("seed", -1))


@register("random_normal")
def _random_normal(a: OpArgs) -> torch.Tensor:
    z = torch.randn(_shape(a), generator=_generator(a), dtype=torch.float64)
    return a.float("mean", 0.0) + a.float("stddev", 1.0) * z


@register("random_uniform")
def _random_uniform(a: OpArgs) -> torch.Tensor:
    # uniform over [low, high)
    u = torch.rand(_shape(a), generator=_generator(a), dtype=torch.float64)
    low, high = a.float("low", 0.0), a.float("high", 1.0)
    return low + (high - low) * u


@register("random_bernoulli")
def _random_bernoulli(a: OpArgs) -> torch.Tensor:
    # 1 with probability prob, else 0
    u = torch.rand(_shape(a), generator=_generator(a), dtype=torch.float64)
    return (u < a.float("prob", 0.5)).to(torch.float32)


@register("random_categorical")
def _random_categorical(a: OpArgs) -> torch.Tensor:
    # x: (*D, K) logits (or probabilities) -> (*D, size) class indices drawn with replacement
    x = a.get("x").to(torch.float64)
    probs = torch.softmax(x, dim=-1) if a.str("mode", "logits") == "logits" else x
    flat = probs.reshape(-1, probs.shape[-1])
    size = a.int("size", 1)
    draws = torch.multinomial(flat, size, replacement=True, generator=_generator(a))
    return draws.reshape(*probs.shape[:-1], size).to(torch.float32)

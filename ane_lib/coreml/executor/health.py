"""Numeric health of a run, op by op: how close each stored output comes to fp16's limits.

Two limits of float16 matter on the Neural Engine. Values beyond 65504 overflow to inf (the
executor reports the first op where that happens). Values below 2**-14 ~ 6.1e-5, fp16's
smallest normal number, are *subnormal*: IEEE 754 keeps them with fewer significant bits
(down to 2**-24 ~ 6e-8, then 0), and hardware may instead flush them to zero.

What is documented about flushing (none of it by Apple about the Neural Engine):

- Arm's architecture makes it a mode: in AArch64 the FPCR register's FZ bit flushes single-
  and double-precision subnormals to zero and, with the half-precision extension, the FZ16 bit
  does so for fp16 (Arm Architecture Reference Manual for A-profile, FPCR); Arm's compiler
  documentation says AArch32 NEON always flushes ("Flush-to-zero mode in NEON").
- Apple's macOS arm64 ``fenv.h`` keeps subnormals in its default environment and offers
  ``FE_DFL_DISABLE_DENORMS_ENV`` to flush them, for the CPU.
- Apple documents nothing about how the Neural Engine (or Core ML's GPU path) treats fp16
  subnormals. Where they are flushed, every subnormal value below becomes 0.

So a large subnormal share is a warning sign, not an error: the executor keeps subnormals (it
rounds with IEEE 754's rules, as torch and numpy do) and :func:`numeric_health` reports, per op,
the share of its stored output that is subnormal, as well as zeros, the largest magnitude and
inf/nan counts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["FP16_SMALLEST_NORMAL", "NumericHealth", "OpHealth", "op_health"]

FP16_SMALLEST_NORMAL = 2.0**-14
FP32_SMALLEST_NORMAL = 2.0**-126


@dataclass(frozen=True)
class OpHealth:
    """One op output of a run: its storage type and how its values sit in that type's range.

    ``subnormal`` is the share of values with ``0 < |x| <`` the smallest normal number of the
    storage type (fp16: 2**-14), ``zero`` the share of exact zeros, ``max_abs`` the largest
    finite magnitude, ``nonfinite`` the number of inf/nan values.
    """

    op_name: str
    op_type: str
    output: str
    storage: str
    size: int
    subnormal: float
    zero: float
    max_abs: float
    nonfinite: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def op_health(op: Any, var: Any, value: torch.Tensor, storage: str) -> OpHealth | None:
    """Statistics of one stored float output (None for non-float values)."""
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        return None
    size = value.numel()
    magnitude = value.abs()
    finite = torch.isfinite(value)
    smallest = FP16_SMALLEST_NORMAL if storage == "fp16" else FP32_SMALLEST_NORMAL
    subnormal = int(((magnitude > 0) & (magnitude < smallest)).sum())
    zeros = int((value == 0).sum())
    finite_magnitude = magnitude[finite]
    return OpHealth(
        op_name=str(op.name),
        op_type=str(op.op_type),
        output=str(var.name),
        storage=storage,
        size=size,
        subnormal=subnormal / size if size else 0.0,
        zero=zeros / size if size else 0.0,
        max_abs=float(finite_magnitude.max()) if finite_magnitude.numel() else 0.0,
        nonfinite=size - int(finite.sum()),
    )


@dataclass(frozen=True)
class NumericHealth:
    """Per-op health of one run (``ops``, in program order) and summaries over all of them.

    ``subnormal_share`` is the share of all stored fp16 values that are subnormal;
    ``first_subnormal`` the first op whose fp16 output holds any; ``first_nonfinite`` the first
    op whose output holds inf/nan (the op the executor's overflow check names).
    """

    mode: str
    ops: tuple[OpHealth, ...]

    @property
    def fp16_ops(self) -> tuple[OpHealth, ...]:
        return tuple(h for h in self.ops if h.storage == "fp16")

    @property
    def subnormal_share(self) -> float:
        values = self.fp16_ops
        total = sum(h.size for h in values)
        return sum(h.subnormal * h.size for h in values) / total if total else 0.0

    @property
    def first_subnormal(self) -> OpHealth | None:
        return next((h for h in self.fp16_ops if h.subnormal > 0), None)

    @property
    def first_nonfinite(self) -> OpHealth | None:
        return next((h for h in self.ops if h.nonfinite), None)

    def worst(self, n: int = 10) -> list[OpHealth]:
        """The ``n`` fp16 outputs with the largest subnormal share."""
        return sorted(self.fp16_ops, key=lambda h: h.subnormal, reverse=True)[:n]

    def by_op_type(self) -> dict[str, float]:
        """Subnormal share of the fp16 values each op type stores."""
        sums: dict[str, list[float]] = {}
        for h in self.fp16_ops:
            acc = sums.setdefault(h.op_type, [0.0, 0.0])
            acc[0] += h.subnormal * h.size
            acc[1] += h.size
        return {k: s / n for k, (s, n) in sorted(sums.items()) if n}

    def to_dict(self) -> dict[str, Any]:
        first = self.first_subnormal
        return {
            "mode": self.mode,
            "subnormal_share": self.subnormal_share,
            "first_subnormal": None if first is None else first.op_name,
            "ops": [h.to_dict() for h in self.ops],
        }

    def table(self, rows: Sequence[OpHealth] | None = None) -> str:
        """A text table of ``rows`` (default: the 10 worst), at most 79 characters wide."""
        rows = self.worst() if rows is None else rows
        lines = [f"{'op':<34}{'type':<16}{'subnormal':>10}{'zero':>8}{'max |x|':>11}"]
        for h in rows:
            lines.append(
                f"{h.op_name[:33]:<34}{h.op_type[:15]:<16}{h.subnormal:>10.1%}{h.zero:>8.1%}"
                f"{h.max_abs:>11.4g}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        first = self.first_subnormal
        head = (
            f"{len(self.ops)} float outputs ({len(self.fp16_ops)} stored in fp16, mode "
            f"{self.mode!r}); subnormal share of fp16 values {self.subnormal_share:.2%}; first "
            f"op with subnormals: {'none' if first is None else repr(first.op_name)}"
        )
        return head + "\n" + self.table()

"""A backend-neutral description of a compiled program, for the Neural Engine rules.

The rules of :mod:`ane_lib.ane_rules.rules` read programs in this form, not in the form of any
one toolchain: the Core ML front end (:mod:`ane_lib.coreml.mil_graph`) adapts a MIL program to
it, and another front end (Core AI's IR, say) only has to do the same.

- :class:`Value`: one tensor (or scalar) of the program: a model input, a constant or an op's
  output, with its shape and element type.
- :class:`Op`: one op that computes: its type, input and output values, its attributes
  (strides, axes, permutations, ...), and the PyTorch module it came from.
- :class:`Graph`: the ops in program order with the program's inputs and outputs, what is known
  about its weights, and what could not be analysed.

Vocabulary. ``Op.op_type`` uses the MIL op names (``conv``, ``softmax``, ``transpose``,
``reshape``, ``max_pool``, ...) and ``Value.dtype`` the short names ``"fp16"``, ``"fp32"``,
``"int8"``, ``"int32"``, ``"bool"``; a front end for another IR maps its names onto these.
Attribute names are MIL's too: ``strides``, ``dilations``, ``kernel_sizes`` (for a convolution,
the spatial size of its weight), ``axis``, ``perm``, ``groups``.

Module paths. ``Op.module`` is the dotted path of the PyTorch submodule whose ``forward`` created
the op, e.g. ``"stages.2.0.mbconv.depthwise_conv"``; ``""`` is the model's own ``forward`` (glue
such as a final ``flatten``); ``None`` means unknown (the program was not exported with module
paths, or the op has no PyTorch origin). :func:`stage_of` groups paths into stages.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, Protocol

from ane_lib.functional.alignment import padded_nbytes, real_nbytes

__all__ = [
    "Shape",
    "ValueKind",
    "Value",
    "Op",
    "PaddedBytes",
    "WeightSummary",
    "Graph",
    "stage_of",
    "TOP_LEVEL",
    "UNKNOWN_MODULE",
]

Shape = tuple[int | str, ...]
"""A shape; a symbolic (flexible) dimension is a string such as ``"is0"``."""

ValueKind = Literal["input", "const", "op"]

TOP_LEVEL = "(top level)"
"""Stage of the ops written in the model's own ``forward`` (module path ``""``)."""
UNKNOWN_MODULE = "(unknown)"
"""Stage of the ops whose module path is not known."""

_INDEX = re.compile(r"\d+")


@dataclass(frozen=True)
class Value:
    """One tensor or scalar of the program.

    ``shape``: ``()`` for a scalar; symbolic dimensions are strings. ``dtype``: ``"fp16"``,
    ``"fp32"``, ``"int32"``, ... ``kind``: ``"input"`` (a program input), ``"const"`` (a
    constant, weights included) or ``"op"`` (an op's output, made by ``producer``).
    ``minimum``: the smallest element of a floating-point constant (``-inf`` included), used to
    find masks of ``-inf``; None when unknown or not a floating-point constant.
    """

    name: str
    shape: Shape
    dtype: str
    kind: ValueKind = "op"
    producer: str | None = None
    minimum: float | None = None

    @property
    def rank(self) -> int:
        """Number of axes (0 for a scalar)."""
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        """True when every dimension is a known integer."""
        return all(isinstance(d, int) for d in self.shape)

    @property
    def last_axis(self) -> int | str:
        """Size of the last axis (1 for a scalar, which counts as one value on a last axis of 1)."""
        return self.shape[-1] if self.shape else 1

    @cached_property
    def nbytes(self) -> tuple[int, int]:
        """``(real, padded)`` bytes under the 64-byte last-axis rule; ``(0, 0)`` when unknown.

        Unknown: a symbolic or zero dimension, or an element type without a byte size.
        """
        if not self.is_static or any(d == 0 for d in self.shape):
            return 0, 0
        dims = [int(d) for d in self.shape]
        try:
            return real_nbytes(dims, self.dtype), padded_nbytes(dims, self.dtype)
        except (TypeError, ValueError):
            return 0, 0

    @property
    def real_bytes(self) -> int:
        return self.nbytes[0]

    @property
    def padded_bytes(self) -> int:
        return self.nbytes[1]


class _HasBytes(Protocol):
    @property
    def real_bytes(self) -> int: ...

    @property
    def padded_bytes(self) -> int: ...


class PaddedBytes:
    """What follows from ``real_bytes`` and ``padded_bytes`` (an op's, a stage's)."""

    @property
    def wasted_bytes(self: _HasBytes) -> int:
        """Padding bytes: ``padded_bytes - real_bytes``."""
        return self.padded_bytes - self.real_bytes

    @property
    def overhead(self: _HasBytes) -> float:
        """``padded_bytes / real_bytes`` (1.0 when nothing is counted)."""
        return self.padded_bytes / self.real_bytes if self.real_bytes else 1.0


@dataclass(frozen=True, eq=False)
class Op(PaddedBytes):
    """One op that computes (constants are :class:`Value` objects, not ops).

    ``inputs`` / ``outputs``: its tensor and scalar values in order (constants included among
    the inputs). ``attrs``: attributes by MIL name (``strides``, ``axis``, ``perm``, ...).
    ``module`` / ``module_type``: the PyTorch module path and class it came from (see the
    module docstring). ``at_boundary``: it reads a program input or writes a program output.
    """

    name: str
    op_type: str
    inputs: tuple[Value, ...]
    outputs: tuple[Value, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    module: str | None = None
    module_type: str | None = None
    at_boundary: bool = False

    # ------------------------------------------------------------------ shapes and bytes

    @property
    def shapes(self) -> tuple[Shape, ...]:
        """Output shapes, one per output."""
        return tuple(v.shape for v in self.outputs)

    @property
    def dtypes(self) -> tuple[str, ...]:
        """Output element types, one per output."""
        return tuple(v.dtype for v in self.outputs)

    @property
    def rank(self) -> int:
        """Largest rank among the outputs (0 for scalars or no outputs)."""
        return max((v.rank for v in self.outputs), default=0)

    @property
    def max_dim(self) -> int:
        """Largest known dimension among the outputs (0 if none)."""
        return max((d for s in self.shapes for d in s if isinstance(d, int)), default=0)

    @property
    def real_bytes(self) -> int:
        """Bytes the outputs' values need."""
        return sum(v.real_bytes for v in self.outputs)

    @property
    def padded_bytes(self) -> int:
        """Bytes the outputs occupy with every last axis padded to 64 bytes."""
        return sum(v.padded_bytes for v in self.outputs)

    # ------------------------------------------------------------------ where it came from

    @property
    def stage(self) -> str:
        """The stage of :attr:`module` (see :func:`stage_of`)."""
        return stage_of(self.module)

    @property
    def where(self) -> str:
        """The module path for display: ``(top level)`` for ``""``, ``(unknown)`` for None."""
        if self.module is None:
            return UNKNOWN_MODULE
        return self.module or TOP_LEVEL

    @property
    def is_cast(self) -> bool:
        return self.op_type == "cast"

    @property
    def boundary_cast(self) -> bool:
        """A ``cast`` at the program's edge (converting an input or an output)."""
        return self.is_cast and self.at_boundary

    @property
    def is_fp32(self) -> bool:
        """An output is fp32 and the op is not a cast at the program's edge."""
        return "fp32" in self.dtypes and not self.boundary_cast

    def attr_ints(self, name: str) -> tuple[int, ...]:
        """Attribute ``name`` as a tuple of ints (``()`` when absent or not numeric)."""
        value = self.attrs.get(name)
        if value is None or isinstance(value, str):
            return ()
        items = value if isinstance(value, (list, tuple)) else [value]
        try:
            return tuple(int(v) for v in items)
        except (TypeError, ValueError):
            return ()

    def __repr__(self) -> str:
        shapes = ", ".join(str(s) for s in self.shapes)
        return f"Op({self.name!r}, {self.op_type!r}, module={self.module!r}, shapes=[{shapes}])"


def stage_of(module: str | None) -> str:
    """The stage a module path belongs to: the path up to its first numeric component.

    ``"stages.2.0.mbconv.norm"`` -> ``"stages.2"``, ``"encoder.layer.3.attention"`` ->
    ``"encoder.layer.3"``, ``"blocks.11.mlp"`` -> ``"blocks.11"``; a path without an index
    is its first component (``"stem.conv0"`` -> ``"stem"``, ``"head"`` -> ``"head"``). The
    model's own ``forward`` (``""``) is :data:`TOP_LEVEL`; an unknown path (None) is
    :data:`UNKNOWN_MODULE`.
    """
    if module is None:
        return UNKNOWN_MODULE
    if not module:
        return TOP_LEVEL
    parts = module.split(".")
    for i, part in enumerate(parts):
        if _INDEX.fullmatch(part):
            return ".".join(parts[: i + 1])
    return parts[0]


@dataclass(frozen=True)
class WeightSummary:
    """What the program's constants hold.

    ``weight_bytes`` in ``weight_tensors`` tensors: floating-point and 8-bit-or-narrower
    constants (and everything that feeds a decompression op). ``other_bytes``: integer and
    scalar constants (shapes, axes, index tables). ``const_count``: number of constant ops.
    """

    weight_bytes: int = 0
    weight_tensors: int = 0
    other_bytes: int = 0
    const_count: int = 0


@dataclass(frozen=True)
class Graph:
    """A program as the rules see it.

    ``ops``: the ops that compute, in program order (nested blocks flattened in order).
    ``inputs`` / ``outputs``: the program's interface. ``source``: where it was read from.
    ``backend``: which toolchain made it (e.g. ``"Core ML ML program"``). ``module_paths``:
    whether the ops carry PyTorch module paths (recorded at export) at all. ``unanalysed``:
    ``(op name, op type, reason)`` of each op that could not be described and is left out.
    ``notes``: anything else the front end could not read (shown with the report).
    """

    ops: tuple[Op, ...]
    inputs: tuple[Value, ...] = ()
    outputs: tuple[Value, ...] = ()
    source: str = "<program>"
    backend: str = ""
    weights: WeightSummary = WeightSummary()
    module_paths: bool = False
    unanalysed: tuple[tuple[str, str, str], ...] = ()
    notes: tuple[str, ...] = ()

    @cached_property
    def _consumers(self) -> dict[str, list[Op]]:
        table: dict[str, list[Op]] = {}
        for op in self.ops:
            for value in op.inputs:
                table.setdefault(value.name, []).append(op)
        return table

    @cached_property
    def _producers(self) -> dict[str, Op]:
        return {v.name: op for op in self.ops for v in op.outputs}

    def consumers(self, value: Value | str) -> list[Op]:
        """The ops that read ``value`` (a :class:`Value` or a value name), in program order."""
        name = value if isinstance(value, str) else value.name
        return list(self._consumers.get(name, ()))

    def producer(self, value: Value | str) -> Op | None:
        """The op that computes ``value``; None for inputs and constants."""
        name = value if isinstance(value, str) else value.name
        return self._producers.get(name)

    def downstream(self, op: Op) -> Iterator[Op]:
        """The ops that read any output of ``op``."""
        seen: set[int] = set()
        for value in op.outputs:
            for consumer in self._consumers.get(value.name, ()):
                if id(consumer) not in seen:
                    seen.add(id(consumer))
                    yield consumer

    @property
    def flexible_inputs(self) -> tuple[Value, ...]:
        """Program inputs with a symbolic dimension."""
        return tuple(v for v in self.inputs if not v.is_static)

"""The executor's op registry: one entry per MIL op type, and what an op implementation sees.

An op implementation is a function ``fn(a: OpArgs) -> value`` registered with
:func:`register`; its family is the name of the module that registers it. Values are torch
tensors: float tensors arrive as float32 whatever their storage precision (fp16 values are
held exactly in float32), integer and bool tensors in their own dtype, string parameters as
``str``. An op returns a tensor (or numpy array, or Python scalar), or a tuple of them for ops
with several outputs; the executor casts and rounds each to its variable's storage type.
"""

from __future__ import annotations

import builtins
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

__all__ = [
    "DECLINED",
    "REGISTRY",
    "Declined",
    "ExecutorError",
    "OpArgs",
    "OpDef",
    "OpFn",
    "Runtime",
    "UnsupportedOpError",
    "decline",
    "register",
]

_MISSING = object()


class ExecutorError(RuntimeError):
    """The program is malformed, or an op produced something its declared type rules out."""


class UnsupportedOpError(NotImplementedError):
    """The program holds an op type, or an op setting, that the reference executor does not run.

    ``op_type`` and ``op_name`` name the op; ``reason`` says why (for op types declined on
    purpose, the documented reason; otherwise that it is not implemented).
    """

    def __init__(self, op_type: str, op_name: str, reason: str | None = None) -> None:
        self.op_type = op_type
        self.op_name = op_name
        declined = DECLINED.get(op_type)
        if reason is None:
            reason = (
                f"declined: {declined.reason}"
                if declined is not None
                else "not implemented by the reference executor"
            )
        self.reason = reason
        super().__init__(
            f"op type {op_type!r} (op {op_name!r}): {reason}; implemented op types: "
            f"{', '.join(sorted(REGISTRY))}"
        )


class Runtime(Protocol):
    """What the executor offers to ops beyond their inputs (control flow, randomness, state)."""

    def read(self, op: Any, key: str, var: Any) -> Any:
        """The value of ``var`` as ``op`` reads it through its input ``key``."""

    def run_block(self, block: Any, values: Sequence[Any]) -> list[Any]:
        """Bind ``values`` to ``block``'s inputs, run its ops, return its outputs' values."""

    def constant(self, var: Any) -> Any:
        """The value of a ``const`` op's output, converted once per program."""

    def generator(self, op: Any, seed: int) -> torch.Generator:
        """A random generator for ``op``: seeded by ``seed`` when >= 0, else by the run."""

    def state(self, var: Any) -> torch.Tensor:
        """The current value of the state variable ``var`` (a function input of state type)."""

    def set_state(self, var: Any, value: Any) -> None:
        """Write ``value`` into the state variable ``var``."""


class OpArgs:
    """The inputs of one op, read from the executor's values.

    ``get(key)`` gives the value of input ``key``: float tensors as float32 torch tensors,
    integer and bool tensors as stored, strings as ``str``; an input that is a tuple of
    variables (``concat``'s ``values``) gives a list. ``int``, ``ints``, ``float``, ``bool``,
    ``str`` read parameters as Python values.
    """

    __slots__ = ("op", "runtime")

    def __init__(self, op: Any, runtime: Runtime) -> None:
        self.op = op
        self.runtime = runtime

    @property
    def name(self) -> builtins.str:
        return str(self.op.name)

    @property
    def op_type(self) -> builtins.str:
        return str(self.op.op_type)

    def has(self, key: builtins.str) -> builtins.bool:
        """True when input ``key`` is given (optional inputs may be absent)."""
        return self.op.inputs.get(key) is not None

    def var(self, key: builtins.str) -> Any:
        """The program variable bound to input ``key`` (None when absent)."""
        return self.op.inputs.get(key)

    def get(self, key: builtins.str, default: Any = _MISSING) -> Any:
        var = self.op.inputs.get(key)
        if var is None:
            if default is _MISSING:
                raise ExecutorError(
                    f"op {self.name!r} (type {self.op_type!r}) lacks its required input {key!r}"
                )
            return default
        if isinstance(var, (list, tuple)):
            return [self.runtime.read(self.op, key, v) for v in var]
        return self.runtime.read(self.op, key, var)

    def numpy(self, key: builtins.str, default: Any = _MISSING) -> Any:
        """Input ``key`` as numpy (float32 for floats), for ops written with numpy."""
        value = self.get(key, default)
        if isinstance(value, torch.Tensor):
            return value.numpy()
        if isinstance(value, list):
            return [v.numpy() if isinstance(v, torch.Tensor) else v for v in value]
        return value

    # -- parameters as Python values ------------------------------------------------------------

    def ints(self, key: builtins.str, default: Any = _MISSING) -> tuple[builtins.int, ...]:
        value = self.get(key, None)
        if value is None:
            return self._default(key, default)
        return tuple(int(v) for v in _flat(value))

    def int(self, key: builtins.str, default: Any = _MISSING) -> builtins.int:
        value = self.get(key, None)
        if value is None:
            return self._default(key, default)
        return int(_scalar(value))

    def float(self, key: builtins.str, default: Any = _MISSING) -> builtins.float:
        value = self.get(key, None)
        if value is None:
            return self._default(key, default)
        return float(_scalar(value))

    def bool(self, key: builtins.str, default: Any = _MISSING) -> builtins.bool:
        value = self.get(key, None)
        if value is None:
            return self._default(key, default)
        return bool(_scalar(value))

    def bools(self, key: builtins.str, n: builtins.int) -> tuple[builtins.bool, ...]:
        """A boolean mask input, all False when absent."""
        value = self.get(key, None)
        if value is None:
            return (False,) * n
        return tuple(bool(v) for v in _flat(value))

    def str(self, key: builtins.str, default: Any = _MISSING) -> builtins.str:
        value = self.get(key, None)
        if value is None:
            return self._default(key, default)
        return str(value)

    def _default(self, key: builtins.str, default: Any) -> Any:
        if default is _MISSING:
            raise ExecutorError(
                f"op {self.name!r} (type {self.op_type!r}) lacks its required input {key!r}"
            )
        return default

    # -- what the program declares --------------------------------------------------------------

    def output_shape(self, index: builtins.int = 0) -> tuple[builtins.int, ...] | None:
        """The shape the program declares for output ``index``, or None if not fully known."""
        shape = self.op.outputs[index].shape
        if all(isinstance(d, (int, np.integer)) for d in shape):
            return tuple(int(d) for d in shape)
        return None

    def unsupported(self, what: builtins.str) -> UnsupportedOpError:
        """An error for a setting of this op that the executor does not run, e.g. a mode."""
        return UnsupportedOpError(self.op_type, self.name, what)

    def invalid(self, what: builtins.str) -> ExecutorError:
        """An error for an input value that the op's definition rules out."""
        return ExecutorError(f"op {self.name!r} (type {self.op_type!r}): {what}")


def _flat(value: Any) -> list[Any]:
    if isinstance(value, torch.Tensor):
        return list(value.reshape(-1).tolist())
    return list(np.asarray(value).reshape(-1).tolist())


def _scalar(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ExecutorError(f"expected a single value, got shape {tuple(value.shape)}")
        return value.reshape(()).item()
    if isinstance(value, str):
        return value
    return np.asarray(value).reshape(()).item()


OpFn = Callable[[OpArgs], Any]


@dataclass(frozen=True)
class OpDef:
    """One implemented MIL op type: its name, family (the registering module) and function."""

    name: str
    family: str
    fn: OpFn


@dataclass(frozen=True)
class Declined:
    """An op type the executor refuses on purpose, with the reason (shown in the error)."""

    name: str
    family: str
    reason: str


REGISTRY: dict[str, OpDef] = {}
"""Every op type the executor runs, by MIL name."""

DECLINED: dict[str, Declined] = {}
"""Op types the executor declines on purpose, by MIL name."""


def _caller_family(depth: int = 2) -> str:
    # the module that called register()/decline(): ops/conv.py -> "conv"
    module = sys._getframe(depth).f_globals.get("__name__", "")
    return str(module).rsplit(".", 1)[-1]


def register(*names: str, family: str | None = None) -> Callable[[OpFn], OpFn]:
    """Register the decorated function as the implementation of the MIL op types ``names``.

    ``family`` defaults to the name of the registering module (``ops/conv.py`` -> ``"conv"``),
    which follows coremltools' files of op definitions. Registering a name twice is an error.
    """
    fam = family or _caller_family()

    def wrap(fn: OpFn) -> OpFn:
        for name in names:
            if name in REGISTRY:
                raise ValueError(
                    f"op type {name!r} is already registered by family {REGISTRY[name].family!r}"
                )
            REGISTRY[name] = OpDef(name, fam, fn)
        return fn

    return wrap


def decline(name: str, reason: str, *, family: str | None = None) -> None:
    """Record that op type ``name`` is not run on purpose, and why (shown to the user)."""
    DECLINED[name] = Declined(name, family or _caller_family(), reason)

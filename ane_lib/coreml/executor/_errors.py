"""Errors and warnings of the reference executor."""

from __future__ import annotations

import numpy as np

__all__ = [
    "Float16OverflowError",
    "NonFiniteOutputError",
    "NonFiniteOutputWarning",
    "ProgramValidationError",
]

_FP16_MAX = float(np.finfo(np.float16).max)


class ProgramValidationError(ValueError):
    """The program breaks a rule Core ML checks when it compiles a model, so it is not run.

    ``op_name`` and ``op_type`` name the offending op (None for a function input).
    """

    def __init__(self, message: str, op_name: str | None = None, op_type: str | None = None):
        self.op_name = op_name
        self.op_type = op_type
        super().__init__(message)


class NonFiniteOutputError(ArithmeticError):
    """An op produced inf or nan from finite inputs (the first such op of the run).

    Attributes: ``op_name``, ``op_type``, ``mode`` (the run's mode), ``storage`` (the output's
    storage type, "fp16" or "fp32"), ``count`` (non-finite values), ``size`` (all values),
    ``max_abs`` (the largest magnitude of the op's float32 result before rounding to the
    storage type; inf if float32 itself overflowed) and ``constant`` (the name of a constant
    input that does not fit in fp16, if that is the cause, else None).
    """

    def __init__(
        self,
        op_name: str,
        op_type: str,
        mode: str,
        storage: str,
        count: int,
        size: int,
        max_abs: float,
        constant: str | None = None,
    ) -> None:
        self.op_name = op_name
        self.op_type = op_type
        self.mode = mode
        self.storage = storage
        self.count = count
        self.size = size
        self.max_abs = max_abs
        self.constant = constant
        limit = f"fp16's largest finite value {_FP16_MAX:g}"
        if constant is not None:
            why = f"its constant input {constant!r} exceeds {limit}"
        elif np.isfinite(max_abs) and storage == "fp16":
            why = f"its float32 result reaches {max_abs:.6g} in magnitude, beyond {limit}"
        else:
            why = "its float32 result is already inf/nan"
        super().__init__(
            f"op {op_name!r} (type {op_type!r}) is the first op whose output is not finite "
            f"(stored in {storage}, mode {mode!r}): {count} of {size} values are inf/nan ({why})"
        )

    @property
    def precision(self) -> str:
        """The output's storage type ("fp16" or "fp32"); the name earlier versions used."""
        return self.storage


class Float16OverflowError(NonFiniteOutputError):
    """An fp16-stored output left fp16's range (|x| > 65504 becomes inf) or became nan."""


class NonFiniteOutputWarning(RuntimeWarning):
    """Issued instead of :class:`NonFiniteOutputError` when ``on_overflow="warn"``."""

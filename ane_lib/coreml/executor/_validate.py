"""What Core ML checks before it runs a program, checked here before the executor runs one.

- An input that an op's specification marks ``const`` (a stride, an axis, a weight, a mode)
  must be the output of a ``const`` op or of a ``constexpr_*`` op (compressed weights, which
  Core ML expands when it loads the model). coremltools' builder accepts any variable whose value
  it can infer while building (``stack(axis=sub(gather(shape(x), 0), 2))`` has a value for a
  static ``x``), but a saved program binds such an input to a runtime variable, which Core ML
  rejects; so is it here.
- Tensors have rank at most 5: Core ML rejects larger ranks (coremltools issues 1723, 1330,
  2291), the reason for this project's 5-D window partition.
"""

from __future__ import annotations

from typing import Any

from ane_lib.coreml.executor._errors import ProgramValidationError

__all__ = ["MAX_RANK", "validate_program"]

MAX_RANK = 5


def _input_type_classes() -> tuple[type, type]:
    from coremltools.converters.mil.mil.input_type import InternalInputType, TupleInputType

    return InternalInputType, TupleInputType


def _produced_by_const(var: Any) -> bool:
    op = var.op
    return op is not None and (
        str(op.op_type) == "const" or str(op.op_type).startswith("constexpr_")
    )


def _check_rank(var: Any, where: str, op: Any = None) -> None:
    from coremltools.converters.mil.mil import types

    if types.is_tensor(var.sym_type) and len(var.shape) > MAX_RANK:
        raise ProgramValidationError(
            f"{where}: variable {var.name!r} has rank {len(var.shape)} (shape "
            f"{tuple(var.shape)}); Core ML rejects tensors of rank above {MAX_RANK}",
            None if op is None else str(op.name),
            None if op is None else str(op.op_type),
        )


def _check_op(op: Any) -> None:
    internal, _ = _input_type_classes()
    specs = op.input_spec.input_types
    for key, value in op.inputs.items():
        spec = specs.get(key)
        if spec is None or not getattr(spec, "const", False) or isinstance(spec, internal):
            continue
        for var in value if isinstance(value, (list, tuple)) else [value]:
            if not _produced_by_const(var):
                producer = "a function input" if var.op is None else f"op {var.op.name!r}"
                raise ProgramValidationError(
                    f"op {op.name!r} (type {op.op_type!r}): input {key!r} must be a constant "
                    f"(its specification says const), but {var.name!r} is computed at run time "
                    f"by {producer}; Core ML rejects such a program",
                    str(op.name),
                    str(op.op_type),
                )
    for var in op.outputs:
        _check_rank(var, f"op {op.name!r} (type {op.op_type!r})", op)
    for block in op.blocks:
        for inner in block.operations:
            _check_op(inner)


def validate_program(function: Any) -> None:
    """Raise :class:`ProgramValidationError` where ``function`` breaks a rule above."""
    for var in function.inputs.values():
        _check_rank(var, "function input")
    for op in function.operations:
        constant = str(op.op_type) == "const" or str(op.op_type).startswith("constexpr_")
        if not constant:
            _check_op(op)

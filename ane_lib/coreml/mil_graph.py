"""The Core ML front end of the rules: a MIL program as an :class:`ane_lib.ane_rules.Graph`.

:func:`function_graph` walks one function of a MIL ``Program`` (nested blocks included) and
describes each op that computes in the backend-neutral form the rules read: its input and
output values (shapes and element types), its constant attributes (strides, axes,
permutations, ...) and, given :class:`~ane_lib.ane_rules.ModulePaths`, the PyTorch module it came
from. Constants (``const`` and ``constexpr_*`` ops) become constant values and are summed up as
weights. An op that cannot be described is left out and listed as not analysed, never a crash.

:func:`walk_ops` is the one walk over ops in program order that the library uses, on MIL blocks
and on the program structure of Core ML's compute plan alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from ane_lib.ane_rules.graph import Graph, Op, Value, WeightSummary
from ane_lib.ane_rules.module_paths import ModulePaths

__all__ = ["walk_ops", "function_graph", "BACKEND"]

BACKEND = "Core ML ML program"
# Constant inputs up to this many elements are kept as attributes (strides, axes, perms, ...).
_MAX_ATTR_SIZE = 16


def walk_ops(block: Any) -> Iterator[Any]:
    """Every op of ``block`` in program order, ops of nested blocks (cond, loops) included.

    Works on anything with ``.operations`` whose ops have ``.blocks``: a MIL ``Block`` or
    ``Function``, or a block of ``MLComputePlan``'s model structure.
    """
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from walk_ops(inner)


def _input_vars(op: Any) -> Iterator[Any]:
    for value in op.inputs.values():
        if isinstance(value, (list, tuple)):
            yield from value
        else:
            yield value


def _is_weight_op(op: Any) -> bool:
    """``const`` and ``constexpr_*`` ops hold weights; their outputs are not activations."""
    return bool(op.op_type == "const" or op.op_type.startswith("constexpr_"))


def _shape(var: Any) -> tuple[int | str, ...]:
    dims: list[int | str] = []
    for d in var.shape:
        try:
            dims.append(int(d))
        except TypeError:
            dims.append(str(d))
    return tuple(dims)


class _Describer:
    """Turns MIL vars into :class:`Value` objects, once each."""

    def __init__(self) -> None:
        from coremltools.converters.mil.mil import types

        self.types = types
        self.values: dict[int, Value] = {}

    def is_tensor_like(self, var: Any) -> bool:
        t = self.types
        return bool(t.is_tensor(var.sym_type) or t.is_scalar(var.sym_type)) and not t.is_str(
            var.dtype
        )

    def dtype(self, var: Any) -> str:
        return str(self.types.builtin_to_string(var.dtype))

    def minimum(self, var: Any) -> float | None:
        if not self.types.is_float(var.dtype) or var.val is None:
            return None
        value = np.asarray(var.val)
        return float(value.min()) if value.size else None

    def value(self, var: Any, kind: str, producer: str | None = None) -> Value:
        found = self.values.get(id(var))
        if found is not None:
            return found
        made = Value(
            name=str(var.name),
            shape=_shape(var),
            dtype=self.dtype(var),
            kind=kind,  # type: ignore[arg-type]
            producer=producer,
            minimum=self.minimum(var) if kind == "const" else None,
        )
        self.values[id(var)] = made
        return made


def _plain(value: Any) -> Any:
    """A small constant as builtins: scalars, lists, strings."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _attrs(op: Any) -> dict[str, Any]:
    """Constant inputs of at most :data:`_MAX_ATTR_SIZE` elements, by input name."""
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    attrs: dict[str, Any] = {}
    for name, var in op.inputs.items():
        if isinstance(var, (list, tuple)) or var.val is None:
            continue
        value = var.val
        if isinstance(value, str) or np.size(value) <= _MAX_ATTR_SIZE:
            attrs[name] = _plain(value)
    weight = op.inputs.get("weight")
    if op.op_type in ("conv", "conv_transpose") and weight is not None:
        attrs["kernel_sizes"] = [d for d in _shape(weight)[2:]]
    if op.op_type in SSAOpRegistry.custom_ops:
        attrs["custom"] = True
    return attrs


def _is_weight(var: Any, types: Any) -> bool:
    if any(child.op_type.startswith("constexpr_") for child in var.child_ops):
        return True
    if not types.is_tensor(var.sym_type) or len(var.shape) == 0:
        return False
    if types.is_float(var.dtype):
        return True
    bits = getattr(var.dtype, "get_bitwidth", lambda: 32)()
    return bool(types.is_int(var.dtype) and bits <= 8)


def _const_nbytes(var: Any) -> int:
    """Storage bytes of a constant: elements x bit width / 8, rounded up."""
    value = var.val
    if value is None or isinstance(value, str):
        return 0
    try:
        bits = int(var.dtype.get_bitwidth())
    except AttributeError:  # bool and other types without a bit width: one byte per value
        bits = 8
    count = math.prod(int(d) for d in _shape(var))  # constants have concrete shapes
    return -(-count * bits // 8)


def function_graph(
    function: Any,
    *,
    source: str = "<MIL program>",
    module_paths: ModulePaths | None = None,
    notes: tuple[str, ...] = (),
) -> Graph:
    """Describe one MIL function (e.g. ``program.functions["main"]``) as a :class:`Graph`.

    ``module_paths``: the PyTorch module of each op, as recorded at export
    (:func:`ane_lib.coreml.module_record.read_record`); without it every op's module is None.
    """
    describe = _Describer()
    types = describe.types
    inputs = tuple(describe.value(v, "input") for v in function.inputs.values())
    input_ids = {id(v) for v in function.inputs.values()}
    output_ids = {id(v) for v in function.outputs}
    ops: list[Op] = []
    unanalysed: list[tuple[str, str, str]] = []
    const_count = weight_bytes = weight_tensors = other_bytes = 0
    for mil_op in walk_ops(function):
        if _is_weight_op(mil_op):
            for var in mil_op.outputs:
                describe.value(var, "const")
            if mil_op.op_type == "const":
                const_count += 1
                var = mil_op.outputs[0]
                if _is_weight(var, types):
                    weight_bytes += _const_nbytes(var)
                    weight_tensors += 1
                else:
                    other_bytes += _const_nbytes(var)
            continue
        try:
            op_inputs = tuple(
                describe.value(v, "op") for v in _input_vars(mil_op) if describe.is_tensor_like(v)
            )
            op_outputs = tuple(
                describe.value(v, "op", producer=mil_op.name)
                for v in mil_op.outputs
                if describe.is_tensor_like(v)
            )
            attrs = _attrs(mil_op)
        except Exception as err:  # an op this front end cannot describe: say so, go on
            reason = f"{type(err).__name__}: {err}"
            unanalysed.append((str(mil_op.name), str(mil_op.op_type), reason))
            continue
        module = None
        if module_paths is not None and mil_op.outputs:
            module = module_paths.module_of(str(mil_op.outputs[0].name))
        boundary = any(id(v) in input_ids for v in _input_vars(mil_op)) or any(
            id(v) in output_ids for v in mil_op.outputs
        )
        ops.append(
            Op(
                name=str(mil_op.name),
                op_type=str(mil_op.op_type),
                inputs=op_inputs,
                outputs=op_outputs,
                attrs=attrs,
                module=module,
                module_type=module_paths.type_of(module) if module_paths is not None else None,
                at_boundary=boundary,
            )
        )
    opset = getattr(function, "opset_version", None)
    opset = getattr(opset, "name", opset)
    return Graph(
        ops=tuple(ops),
        inputs=inputs,
        outputs=tuple(describe.value(v, "op") for v in function.outputs),
        source=source,
        backend=f"{BACKEND} ({opset})" if opset else BACKEND,
        weights=WeightSummary(weight_bytes, weight_tensors, other_bytes, const_count),
        module_paths=module_paths is not None,
        unanalysed=tuple(unanalysed),
        notes=notes,
    )

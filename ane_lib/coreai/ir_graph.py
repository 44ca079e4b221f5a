"""The Core AI front end of the rules: a Core AI program as an :class:`ane_lib.ane_rules.Graph`.

A saved ``.aimodel`` holds an MLIR module in the ``coreai`` dialect: one ``coreai.graph`` per
entry point (``main``), plus private graphs that implement composite ops (batch and layer norm,
average pooling, scaled dot-product attention, ...) which the entry point calls with
``coreai.invoke``. :func:`program_graph` walks the entry point with the MLIR Python bindings that
coreai-core ships and describes each op as the rules read it (see
:mod:`ane_lib.ane_rules.graph`): shapes and element types from the result types, small constant
operands as attributes, the PyTorch module from the op's debug location (the fx node it came
from, which :func:`ane_lib.coreai.export` maps to a module path).

Vocabulary. The rules speak MIL's op names; this module maps Core AI's onto them
(:data:`OP_TYPES`: ``conv2d`` -> ``conv``, ``max_pool_2d`` -> ``max_pool``,
``broadcasting_batch_matmul`` -> ``matmul``, ...) and its operand names onto MIL's attribute
names (``stride`` -> ``strides``, ``permutation`` -> ``perm``, ...). ``coreai.decomposable.X``
is op ``X``. Two differences the rules see as they are: Core AI pads with a separate ``pad`` op
(Core ML folds padding into ``conv``), and a ``linear`` layer is a ``matmul`` (plus ``add``).

Composites (``composites=``):

- ``"call"`` (default): a ``coreai.invoke`` is one op named after its composite
  (``layer_norm``, ``batch_norm``, ``avg_pool_2d``, ``scaled_dot_product_attention``), as MIL
  names its fused ops. The composite's body is Core AI's reference decomposition; the runtime may
  run it as one kernel, so the rules do not look inside, and the graph's notes say so.
- ``"inline"``: each call is replaced by its body's ops (named ``call/op``), so the rules see the
  reference decomposition: an upper bound on layout ops and padding.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from ane_lib._checks import check_choice
from ane_lib.ane_rules.graph import Graph, Op, Value, WeightSummary
from ane_lib.ane_rules.module_paths import ModulePaths

__all__ = [
    "BACKEND",
    "COMPOSITE_MODES",
    "DECOMPRESSION_OPS",
    "OP_TYPES",
    "CompositeMode",
    "program_graph",
]

BACKEND = "Core AI program"

CompositeMode = Literal["call", "inline"]
COMPOSITE_MODES: tuple[CompositeMode, ...] = get_args(CompositeMode)

#: Core AI op name (without ``coreai.`` and ``decomposable.``) -> the rules' (MIL's) name.
#: Names not listed are kept as they are (``gelu``, ``exp``, ``reduce_mean``, ``pad``, ...).
OP_TYPES: dict[str, str] = {
    "conv2d": "conv",
    "conv3d": "conv",
    "conv_transpose2d": "conv_transpose",
    "conv_transpose3d": "conv_transpose",
    "max_pool_2d": "max_pool",
    "max_pool_3d": "max_pool",
    "sum_pool_2d": "avg_pool",
    "sum_pool_3d": "avg_pool",
    "avg_pool_2d": "avg_pool",
    "broadcasting_add": "add",
    "broadcasting_sub": "sub",
    "broadcasting_mul": "mul",
    "broadcasting_divide": "real_div",
    "divide": "real_div",
    "broadcasting_batch_matmul": "matmul",
    "batch_matmul": "matmul",
    "broadcasting_maximum": "maximum",
    "broadcasting_minimum": "minimum",
    "broadcasting_where": "select",
    "where": "select",
    "shrink_dims": "squeeze",
    "slice": "slice_by_index",
    "interpolate": "resize_interpolate",
    "scaled_dot_product_attention": "scaled_dot_product_attention",
}

#: Ops that expand compressed weights (coreai-opt's palettization, quantization, sparsity).
#: With constant operands only, their results are weights, not activations, as the results of
#: MIL's ``constexpr_*`` ops are.
DECOMPRESSION_OPS: frozenset[str] = frozenset(
    {
        "lut_to_dense",
        "lut_to_sparse_with_bitmask",
        "sparse_with_bitmask_to_dense",
        "dequantize",
        "blockwise_shift_scale",
        "build_sparse_with_bitmask",
    }
)

#: Operand name (of the generated op classes) -> the rules' attribute name.
_ATTRIBUTES: dict[str, str] = {
    "stride": "strides",
    "dilation": "dilations",
    "groups": "groups",
    "kernel_size": "kernel_sizes",
    "permutation": "perm",
    "axis": "axis",
    "axes": "axes",
    "new_shape": "shape",
}
#: Constant operands up to this many elements are kept as attributes.
_MAX_ATTR_SIZE = 16

_DTYPES: dict[str, str] = {
    "f16": "fp16",
    "f32": "fp32",
    "f64": "fp64",
    "bf16": "bfloat16",
    "i1": "bool",
    "si8": "int8",
    "i8": "int8",
    "ui8": "uint8",
    "si16": "int16",
    "i16": "int16",
    "ui16": "uint16",
    "si32": "int32",
    "i32": "int32",
    "ui32": "uint32",
    "si64": "int64",
    "i64": "int64",
    "ui64": "uint64",
}
_BITS = re.compile(r"(\d+)$")
_SYMBOL = re.compile(r"@([\w$.\-]+)")
_IO_NAME = re.compile(r'coreai\.name = "([^"]+)"')
_COMPOSITE = re.compile(r'composite_declaration<"([^"]+)"')


def _op_type(mlir_name: str) -> str:
    short = mlir_name.removeprefix("coreai.").removeprefix("decomposable.")
    return OP_TYPES.get(short, short)


def _element(type_: Any) -> tuple[tuple[int | str, ...], str, int]:
    """(shape, dtype name, bits per element) of an MLIR type (a scalar for a non-tensor)."""
    from coreai._compiler import ir

    try:
        ranked = ir.RankedTensorType(type_)
    except (ValueError, TypeError):
        return (), str(type_), 0
    shape: tuple[int | str, ...] = tuple(
        "?" if ranked.is_dynamic_dim(i) else int(d) for i, d in enumerate(ranked.shape)
    )
    element = str(ranked.element_type)
    match = _BITS.search(element)
    return shape, _DTYPES.get(element, element), int(match.group(1)) if match else 0


def _constant(op: Any) -> np.ndarray | None:
    """The value of a ``coreai.constant`` when the bindings can read it (not resources)."""
    from coreai._compiler import ir

    try:
        return np.array(ir.DenseElementsAttr(op.attributes["value"]))
    except Exception:  # a dense_resource blob or an unreadable attribute: value unknown
        return None


def _source_node(op: Any) -> str | None:
    """The fx node the op was converted from (its debug location's torch source)."""
    import coreai._compiler._mlir_libs._coreaiIR._bindings.mlir as bindings

    try:
        infos = bindings.get_source_info(op.location)  # type: ignore[attr-defined]
    except Exception:
        return None
    for info in infos:
        if getattr(info, "name", None) == "torch" and getattr(info, "identifiers", None):
            return str(list(info.identifiers)[0])
    return None


def _plain(value: np.ndarray) -> Any:
    return value.item() if value.ndim == 0 else value.tolist()


@dataclass
class _Walk:
    """State of one walk over the entry point (and, inlined, the composites it calls)."""

    graphs: dict[str, Any]
    module_paths: ModulePaths | None
    composites: CompositeMode
    values: dict[Any, Value] = field(default_factory=dict)
    constants: dict[Any, np.ndarray | None] = field(default_factory=dict)
    ops: list[Op] = field(default_factory=list)
    unanalysed: list[tuple[str, str, str]] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    hidden_ops: int = 0
    weight_bytes: int = 0
    weight_tensors: int = 0
    other_bytes: int = 0
    const_count: int = 0
    counter: int = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}%{self.counter}"

    def value(
        self, mlir_value: Any, kind: str, producer: str | None = None, name: str | None = None
    ) -> Value:
        found = self.values.get(mlir_value)
        if found is not None:
            return found
        shape, dtype, _ = _element(mlir_value.type)
        minimum = None
        if kind == "const":
            data = self.constants.get(mlir_value)
            if data is not None and data.dtype.kind == "f" and data.size:
                minimum = float(np.min(data))
        made = Value(
            name=name or self.fresh("v"),
            shape=shape,
            dtype=dtype,
            kind=kind,  # type: ignore[arg-type]
            producer=producer,
            minimum=minimum,
        )
        self.values[mlir_value] = made
        return made

    def constant(self, op: Any) -> None:
        result = op.results[0]
        shape, dtype, bits = _element(result.type)
        data = _constant(op)
        self.constants[result] = data
        self.const_count += 1
        count = math.prod(int(d) for d in shape if isinstance(d, int)) if shape else 1
        nbytes = -(-count * (bits or 8) // 8)  # sub-byte types (uint4 indices) packed
        is_float = dtype.startswith(("fp", "bfloat"))
        if shape and (is_float or bits <= 8):
            self.weight_bytes += nbytes
            self.weight_tensors += 1
        else:
            self.other_bytes += nbytes
        self.value(result, "const")

    def attrs(self, op: Any, op_type: str) -> dict[str, Any]:
        view = op.opview
        attrs: dict[str, Any] = {}
        for operand, name in _ATTRIBUTES.items():
            try:
                value = getattr(view, operand)
            except Exception:  # the op has no such operand
                continue
            data = self.constants.get(value)
            if data is not None and data.size <= _MAX_ATTR_SIZE:
                attrs[name] = _plain(data)
        if op_type in ("conv", "conv_transpose"):
            weight_shape, _, _ = _element(view.weight.type)
            attrs["kernel_sizes"] = list(weight_shape[2:])
        return attrs

    def module_of(self, op: Any) -> tuple[str | None, str | None]:
        node = _source_node(op)
        if self.module_paths is None or node is None:
            return None, node
        return self.module_paths.module_of(node), node

    def walk(
        self,
        block: Any,
        *,
        boundary: set[Any],
        prefix: str = "",
        module: str | None = None,
    ) -> list[Any]:
        """Describe the ops of ``block``; returns the values its ``coreai.output`` returns."""
        returned: list[Any] = []
        for view in block.operations:
            op = view.operation
            name = op.name
            if name == "coreai.constant":
                self.constant(op)
                continue
            if name == "coreai.output":
                returned = list(op.operands)
                continue
            if name.removeprefix("coreai.") in DECOMPRESSION_OPS and all(
                v in self.constants for v in op.operands
            ):  # expands compressed weights: part of the weights, as MIL's constexpr ops
                for result in op.results:
                    self.constants[result] = None
                    self.value(result, "const")
                continue
            if name == "coreai.invoke" and self.composites == "inline":
                self.inline(op, boundary, prefix)
                continue
            try:
                self.describe(op, boundary=boundary, prefix=prefix, module=module)
            except Exception as err:  # an op this front end cannot describe: say so, go on
                reason = f"{type(err).__name__}: {err}"
                self.unanalysed.append((self.fresh(prefix), name, reason))
        return returned

    def callee(self, op: Any) -> tuple[str, Any]:
        match = _SYMBOL.search(str(op.attributes["callee"]))
        if match is None or match.group(1) not in self.graphs:
            raise ValueError(f"cannot find the graph that {op.attributes['callee']} calls")
        graph = self.graphs[match.group(1)]
        decl = graph.attributes["composite_decl"] if "composite_decl" in graph.attributes else ""  # noqa: SIM401
        composite = _COMPOSITE.search(str(decl))
        return (composite.group(1) if composite else match.group(1)), graph

    def describe(self, op: Any, *, boundary: set[Any], prefix: str, module: str | None) -> None:
        op_type = _op_type(op.name)
        attrs: dict[str, Any] = {}
        if op.name == "coreai.invoke":
            composite, graph = self.callee(op)
            op_type = _op_type(composite)
            inner = [
                o
                for o in graph.regions[0].blocks[0].operations
                if o.operation.name not in ("coreai.constant", "coreai.output")
            ]
            self.calls[composite] += 1
            self.hidden_ops += len(inner)
            attrs["composite"] = composite
        else:
            attrs = self.attrs(op, op_type)
        own_module, node = self.module_of(op)
        label = node or op_type
        op_name = f"{prefix}{label}/{op.name.rsplit('.', 1)[-1]}"
        inputs = tuple(self.value(v, "op") for v in op.operands)
        outputs = tuple(self.value(r, "op", producer=op_name) for r in op.results)
        at_boundary = any(v in boundary for v in op.operands) or any(
            r in boundary for r in op.results
        )
        where = own_module if own_module is not None else module
        self.ops.append(
            Op(
                name=op_name,
                op_type=op_type,
                inputs=inputs,
                outputs=outputs,
                attrs=attrs,
                module=where,
                module_type=self.module_paths.type_of(where) if self.module_paths else None,
                at_boundary=at_boundary,
            )
        )

    def inline(self, op: Any, boundary: set[Any], prefix: str) -> None:
        composite, graph = self.callee(op)
        self.calls[composite] += 1
        block = graph.regions[0].blocks[0]
        for argument, operand in zip(block.arguments, op.operands, strict=True):
            self.values[argument] = self.value(operand, "op")
        module, node = self.module_of(op)
        inner_boundary = set(block.arguments) if any(v in boundary for v in op.operands) else set()
        returned = self.walk(
            block,
            boundary=inner_boundary,
            prefix=f"{prefix}{node or composite}/",
            module=module,
        )
        for result, value in zip(op.results, returned, strict=True):
            self.values[result] = self.value(value, "op")


def _graphs(module: Any) -> dict[str, Any]:
    graphs = {}
    for view in module.body.operations:
        op = view.operation
        if op.name == "coreai.graph" and "sym_name" in op.attributes:
            graphs[str(op.attributes["sym_name"]).strip('"')] = op
    return graphs


def _io_names(graph: Any, attribute: str, count: int) -> list[str | None]:
    """The ``coreai.name`` of each argument or result of ``graph`` (None where unnamed)."""
    text = str(graph.attributes[attribute]) if attribute in graph.attributes else ""
    names: list[str | None] = list(_IO_NAME.findall(text))
    return names if len(names) == count else [None] * count


def _entry_block(graph: Any) -> Any:
    return graph.regions[0].blocks[0]


def program_graph(
    module: Any,
    *,
    function: str = "main",
    source: str = "<Core AI program>",
    module_paths: ModulePaths | None = None,
    composites: CompositeMode = "call",
    notes: tuple[str, ...] = (),
) -> Graph:
    """Describe the entry point ``function`` of a Core AI MLIR module as a :class:`Graph`.

    ``module``: the MLIR module of a program (``AIModelAsset.load(path).program._module
    ._mlir_module``; :func:`ane_lib.coreai.report` does this). ``module_paths``: the PyTorch
    module of each fx node, as :func:`ane_lib.coreai.export` keeps it. ``composites``: see the
    module docstring.
    """
    check_choice("composites", composites, COMPOSITE_MODES)
    graphs = _graphs(module)
    if function not in graphs:
        raise ValueError(f"function {function!r} is not in the program; it has {sorted(graphs)}")
    block = _entry_block(graphs[function])
    walk = _Walk(graphs, module_paths, composites)
    entry = graphs[function]
    in_names = _io_names(entry, "arg_attrs", len(block.arguments))
    inputs = tuple(
        walk.value(a, "input", name=n) for a, n in zip(block.arguments, in_names, strict=True)
    )
    output_op = next(
        (v.operation for v in block.operations if v.operation.name == "coreai.output"), None
    )
    returned = list(output_op.operands) if output_op is not None else []
    boundary = set(block.arguments) | set(returned)
    out_names = _io_names(entry, "res_attrs", len(returned))
    for value, name in zip(returned, out_names, strict=True):  # named before their ops are
        walk.value(value, "op", name=name)
    walk.walk(block, boundary=boundary)
    outputs = tuple(walk.value(v, "op") for v in returned)
    extra = list(notes)
    if walk.calls:
        listing = ", ".join(f"{name} x{n}" for name, n in walk.calls.most_common())
        if composites == "call":
            extra.append(
                f"{sum(walk.calls.values())} calls of composite ops through coreai.invoke "
                f"({listing}) are checked as single ops: their bodies ({walk.hidden_ops} ops of "
                "Core AI's reference decomposition) are not analysed, since the runtime may run "
                "each as one kernel; report(..., composites='inline') looks inside"
            )
        else:
            extra.append(
                f"{sum(walk.calls.values())} calls of composite ops ({listing}) are replaced "
                "by their reference decomposition, which the runtime may fuse: layout ops and "
                "padding inside them are an upper bound"
            )
    return Graph(
        ops=tuple(walk.ops),
        inputs=inputs,
        outputs=outputs,
        source=source,
        backend=BACKEND,
        weights=WeightSummary(
            walk.weight_bytes, walk.weight_tensors, walk.other_bytes, walk.const_count
        ),
        module_paths=module_paths is not None,
        unanalysed=tuple(walk.unanalysed),
        notes=tuple(extra),
    )

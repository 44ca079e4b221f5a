"""Normalise a ``torch.export`` graph so that coremltools 9 converts the valid ATen it rejects.

``torch.export`` hands coremltools a graph of ATen ops that PyTorch itself runs. coremltools 9's
torch.export frontend rejects some of them; a user should not have to edit a model for that.
:func:`prepare_for_coreml` rewrites the graph before conversion; four kinds of fixes:

1. **Defaulted arguments coremltools requires** (:data:`POOL_OPS`): ``F.max_pool2d(x, 2)``
   leaves the stride at its default, which PyTorch defines as the kernel size; coremltools
   wants the argument present ("node max_pool2d got 2 input(s), expected minimum 3"). The stride
   is written into the node.
2. **Conversions that mishandle valid input** (:data:`ALWAYS_DECOMPOSED`) are replaced by
   PyTorch's own decompositions: ``new_ones`` / ``new_zeros`` / ``new_full`` (Hugging Face's
   attention-mask helpers; an empty shape, as ``log_sigmoid`` creates, makes coremltools build
   an ill-typed ``fill``), ``a & b`` (``__and__``) and ``cosine_similarity`` (coremltools wants
   ``dim`` and ``eps`` written out, PyTorch lets them default).
3. **Ops without a Core ML conversion** that PyTorch decomposes into core ATen ops (e.g.
   ``torch.where(c, x, 0.0)``, which is ``where.ScalarOther``; bicubic ``interpolate``, as
   ViT-style position embeddings use; ``channel_shuffle``, ``celu``, ``logsigmoid``,
   ``addcmul``): each is replaced by PyTorch's decomposition (``core_aten_decompositions``),
   repeated while the result still holds such ops (or ops of step 2). Which ops coremltools
   converts is asked of coremltools itself (``is_torch_fx_node_supported``), so the step
   follows the installed version.

4. **Views that are the identity** (:data:`IDENTITY_OPS`): slicing an expanded buffer over
   its whole length, as Hugging Face's ``self.position_ids[:, :seq_length]`` does when the
   sequence fills the table (DistilBERT at its longest input), leaves an ``alias`` node,
   which coremltools has no conversion for. Its users read its input instead.

Ops that neither coremltools converts nor PyTorch decomposes into convertible ops (``prod``,
``trunc``, ...) are left alone: the conversion then fails with the error of
:func:`ane_lib.coreml.export`, which names the op, the layer and the source line. Every step
keeps the function: the tests export the smallest model needing each fix and compare the
package with PyTorch.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import torch

__all__ = [
    "ALWAYS_DECOMPOSED",
    "IDENTITY_OPS",
    "POOL_OPS",
    "GraphFix",
    "coreml_unsupported_ops",
    "prepare_for_coreml",
]

#: ATen ops that coremltools 9 converts wrongly or rejects on valid arguments, always lowered
#: to PyTorch's decomposition (``__and__``: to ``bitwise_and``, which is what ``a & b`` means).
ALWAYS_DECOMPOSED: tuple[str, ...] = (
    "new_ones",
    "new_zeros",
    "new_full",
    "__and__",
    "cosine_similarity",
)

#: Pooling ops whose stride defaults to the kernel size in PyTorch and must be present for
#: coremltools.
POOL_OPS: tuple[str, ...] = (
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "max_pool1d_with_indices",
    "max_pool2d_with_indices",
    "max_pool3d_with_indices",
)

#: ATen ops that return their input unchanged in a functional graph; removed from it.
IDENTITY_OPS: tuple[str, ...] = ("alias",)

# Rounds of step 3: a decomposition can produce ops that need one more (none seen beyond two).
_MAX_ROUNDS = 4


@dataclasses.dataclass(frozen=True)
class GraphFix:
    """One rewrite :func:`prepare_for_coreml` made: ``kind`` (``"decomposed"``,
    ``"default stride"`` or ``"removed"``), the ATen op (``"where.ScalarOther"``) and how many
    nodes it had."""

    kind: str
    op: str
    nodes: int

    def __str__(self) -> str:
        return f"{self.op}: {self.kind} ({self.nodes} node{'s' if self.nodes != 1 else ''})"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _op_name(target: Any) -> str:
    """``aten.where.ScalarOther`` -> ``"where.ScalarOther"``; ``.default`` is left out."""
    schema = getattr(target, "_schema", None)
    if schema is None:
        return str(target)
    return schema.name.split("::")[-1] + (
        f".{schema.overload_name}" if schema.overload_name else ""
    )


def _aten_nodes(exported: Any) -> Iterable[Any]:
    for node in exported.graph.nodes:
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            yield node


def _converts(node: Any) -> bool:
    """Whether the installed coremltools has a conversion for ``node``'s op."""
    from coremltools.converters.mil.frontend.torch.torch_op_registry import (
        is_torch_fx_node_supported,
    )

    with warnings.catch_warnings():  # it reads its registry through a deprecated accessor
        warnings.simplefilter("ignore", DeprecationWarning)
        return bool(is_torch_fx_node_supported(node))


def coreml_unsupported_ops(exported: Any) -> dict[str, int]:
    """ATen ops of ``exported`` (a ``torch.export.ExportedProgram``) that the installed
    coremltools has no conversion for, with their node counts, e.g. ``{"prod.dim_int": 1}``."""
    return dict(
        Counter(_op_name(node.target) for node in _aten_nodes(exported) if not _converts(node))
    )


def _always_table() -> dict[Any, Callable[..., Any]]:
    from torch._decomp import core_aten_decompositions, get_decompositions

    aten = torch.ops.aten
    table = dict(get_decompositions([aten.new_ones, aten.new_zeros, aten.new_full]))
    table[aten.__and__.Tensor] = aten.bitwise_and.Tensor
    core = core_aten_decompositions()
    table[aten.cosine_similarity.default] = core[aten.cosine_similarity.default]
    return table


def _count(exported: Any, targets: Iterable[Any]) -> Counter[str]:
    wanted = set(targets)
    return Counter(_op_name(n.target) for n in _aten_nodes(exported) if n.target in wanted)


def _fill_pool_strides(exported: Any) -> Counter[str]:
    """Write the stride (PyTorch's default: the kernel size) into max-pool nodes lacking it."""
    filled: Counter[str] = Counter()
    for node in _aten_nodes(exported):
        if node.target._schema.name.split("::")[-1] not in POOL_OPS:
            continue
        args = list(node.args)
        stride = args[2] if len(args) > 2 else node.kwargs.get("stride")
        if stride:  # given: nothing to do
            continue
        kwargs = {k: v for k, v in node.kwargs.items() if k != "stride"}
        node.args = (*args[:2], list(args[1]), *args[3:])
        node.kwargs = kwargs
        filled[_op_name(node.target)] += 1
    if filled:
        exported.graph_module.recompile()
    return filled


def _decomposable(exported: Any, always: dict[Any, Callable[..., Any]]) -> dict[Any, Any]:
    """The decompositions still to apply: ops of :data:`ALWAYS_DECOMPOSED` (a decomposition
    may create them, as ``log_sigmoid``'s does ``new_zeros``) and ops coremltools cannot
    convert that core ATen decomposes."""
    from torch._decomp import core_aten_decompositions

    core = core_aten_decompositions()
    table: dict[Any, Callable[..., Any]] = {}
    for node in _aten_nodes(exported):
        if node.target in always:
            table[node.target] = always[node.target]
        elif node.target in core and not _converts(node):
            table[node.target] = core[node.target]
    return table


def prepare_for_coreml(exported: Any) -> tuple[Any, list[GraphFix]]:
    """Return ``exported`` (a ``torch.export.ExportedProgram`` straight from
    ``torch.export.export``) lowered to core ATen and rewritten so that coremltools converts it,
    with the fixes made (see the module docstring). Needs coremltools."""
    always = _always_table()
    fixes = _stride_fixes(exported)
    table = _decomposable(exported, always)
    for _ in range(_MAX_ROUNDS):
        # counted before lowering: the decomposed ops are gone afterwards
        fixes += [GraphFix("decomposed", op, n) for op, n in _count(exported, table).items()]
        exported = exported.run_decompositions(table)  # also lowers everything to core ATen
        table = _decomposable(exported, always)
        if not table:
            break
    fixes += _stride_fixes(exported)  # in case a decomposition made a max pool
    fixes += [GraphFix("removed", op, n) for op, n in _remove_identities(exported).items()]
    return exported, _merged(fixes)


def _remove_identities(exported: Any) -> Counter[str]:
    """Bypass and erase the nodes of :data:`IDENTITY_OPS` (their users read their input)."""
    removed: Counter[str] = Counter()
    graph = exported.graph_module.graph
    for node in list(_aten_nodes(exported)):
        if node.target._schema.name.split("::")[-1] not in IDENTITY_OPS:
            continue
        node.replace_all_uses_with(node.args[0])
        graph.erase_node(node)
        removed[_op_name(node.target)] += 1
    if removed:
        exported.graph_module.recompile()
    return removed


def _stride_fixes(exported: Any) -> list[GraphFix]:
    return [GraphFix("default stride", op, n) for op, n in _fill_pool_strides(exported).items()]


def _merged(fixes: list[GraphFix]) -> list[GraphFix]:
    """One entry per (kind, op), node counts added, in order of first appearance."""
    counts: Counter[tuple[str, str]] = Counter()
    for fix in fixes:
        counts[fix.kind, fix.op] += fix.nodes
    return [GraphFix(kind, op, n) for (kind, op), n in counts.items()]

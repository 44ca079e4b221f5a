"""Keep the PyTorch module path of every op with a saved Core ML package.

At export (:func:`ane_lib.coreml.export`): :func:`tag_nodes` gives every node of the
``ExportedProgram`` a debug handle before ``coremltools.convert``. coremltools carries those
handles through its optimisation passes (an op a pass creates inherits the handle of the op it
replaces) and, when it saves the package, writes the handle of every MIL op to
``executorch_debug_handle_mapping.json`` (a file it made for ExecuTorch). :func:`write_record`
then joins the two tables into :class:`~ane_lib.ane_rules.ModulePaths` and stores them in the
package as ``ane_lib_module_paths.json``, next to coremltools' file, so a report read later, on
any machine, names the module of each op. Ops that the mapping misses are matched by name.

:func:`read_record` reads the file back; a package without it (exported before ane_lib recorded
module paths, or by another tool) gives None and its report says the paths are unknown.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ane_lib.ane_rules.module_paths import ModulePaths, node_modules, read_module_paths_file

__all__ = ["RECORD_FILE", "NodeTable", "tag_nodes", "write_record", "read_record"]

#: The file, inside the ``.mlpackage`` folder, that holds the module paths.
RECORD_FILE = "ane_lib_module_paths.json"
#: Written by coremltools at save: debug handle -> the MIL ops that carry it.
COREMLTOOLS_MAPPING = "executorch_debug_handle_mapping.json"


@dataclass(frozen=True)
class NodeTable:
    """What :func:`tag_nodes` learned: debug handle -> node name, node -> (path, class), and
    batch-norm node -> the convolution node it may be fused into (``folded_into``)."""

    handles: dict[int, str]
    modules: dict[str, tuple[str, str]]
    folded_into: dict[str, str] = field(default_factory=dict)


def _target_name(node: Any) -> str:
    return str(getattr(node.target, "__name__", node.target))


def _batch_norms_after_convs(exported_program: Any) -> dict[str, str]:
    """Batch-norm node -> the convolution node that feeds it.

    coremltools folds such a batch norm into the convolution and gives the one ``conv`` op it
    makes the batch norm's name and debug handle; the report names the convolution's module
    for it, where a reader looks for a convolution (the norm is part of its arithmetic now).
    """
    pairs: dict[str, str] = {}
    for node in exported_program.graph.nodes:
        if node.op != "call_function" or "batch_norm" not in _target_name(node) or not node.args:
            continue
        source = node.args[0]
        if getattr(source, "op", None) == "call_function" and "conv" in _target_name(source):
            pairs[node.name] = str(source.name)
    return pairs


def tag_nodes(exported_program: Any, wrapper: str | None = None) -> NodeTable:
    """Number every op node of ``exported_program`` in ``node.meta["debug_handle"]``.

    Call it on the program that is converted (after ``run_decompositions``). Handles count
    from 1; existing handles are replaced. Returns the node and module tables. ``wrapper``: the
    attribute under which the exported module holds the user's model (e.g. ``"model"`` when
    export wrapped it to cast its inputs); that prefix is removed so paths are the model's own.
    """
    modules = node_modules(exported_program, wrapper)
    handles: dict[int, str] = {}
    for node in exported_program.graph.nodes:
        if node.op == "call_function":
            handle = len(handles) + 1
            node.meta["debug_handle"] = handle
            handles[handle] = node.name
    return NodeTable(handles, modules, _batch_norms_after_convs(exported_program))


def _ops_by_handle(package: Path, table: NodeTable) -> dict[str, str]:
    """MIL op output name -> module path, from coremltools' debug-handle mapping (if saved)."""
    mapping_file = package / COREMLTOOLS_MAPPING
    if not mapping_file.is_file():
        return {}
    try:
        mapping = json.loads(mapping_file.read_text()).get("mapping", {})
    except (json.JSONDecodeError, AttributeError):
        return {}
    ops: dict[str, str] = {}
    for handle, entries in mapping.items():
        node = table.handles.get(int(handle)) if str(handle).isdigit() else None
        if node is None or node not in table.modules:
            continue
        for path in entries:
            op = path[-1] if path else {}
            kind = op.get("Operator")
            if kind in (None, "const") or "Output" not in op:
                continue
            # a conv op under a batch norm's handle: the norm was folded into its conv
            owner = table.folded_into.get(node, node) if kind == "conv" else node
            ops[op["Output"]] = table.modules.get(owner, table.modules[node])[0]
    return ops


def write_record(package: str | os.PathLike[str], table: NodeTable) -> ModulePaths:
    """Store the module paths of the ops of the saved ``package`` (see the module docstring).

    Written to a temporary file in the package, then renamed. Returns what was stored.
    """
    folder = Path(package)
    if not folder.is_dir():
        raise ValueError(f"package {str(folder)!r} is not a saved .mlpackage folder")
    record = ModulePaths(
        ops=_ops_by_handle(folder, table),
        nodes={node: path for node, (path, _) in table.modules.items()},
        types={path: kind for path, kind in table.modules.values()},
    )
    target = folder / RECORD_FILE
    partial = target.with_name(target.name + ".partial")
    partial.write_text(record.to_json())
    os.replace(partial, target)
    return record


def read_record(package: str | os.PathLike[str]) -> ModulePaths | None:
    """The module paths stored in ``package``, or None if it has none.

    Raises ValueError naming the file when it exists but cannot be read.
    """
    return read_module_paths_file(Path(package) / RECORD_FILE)

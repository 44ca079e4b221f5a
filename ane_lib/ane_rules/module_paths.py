"""Which PyTorch module each op of a converted program came from.

``torch.export`` records, on every node of the graph it captures, the stack of modules whose
``forward`` was running (``node.meta["nn_module_stack"]``): the innermost entry is the module
path, e.g. ``"stages.2.0.mbconv.depthwise_conv"``, and its class. :func:`node_modules` reads
that table from an ``ExportedProgram``. A converter then turns nodes into ops of its own IR; a
front end maps each op back to a node (Core ML: :mod:`ane_lib.coreml.module_record`) and keeps
the result as :class:`ModulePaths`, which a saved package carries so that a report read later
still names the modules.

Conventions: the model's own ``forward`` is the path ``""``; nodes without a module stack
(inputs, parameters) are not in the table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ModulePaths",
    "candidate_node_names",
    "node_location",
    "node_modules",
    "read_module_paths_file",
]

FORMAT_VERSION = 1

# Suffixes a converter appends to a node's name when it names the ops made from it: dtype casts
# (coremltools: "_cast_fp16", "_to_fp16") and the index of one output of several ("split_0").
_DTYPE_SUFFIX = re.compile(r"(_cast_fp16|_cast_fp32|_to_fp16|_to_fp32)+$")
_INDEX_SUFFIX = re.compile(r"_\d+$")


def _class_name(kind: Any) -> str:
    if isinstance(kind, type):
        return f"{kind.__module__}.{kind.__qualname__}"
    return str(kind).removeprefix("<class '").removesuffix("'>")


def node_modules(exported_program: Any, wrapper: str | None = None) -> dict[str, tuple[str, str]]:
    """fx node name -> (module path, module class) for every node created inside a module.

    ``exported_program``: a ``torch.export.ExportedProgram`` (after ``run_decompositions`` if
    that is what gets converted: decomposition keeps the module stack of the node it replaces).
    ``wrapper``: the attribute under which the exported module holds the user's model (e.g.
    ``"model"`` when an export wrapped it to cast its inputs); that prefix is removed, so paths
    are the model's own (``"model.stages.2"`` -> ``"stages.2"``, the wrapper itself ``""``).
    """
    graph = getattr(exported_program, "graph", None)
    if graph is None or not hasattr(graph, "nodes"):
        raise TypeError(
            "exported_program must be a torch.export.ExportedProgram, got "
            f"{type(exported_program).__name__}"
        )
    table: dict[str, tuple[str, str]] = {}
    for node in graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if not stack:
            continue
        path, kind = list(stack.values())[-1]
        path = str(path)
        if wrapper:
            path = "" if path == wrapper else path.removeprefix(wrapper + ".")
        table[node.name] = (path, _class_name(kind))
    return table


def candidate_node_names(name: str) -> list[str]:
    """Node names an op or value name may have come from, most specific first.

    ``"conv2d_5_cast_fp16"`` -> ``["conv2d_5_cast_fp16", "conv2d_5"]``;
    ``"split_cast_fp16_0"`` -> ``[..., "split_cast_fp16", "split"]``; ``"mul_22_1_cast_fp16"``
    -> ``[..., "mul_22_1", "mul_22"]`` (an op a converter pass made from ``mul_22``).
    """
    out = [name]
    current = name
    while True:
        stripped = _DTYPE_SUFFIX.sub("", current)
        if stripped == current:
            stripped = _INDEX_SUFFIX.sub("", current)
        if stripped == current or not stripped:
            return out
        out.append(stripped)
        current = stripped


@dataclass(frozen=True)
class ModulePaths:
    """Module paths of a converted program's ops, as kept with a saved package.

    ``ops``: name of an op's first output -> module path (``""``: the model's own forward).
    ``nodes``: fx node name -> module path, for ops the ``ops`` table misses (matched by name,
    see :func:`candidate_node_names`). ``types``: module path -> class name.
    """

    ops: Mapping[str, str] = field(default_factory=dict)
    nodes: Mapping[str, str] = field(default_factory=dict)
    types: Mapping[str, str] = field(default_factory=dict)

    def module_of(self, output_name: str) -> str | None:
        """The module path of the op whose first output is ``output_name``; None if unknown."""
        if output_name in self.ops:
            return self.ops[output_name]
        for candidate in candidate_node_names(output_name):
            if candidate in self.nodes:
                return self.nodes[candidate]
        return None

    def type_of(self, path: str | None) -> str | None:
        """The class name of the module at ``path`` (None if unknown)."""
        return None if path is None else self.types.get(path)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT_VERSION,
                "ops": dict(self.ops),
                "nodes": dict(self.nodes),
                "types": dict(self.types),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> ModulePaths:
        """Read what :meth:`to_json` wrote; ValueError on anything else."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"module paths: not JSON ({err})") from err
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"module paths: expected format {FORMAT_VERSION}, got "
                f"{data.get('format') if isinstance(data, dict) else type(data).__name__!r}"
            )
        tables = {}
        for key in ("ops", "nodes", "types"):
            table = data.get(key, {})
            if not isinstance(table, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in table.items()
            ):
                raise ValueError(f"module paths: {key!r} must map strings to strings")
            tables[key] = table
        return cls(**tables)


def node_location(exported_program: Any, node_name: str) -> tuple[str | None, str | None]:
    """Where the fx node ``node_name`` came from, for error messages: ``(layer, source)``.

    ``layer``: the innermost module path and class, e.g. ``"stages.2.0 (MOATBlock)"``
    (``<root>`` for the model's own forward); ``source``: the user's source line and where it
    is. Either is None when unknown.
    """
    for node in exported_program.graph.nodes:
        if node.name != node_name:
            continue
        layer = None
        stack = node.meta.get("nn_module_stack") or {}
        if stack:
            path, kind = list(stack.values())[-1]
            kind_name = getattr(kind, "__name__", None) or str(kind).rsplit(".", 1)[-1]
            layer = f"{path or '<root>'} ({kind_name.strip(chr(39))})"
        source = None
        trace = node.meta.get("stack_trace")
        if trace:
            lines = [ln.strip() for ln in trace.strip().splitlines() if ln.strip()]
            # The last two lines of the trace are 'File "...", line N, in f' and the code.
            if len(lines) >= 2:
                where = re.sub(r'^File "(.*)", line (\d+), in (.*)$', r"\1:\2 in \3", lines[-2])
                source = f"{lines[-1]}  [{where}]"
        return layer, source
    return None, None


def read_module_paths_file(target: Path) -> ModulePaths | None:
    """The module paths stored in the JSON file ``target`` (as :meth:`ModulePaths.to_json`
    wrote them), or None if there is no such file.

    Raises ValueError naming the file when it exists but cannot be read.
    """
    if not target.is_file():
        return None
    try:
        return ModulePaths.from_json(target.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{str(target)!r} could not be read: {err}") from err

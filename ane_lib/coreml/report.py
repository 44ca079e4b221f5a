"""The ANE report of a Core ML package: the Neural Engine's rules applied to its program.

:func:`report` reads a saved ``.mlpackage`` (or takes a loaded MIL ``Program``) on any OS,
describes its program with :mod:`ane_lib.coreml.mil_graph` and applies the rule table of
:mod:`ane_lib.ane_rules` to it. The module paths recorded at export
(:mod:`ane_lib.coreml.module_record`) name the PyTorch module of every op; a package exported
without them still reports, saying the paths are unknown.

The rules, their severities and their sources are in :data:`ane_lib.ane_rules.RULES`; the
report's views (bytes per stage and per op type, worst ops, layout ops) in
:class:`ane_lib.ane_rules.Report`.
"""

from __future__ import annotations

import os
from typing import Any

from ane_lib.ane_rules import (
    LAYOUT_OP_TYPES,
    MAX_RANK,
    RULES,
    ModulePaths,
    Report,
    StagePadding,
    analyse,
    default_stage_key,
    plot_padding_by_stage,
)
from ane_lib.coreml.mil_graph import function_graph
from ane_lib.coreml.module_record import read_record
from ane_lib.coreml.program import import_coremltools, load_program

__all__ = [
    "LAYOUT_OP_TYPES",
    "MAX_RANK",
    "RULES",
    "Report",
    "StagePadding",
    "default_stage_key",
    "plot_padding_by_stage",
    "report",
]


def report(
    path_or_program: Any,
    *,
    function: str = "main",
    module_paths: ModulePaths | None = None,
) -> Report:
    """Check a Core ML package (or a loaded MIL program) against the Neural Engine's rules.

    Args:
        path_or_program: path of a saved ``.mlpackage`` (read with
            :func:`ane_lib.coreml.load_program`, on any OS) or a
            ``coremltools.converters.mil.mil.Program``.
        function: name of the program function to check.
        module_paths: the PyTorch module of each op; by default those recorded in the package
            at export (none for a program passed in memory).

    Returns:
        a :class:`~ane_lib.ane_rules.Report`; ``print(report(...))`` shows it as text.
    """
    import_coremltools()
    from coremltools.converters.mil.mil import Program

    if module_paths is not None and not isinstance(module_paths, ModulePaths):
        raise TypeError(
            f"module_paths must be an ane_lib.ane_rules.ModulePaths or None, got "
            f"{type(module_paths).__name__}"
        )
    notes: tuple[str, ...] = ()
    if isinstance(path_or_program, (str, os.PathLike)):
        source = os.fspath(path_or_program)
        program = load_program(path_or_program)
        if module_paths is None:
            try:
                module_paths = read_record(path_or_program)
            except ValueError as err:
                notes = (f"module paths not read: {err}",)
    elif isinstance(path_or_program, Program):
        source = "<MIL program>"
        program = path_or_program
    else:
        raise TypeError(
            "path_or_program must be a path to a .mlpackage or a coremltools MIL Program, got "
            f"{path_or_program!r} ({type(path_or_program).__name__})"
        )
    if function not in program.functions:
        raise ValueError(
            f"function {function!r} is not in the program; it has {sorted(program.functions)}"
        )
    graph = function_graph(
        program.functions[function], source=source, module_paths=module_paths, notes=notes
    )
    return analyse(graph)

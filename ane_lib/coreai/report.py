"""The ANE report of a Core AI program: the same rule table as for Core ML, a second front end.

:func:`report` reads a saved ``.aimodel`` (on Linux or macOS), describes its entry point with
:mod:`ane_lib.coreai.ir_graph` and applies :data:`ane_lib.ane_rules.RULES` to it, exactly as
:func:`ane_lib.coreml.report` does for a Core ML package: rank, fp32, static shapes, 64-byte
padding of the last axis, layout ops, softmax axis, strides, kernels, dilations, masks of
``-inf``, reported fallbacks. The module paths :func:`ane_lib.coreai.export` kept name the
PyTorch module of each op. What Core AI's IR hides from the rules (composite ops called through
``coreai.invoke``) is said in the report's notes.
"""

from __future__ import annotations

import os
from pathlib import Path

from ane_lib.ane_rules import ModulePaths, Report, analyse
from ane_lib.coreai._sdk import import_coreai, quiet
from ane_lib.coreai.export import check_asset_path, read_module_paths
from ane_lib.coreai.ir_graph import CompositeMode, program_graph

__all__ = ["report"]


def report(
    path: str | os.PathLike[str],
    *,
    function: str = "main",
    module_paths: ModulePaths | None = None,
    composites: CompositeMode = "call",
) -> Report:
    """Check the Core AI program at ``path`` against the Neural Engine's rules.

    Args:
        path: a saved ``.aimodel`` folder, e.g. from :func:`ane_lib.coreai.export`.
        function: the entry point to check.
        module_paths: the PyTorch module of each fx node; by default those that ``export``
            kept in the folder (none for a program made by another tool).
        composites: ``"call"`` checks each composite op (``coreai.invoke``) as one op;
            ``"inline"`` checks the ops of its reference decomposition instead.

    Returns a :class:`~ane_lib.ane_rules.Report`; ``print(report(...))`` shows it.
    """
    folder: Path = check_asset_path(path)
    if module_paths is not None and not isinstance(module_paths, ModulePaths):
        raise TypeError(
            f"module_paths must be an ane_lib.ane_rules.ModulePaths or None, got "
            f"{type(module_paths).__name__}"
        )
    notes: tuple[str, ...] = ()
    if module_paths is None:
        try:
            module_paths = read_module_paths(folder)
        except ValueError as err:
            notes = (f"module paths not read: {err}",)
    import_coreai()
    from coreai.authoring import AIModelAsset

    with quiet():
        program = AIModelAsset.load(folder).program
        # the MLIR module lives in the program's context: keep the program alive while walking
        graph = program_graph(
            program._module._mlir_module,
            function=function,
            source=os.fspath(path),
            module_paths=module_paths,
            composites=composites,
            notes=notes,
        )
    return analyse(graph)

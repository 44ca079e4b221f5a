"""Export a PyTorch model to a Core AI program (``.aimodel``), fp16 by default.

The path is Apple's (coreai-torch 0.4.3): ``torch.export.export`` captures the model,
``run_decompositions(coreai_torch.get_decomp_table())`` lowers it to core ATen ops while keeping
the ops Core AI implements as composites (scaled dot-product attention, layer norm, ...), and
``TorchConverter().add_exported_program(...).to_coreai()`` builds the program, which
``save_asset`` writes as an ``.aimodel`` folder.

What this module adds to that path:

- precision: the converter has no precision flag. ``precision="fp16"`` exports a half-precision
  copy of the model (weights, activations and the program's float inputs and outputs in fp16),
  as the Neural Engine computes; the user's model is left as it was.
- the same inputs and outputs as :func:`ane_lib.coreml.export` (one shape, or named
  :class:`~ane_lib.signature.TensorSpec` inputs; outputs named ``logits``, ``output_0``, ...),
  through :mod:`ane_lib.signature`;
- atomic writing (:func:`ane_lib._files.staged_folder`): ``save_asset`` itself deletes an
  existing folder first and writes in place, so it is pointed at a scratch folder that is renamed
  into place once complete, and an existing program is replaced only with ``overwrite=True``;
- errors that name the ATen op, the PyTorch module and the source line a conversion failed on;
- what was exported, recorded in the asset's metadata (:func:`read_export_metadata`), and the
  PyTorch module of every fx node kept in the folder (``ane_lib_module_paths.json``), so that
  :func:`ane_lib.coreai.report` names the module of each op.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ane_lib._checks import check_choice, check_nonnegative_int
from ane_lib._export import (
    META_PREFIX,
    ExportError,
    check_model_and_inputs,
    decode_metadata,
    export_metadata,
    model_name,
    progress_reporter,
)
from ane_lib._files import check_destination, staged_folder
from ane_lib._warnings import quiet_library_warnings
from ane_lib.ane_rules.module_paths import (
    ModulePaths,
    node_location,
    node_modules,
    read_module_paths_file,
)
from ane_lib.coreai._sdk import import_coreai, quiet
from ane_lib.precision import PRECISIONS, Precision
from ane_lib.signature import (
    InputCasts,
    TensorSpec,
    flatten_outputs,
    jsonable,
    name_outputs,
    sample_inputs,
)

__all__ = [
    "META_PREFIX",
    "MODULE_PATHS_FILE",
    "PRECISIONS",
    "CoreAIExportError",
    "Precision",
    "export",
    "read_export_metadata",
    "read_module_paths",
]

#: Prefix of the metadata keys that :func:`export` writes (as the Core ML export does).
#: The file, inside the ``.aimodel`` folder, that holds the PyTorch module of each fx node.
MODULE_PATHS_FILE = "ane_lib_module_paths.json"

_UNSUPPORTED = re.compile(r"unsupported ATen ops: (?P<ops>[\w.]+(?:, [\w.]+)*)")


class CoreAIExportError(ExportError):
    """``torch.export`` or the Core AI conversion failed (an :class:`ane_lib.coreml.ExportError`
    too, so one ``except`` serves both stacks). Attributes: ``stage``, ``op``, ``layer``."""


def _tracking_converter(coreai_torch: Any) -> Any:
    """A ``TorchConverter`` that remembers the fx node it is converting (for error messages)."""

    class _Converter(coreai_torch.TorchConverter):
        current_node: Any = None

        def _get_operation(self, node: Any) -> Any:
            self.current_node = node
            return super()._get_operation(node)

    return _Converter()


def _conversion_error(err: Exception, exported: Any, node: Any) -> CoreAIExportError:
    """Name the op, module and source line the converter failed on."""
    text = f"{type(err).__name__}: {err}"
    names: list[str] = []
    op = None
    if match := _UNSUPPORTED.search(str(err)):
        # "aten.foo.default, aten.bar.default": find the nodes that call them
        wanted = {o.strip().rstrip(".") for o in match.group("ops").split(",")}
        op = sorted(wanted)[0]
        names = [n.name for n in exported.graph.nodes if str(n.target) in wanted][:1]
        what = f"op {', '.join(sorted(wanted))} has no Core AI lowering in coreai-torch"
    elif node is not None:
        names, op = [node.name], str(node.target)
        what = f"converting op '{op}' failed"
    else:
        what = "conversion failed"
    message = f"Core AI conversion failed: {what}"
    layer = None
    if names:
        layer, source = node_location(exported, names[0])
        if layer:
            message += f" (graph node '{names[0]}') in layer {layer}"
        if source:
            message += f"; source: {source}"
    message += f". coreai-torch said: {text}"
    return CoreAIExportError(
        message, stage="convert", op=op, layer=layer.split(" ")[0] if layer else None
    )


def _half_inputs(
    examples: Mapping[str, torch.Tensor], specs: Mapping[str, TensorSpec]
) -> dict[str, torch.Tensor]:
    return {
        n: x.half() if specs[n].dtype == torch.float32 else x.to(specs[n].package_torch_dtype)
        for n, x in examples.items()
    }


def record_metadata(asset: Any, entries: Mapping[str, Any], description: str | None) -> None:
    """Store ``entries`` in a saved program's metadata, under :data:`META_PREFIX`; with a
    ``description``, also ane_lib as the author and the description."""
    import ane_lib

    def update(meta: Any) -> None:
        if description is not None:
            meta.author = f"ane_lib {ane_lib.__version__}"
            meta.model_description = description
        for key, value in entries.items():
            # JSON text, not JSON values: coreai-core 1.0.0b3 reads a stored 0 or 1 back as
            # False or True
            meta.set_custom(META_PREFIX + key, json.dumps(jsonable(value), sort_keys=True))

    asset.update_metadata(update)


def export(
    model: nn.Module,
    input_shape: Sequence[int] | Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    precision: Precision = "fp16",
    overwrite: bool = False,
    input_name: str = "image",
    output_name: str = "logits",
    output_names: Sequence[str] | None = None,
    name: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    seed: int = 0,
    progress: bool | Callable[[str], None] = False,
) -> Path:
    """Export ``model`` to a Core AI program at ``path`` (must end in ``.aimodel``).

    Args:
        model: a module; put in eval mode for the export (its flag is restored afterwards).
            With one input it is called as ``model(x)``, with several as ``model(**inputs)``.
        input_shape: the fixed shape of the one float32 input (e.g. ``(1, 3, 256, 256)``,
            called ``input_name``), or a mapping input name -> shape, :class:`TensorSpec` or
            example tensor, as for :func:`ane_lib.coreml.export`. Shapes are static.
        path: destination ``.aimodel`` folder; refused if it exists unless ``overwrite=True``.
        precision: ``"fp16"`` (default): a half-precision copy of the model is exported, so
            weights, activations and float inputs and outputs are fp16; ``"fp32"``: as is.
        input_name / output_name: names of a single input / single output tensor.
        output_names: names of the output tensors, in order (default as
            :func:`~ane_lib.signature.flatten_outputs` names them).
        name: model name recorded in the metadata (default ``model.name``, the config's name
            or the class name).
        metadata: extra entries recorded (JSON-able values), with the model's options, the
            inputs, the outputs, the precision and the ane_lib version; read back with
            :func:`read_export_metadata`.
        seed: seed of the example inputs that ``torch.export`` traces with.
        progress: ``True`` prints stage lines to stderr; a callable receives them instead.

    Returns the destination path. Raises ValueError/TypeError on bad arguments, FileExistsError
    if ``path`` exists and ``overwrite`` is false, :class:`CoreAIExportError` (naming the op,
    layer and source line when known) when capture or conversion fails, and
    :class:`~ane_lib.coreai.CoreAIUnavailableError` without Core AI; then nothing is written.
    """

    specs, given, single_input = check_model_and_inputs(model, input_shape, input_name, output_name)
    check_choice("precision", precision, PRECISIONS)
    check_nonnegative_int("seed", seed)
    dest = check_destination(path, overwrite, ".aimodel")
    say = progress_reporter(progress)

    import_coreai()
    import coreai_torch

    display_name = model_name(model, name)
    examples = sample_inputs(specs, seed) | given
    casts = {n: spec.dtype for n, spec in specs.items() if spec.dtype != spec.package_torch_dtype}
    if precision == "fp16":
        # a copy: the user's model keeps its dtype; int64/bool inputs still cast back inside
        with quiet_library_warnings():  # copying torch's pytree specs warns (torch 2.13)
            exported_model = copy.deepcopy(model).half()
        fed = _half_inputs(examples, specs)
    else:
        exported_model = model
        fed = {n: x.to(specs[n].package_torch_dtype) for n, x in examples.items()}
    traced: nn.Module = InputCasts(exported_model, casts) if casts else exported_model
    args, kwargs = ((fed[input_name],), {}) if single_input else ((), fed)
    described = specs[input_name].shape if single_input else {n: s.shape for n, s in specs.items()}

    # 1. torch.export, in eval mode and without autograd, lowered by coreai-torch's table.
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    exported_model.eval()
    try:
        if say:
            say(f"torch.export of {display_name} ({precision}) with input {described}")
        with torch.no_grad(), quiet_library_warnings(), quiet():
            eager = traced(*args, **kwargs)
            exported = torch.export.export(traced, args, kwargs).run_decompositions(
                coreai_torch.get_decomp_table()
            )
    except Exception as err:
        raise CoreAIExportError(
            f"torch.export could not capture {display_name} with input {described}: "
            f"{type(err).__name__}: {err}",
            stage="torch.export",
        ) from err
    finally:
        model.train(was_training)
    flat = flatten_outputs(eager, output_name)
    outputs = name_outputs(flat, output_names, specs)
    wrapper = "model" if casts else None
    nodes = node_modules(exported, wrapper)
    paths = ModulePaths(
        nodes={n: p for n, (p, _) in nodes.items()}, types={p: k for p, k in nodes.values()}
    )

    # 2. Convert.
    if say:
        say("coreai-torch: converting to a Core AI program")
    converter = _tracking_converter(coreai_torch)
    try:
        with quiet():
            program = converter.add_exported_program(
                exported, input_names=list(specs), output_names=outputs
            ).to_coreai()
    except Exception as err:
        raise _conversion_error(err, exported, converter.current_node) from err

    # 3. Save in a scratch folder, record what was exported, rename into place.
    if say:
        say(f"saving {dest}")
    entries = export_metadata(
        model,
        display_name,
        specs,
        outputs,
        seed=seed,
        input_name=input_name if single_input else None,
        extra={"precision": precision},
        user=metadata,
    )
    listing = ", ".join(f"{n} {spec.shape}" for n, spec in specs.items())
    description = f"{display_name} exported by ane_lib: {precision} Core AI program, {listing}"
    try:
        with staged_folder(dest, overwrite) as built, quiet():
            asset = program.save_asset(built)
            record_metadata(asset, entries, description)
            target = built / MODULE_PATHS_FILE
            target.write_text(paths.to_json())
    except (ValueError, FileExistsError):
        raise
    except Exception as err:
        raise CoreAIExportError(f"saving {str(dest)!r} failed: {err}", stage="save") from err
    if say:
        say(f"done in {time.perf_counter() - t0:.1f} s: {dest}")
    return dest


# --------------------------------------------------------------------------- reading back


def check_asset_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path if it is a saved ``.aimodel`` folder, else a ValueError saying why."""
    folder = Path(path)
    if folder.suffix != ".aimodel":
        raise ValueError(f"path must be a .aimodel folder, got {str(folder)!r}")
    if not folder.is_dir():
        raise ValueError(f"path {str(folder)!r} does not exist or is not a folder")
    if not any(folder.glob("*.mlirb")):
        raise ValueError(f"path {str(folder)!r} holds no Core AI program (no *.mlirb file)")
    return folder


def _custom_metadata(path: Path) -> dict[str, Any]:
    import_coreai()
    from coreai.authoring import AIModelAsset

    with quiet():
        meta = AIModelAsset.load(path).metadata
    # coreai-core 1.0.0b3 documents ``custom_metadata`` but its object has only
    # ``creator_defined_metadata`` (the name in metadata.json)
    found = getattr(meta, "custom_metadata", None)
    if found is None:
        found = getattr(meta, "creator_defined_metadata", {})
    return dict(found)


def read_export_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What :func:`export` recorded in an ``.aimodel``, without the ``"ane_lib."`` prefix.

    E.g. ``{"model": "tiny_moat_1", "precision": "fp16", "inputs": [...], "outputs":
    ["logits"], "options": {...}, "version": "0.1.0", ...}``; keys of other tools are left out.
    """
    folder = check_asset_path(path)
    return decode_metadata(_custom_metadata(folder))


def read_module_paths(path: str | os.PathLike[str]) -> ModulePaths | None:
    """The PyTorch module of each fx node, as :func:`export` kept it; None when absent.

    Raises ValueError naming the file when it exists but cannot be read.
    """
    return read_module_paths_file(check_asset_path(path) / MODULE_PATHS_FILE)

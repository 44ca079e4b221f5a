"""Export a PyTorch model to a Core ML package (an fp16 ML program by default).

- :func:`export` writes the package; :func:`read_export_metadata` reads back what it recorded.
- :func:`verify` runs the package with the reference executor and the model in PyTorch on the
  same inputs and reports PSNR, maximum errors and top-1 agreement (:class:`Verification`).

The path taken is the one that works with torch 2.13 and coremltools 9 (see the book, chapter 8):
``torch.export.export`` captures the model as an ATen graph (``torch.jit.trace`` chokes on the
shape arithmetic ANE layers use), :func:`ane_lib.coreml.normalise.prepare_for_coreml` lowers it
to core ATen ops and rewrites what coremltools rejects although PyTorch runs it (a max-pool
stride left at its default, ops without a conversion that PyTorch decomposes), and
``coremltools.convert`` turns it into an ML program whose compute precision is fp16, the only
precision the Neural Engine computes in.

Nothing half-written is left on disk: the package is saved in a hidden temporary folder next to
the destination and renamed into place once complete; an existing package is replaced only when
``overwrite=True`` and only after the new one is complete. When conversion fails the error says
which op, layer and source line it failed on.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

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
from ane_lib.ane_rules.module_paths import node_location
from ane_lib.coreml import module_record
from ane_lib.coreml.normalise import prepare_for_coreml
from ane_lib.coreml.program import import_coremltools, package_io, quiet_coremltools
from ane_lib.nn.reparam import reparameterize as reparameterize_model
from ane_lib.precision import PRECISIONS, Precision
from ane_lib.signature import (
    InputCasts,
    TensorSpec,
    example_input,
    flatten_outputs,
    jsonable,
    name_outputs,
    sample_inputs,
)

__all__ = [
    "DEPLOYMENT_TARGETS",
    "ExportError",
    "META_PREFIX",
    "TensorSpec",
    "example_input",
    "export",
    "read_export_metadata",
]

#: Deployment targets accepted by :func:`export`. All of them (iOS16 / macOS13 and later) let the
#: package take and return fp16 arrays, so no cast ops sit at its edges. The default, iOS17 /
#: macOS14, has every op the models of this library use; the per-op compute plan of
#: :func:`ane_lib.coreml.compute_plan` needs the OS a point release later (iOS17.4 / macOS14.4).
DeploymentTarget = Literal["iOS16", "iOS17", "iOS18", "macOS13", "macOS14", "macOS15"]
DEPLOYMENT_TARGETS: tuple[DeploymentTarget, ...] = get_args(DeploymentTarget)

#: Prefix of the user-defined metadata keys that :func:`export` writes.

_UNSUPPORTED_NODE = re.compile(r"Unsupported fx node (?P<node>\S+), kind (?P<kind>\S+)")
_NAMED_LAYER = re.compile(r'Layer "(?P<name>[^"]+)", with type "(?P<type>[^"]+)"')
_FRONTEND_STAGE = "frontend"
_PASS_STAGE = "pass"


# --------------------------------------------------------------------------- quiet conversion


class _ConversionTracker:
    """Stands in for tqdm inside coremltools: no progress bars, and it remembers where it was.

    coremltools iterates the graph's nodes and then its MIL passes through ``tqdm``; replacing
    that iterator hides the bars and tells us which node or pass was in progress when an
    exception escapes.
    """

    def __init__(self, report: Callable[[str], None] | None) -> None:
        self.stage: str | None = None
        self.item: Any = None
        self._report = report

    def __call__(self, iterable: Iterable[Any], desc: str | None = None, **_: Any) -> Iterator[Any]:
        stage = _FRONTEND_STAGE if desc and "Frontend" in desc else _PASS_STAGE
        if self._report is not None and desc:
            self._report(desc.replace("==>", "->"))
        for item in iterable:
            self.stage, self.item = stage, item
            yield item
        self.stage, self.item = None, None


@contextlib.contextmanager
def _quiet_conversion(tracker: _ConversionTracker) -> Iterator[None]:
    """Inside the block: coremltools' progress bars go through ``tracker``, its log lines and
    library-internal deprecation warnings are silenced. Everything is restored on exit."""
    from coremltools.converters.mil.frontend.torch import ops as torch_ops
    from coremltools.converters.mil.mil.passes import pass_pipeline

    patches = [(torch_ops, "_tqdm"), (pass_pipeline, "tqdm")]
    saved = [(mod, name, getattr(mod, name)) for mod, name in patches if hasattr(mod, name)]
    for mod, name, _ in saved:
        setattr(mod, name, tracker)
    try:
        # coremltools logs its own "ERROR - converting ..." line before re-raising; our
        # ExportError carries the same information, so the logger is silenced completely.
        with quiet_coremltools(logging.CRITICAL + 1), quiet_library_warnings("coremltools"):
            yield
    finally:
        for mod, name, original in saved:
            setattr(mod, name, original)


# --------------------------------------------------------------------------- error locating


def _fx_name(mil_name: str) -> str:
    """The fx node a MIL op name came from: coremltools appends dtype suffixes to it."""
    return re.sub(r"(_cast_fp16|_cast_fp32|_to_fp16|_to_fp32)+$", "", mil_name)


def _conversion_error(err: Exception, exported: Any, tracker: _ConversionTracker) -> ExportError:
    node_name = kind = None
    text = str(err)
    if match := _UNSUPPORTED_NODE.search(text):
        node_name, kind = match.group("node"), match.group("kind")
        what = f"op '{kind}' has no Core ML conversion in coremltools"
    elif tracker.stage == _FRONTEND_STAGE and tracker.item is not None:
        node_name, kind = getattr(tracker.item, "name", None), getattr(tracker.item, "kind", None)
        what = f"converting op '{kind}' failed"
    elif tracker.stage == _PASS_STAGE and tracker.item is not None:
        what = f"MIL optimisation pass '{tracker.item}' failed"
    elif match := _NAMED_LAYER.search(text):
        # Checks after the passes (e.g. the rank <= 5 rule) name the MIL op they reject.
        node_name, kind = _fx_name(match.group("name")), match.group("type")
        what = f"Core ML rejects the '{kind}' op '{match.group('name')}'"
    else:
        what = "conversion failed"
    parts = [f"Core ML conversion failed: {what}"]
    layer = source = None
    if node_name:
        layer, source = node_location(exported, node_name)
        if layer or source:
            parts.append(f"(graph node '{node_name}')")
    if layer:
        parts.append(f"in layer {layer}")
    message = " ".join(parts)
    if source:
        message += f"; source: {source}"
    message += f". coremltools said: {type(err).__name__}: {text}"
    return ExportError(
        message, stage="convert", op=kind, layer=layer.split(" ")[0] if layer else None
    )


# --------------------------------------------------------------------------- metadata


def read_export_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read back what :func:`export` recorded in a package, with JSON values decoded.

    Keys are those of ``export``'s metadata without the ``"ane_lib."`` prefix, e.g.
    ``{"model": "tiny_moat_1", "options": {...}, "version": "0.1.0", "input_shape": [1, 3, 256,
    256], ...}``; keys recorded by other tools are left out.
    """
    info = package_io(path)
    return decode_metadata(info.user_metadata)


# --------------------------------------------------------------------------- export


def export(
    model: nn.Module,
    input_shape: Sequence[int] | Mapping[str, Sequence[int] | TensorSpec | torch.Tensor],
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    input_name: str = "image",
    output_name: str = "logits",
    output_names: Sequence[str] | None = None,
    name: str | None = None,
    description: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    deployment_target: DeploymentTarget = "iOS17",
    precision: Precision = "fp16",
    seed: int = 0,
    progress: bool | Callable[[str], None] = False,
    reparameterize: bool = False,
) -> Path:
    """Export ``model`` to a Core ML ML program at ``path`` (must end in ``.mlpackage``).

    Args:
        model: a module in eval mode's computation; it is put in eval mode for the export and
            its training flag is restored afterwards. With one input it is called as
            ``model(x)``; with several, as ``model(**inputs)``.
        input_shape: the fixed shape of the one float32 input (e.g. ``(1, 3, 256, 256)``,
            called ``input_name``), or a mapping from input name (a parameter of ``forward``)
            to its shape (float32), a :class:`~ane_lib.coreml.signature.TensorSpec` (shape,
            dtype and sample range, e.g. ``TensorSpec((1, 128), torch.int32, high=30522)`` for
            token ids) or an example tensor (its shape and dtype; used to trace the model).
            Shapes are static: a dynamic dimension (``None``, ``-1``) is a ValueError naming
            the input. int64 and bool inputs are declared int32 in the package and cast back
            inside it.
        path: destination ``.mlpackage``; refused if it exists unless ``overwrite=True``.
        input_name / output_name: the feature names of a single input / single output tensor
            (default ``image`` / ``logits``).
        output_names: names for the output tensors, in order. By default a tensor is
            ``output_name``, a tuple gives ``output_0, output_1, ...``, a dict or Hugging Face
            ``ModelOutput`` its keys (nested: ``hidden_states_0``).
        name: model name stored in the metadata (default: ``model.name`` or the class name).
        description: short description stored in the package.
        metadata: extra user-defined metadata; values that are not strings are stored as JSON.
            Stored with ``model.config`` (if present) as ``ane_lib.options``, the ane_lib version,
            the inputs (``ane_lib.inputs``: name, shape, dtype, sample range; and
            ``input_shape`` for a single input), the output names, the example-input seed and
            the graph rewrites made for coremltools (``ane_lib.graph_fixes``, see
            :mod:`ane_lib.coreml.normalise`); read back with :func:`read_export_metadata`.
        deployment_target: one of :data:`DEPLOYMENT_TARGETS`; default ``"iOS17"``.
        precision: ``"fp16"`` (default: what the Neural Engine runs) or ``"fp32"`` (a package
            that runs on CPU/GPU only; with the executor's fp32 mode it reproduces PyTorch's
            float32 forward, which is how the executor itself is checked).
        seed: seed of the example inputs used by ``torch.export`` where no example tensor is
            given (see :func:`~ane_lib.coreml.signature.sample_inputs`).
        progress: ``True`` prints stage lines to stderr; a callable receives them instead.
        reparameterize: export :func:`ane_lib.nn.reparameterize` of the model (traced with the
            example input): re-parameterisable blocks replaced by their conv and batch norms
            folded into their convs, same outputs, fewer ops. Recorded in the metadata.

    Returns the destination path. Raises ValueError/TypeError on bad arguments, FileExistsError
    if ``path`` exists and ``overwrite`` is false, and :class:`ExportError` (naming the op,
    layer and source line when known) if tracing or conversion fails; then nothing is written.
    """
    import ane_lib

    specs, given, single_input = check_model_and_inputs(model, input_shape, input_name, output_name)
    check_choice("deployment_target", deployment_target, DEPLOYMENT_TARGETS)
    check_choice("precision", precision, PRECISIONS)
    check_nonnegative_int("seed", seed)
    dest = check_destination(path, overwrite, ".mlpackage")
    say = progress_reporter(progress)

    ct = import_coremltools()
    display_name = model_name(model, name)
    examples = sample_inputs(specs, seed) | given
    if reparameterize:  # traced with the example inputs, in the order forward() takes them
        if single_input:
            traced_args: tuple[Any, ...] = (examples[input_name],)
        else:
            traced_args = tuple(inspect.signature(model.forward).bind(**examples).args)
        model = reparameterize_model(model, traced_args)
    shapes = {n: spec.shape for n, spec in specs.items()}
    # int64 and bool inputs enter the package as int32 and are cast back inside the graph
    casts = {n: spec.dtype for n, spec in specs.items() if spec.dtype != spec.package_torch_dtype}
    traced: nn.Module = InputCasts(model, casts) if casts else model
    fed = {n: x.to(specs[n].package_torch_dtype) for n, x in examples.items()}
    args, kwargs = ((fed[input_name],), {}) if single_input else ((), fed)
    described = shapes[input_name] if single_input else shapes

    # 1. Capture the graph with torch.export, in eval mode and without autograd; name outputs.
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    try:
        if say:
            say(f"torch.export of {display_name} with input {described}")
        with torch.no_grad(), quiet_library_warnings():
            eager = traced(*args, **kwargs)
            # a non-tensor output is named here, before torch.export trips over it
            flat = flatten_outputs(eager, output_name)
            exported = torch.export.export(traced, args, kwargs)
            # ATen that coremltools rejects, rewritten (ane_lib.coreml.normalise)
            exported, fixes = prepare_for_coreml(exported)
        # module paths, kept with the package (the user's own, not under the cast wrapper)
        nodes = module_record.tag_nodes(exported, wrapper="model" if casts else None)
    except Exception as err:
        raise ExportError(
            f"torch.export could not capture {display_name} with input {described}: "
            f"{type(err).__name__}: {err}",
            stage="torch.export",
        ) from err
    finally:
        model.train(was_training)
    outputs = name_outputs(flat, output_names, specs)
    if say and fixes:
        say("graph rewritten for coremltools: " + "; ".join(map(str, fixes)))

    # 2. Convert to an ML program (fp16 unless asked otherwise), coremltools' noise kept quiet.
    tracker = _ConversionTracker(say)
    if say:
        say(f"coremltools: {precision} ML program for {deployment_target}")
    try:
        with _quiet_conversion(tracker):
            mlmodel = ct.convert(
                exported,
                convert_to="mlprogram",
                compute_precision=(
                    ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32
                ),
                minimum_deployment_target=getattr(ct.target, deployment_target),
                inputs=[
                    # a float32 input is left to coremltools, which types it fp16 in an
                    # fp16 program (no cast at the model's edge); integers travel as int32
                    ct.TensorType(
                        name=n,
                        shape=spec.shape,
                        dtype=None if spec.dtype == torch.float32 else spec.package_dtype,
                    )
                    for n, spec in specs.items()
                ],
                outputs=[ct.TensorType(name=n) for n in outputs],
            )
    except Exception as err:
        raise _conversion_error(err, exported, tracker) from err

    # 3. Metadata: who made it, from what, with which options.
    mlmodel.author = f"ane_lib {ane_lib.__version__}"
    mlmodel.version = ane_lib.__version__
    listing = ", ".join(f"{n} {spec.shape}" for n, spec in specs.items())
    mlmodel.short_description = description or (
        f"{display_name} exported by ane_lib: {precision} ML program, input {listing}"
    )
    for n, spec in specs.items():
        mlmodel.input_description[n] = f"{spec.dtype_name} tensor of shape {spec.shape}"
    for n, tensor in zip(outputs, flat.values(), strict=True):
        mlmodel.output_description[n] = f"output of {display_name}, shape {tuple(tensor.shape)}"
    user = mlmodel.user_defined_metadata
    entries = export_metadata(
        model,
        display_name,
        specs,
        outputs,
        seed=seed,
        input_name=input_name if single_input else None,
        extra={
            "deployment_target": deployment_target,
            "reparameterized": bool(reparameterize),
            "graph_fixes": [fix.to_dict() for fix in fixes],
        },
        user=metadata,
    )
    for key, value in entries.items():
        user[META_PREFIX + str(key)] = (
            value if isinstance(value, str) else json.dumps(jsonable(value), sort_keys=True)
        )

    # 4. Save next to the destination, then rename into place.
    if say:
        say(f"saving {dest}")
    try:
        with staged_folder(dest, overwrite) as built:
            with quiet_coremltools():
                mlmodel.save(str(built))
            module_record.write_record(built, nodes)
    except (ValueError, FileExistsError):
        raise
    except Exception as err:
        raise ExportError(f"saving {str(dest)!r} failed: {err}", stage="save") from err
    if say:
        say(f"done in {time.perf_counter() - t0:.1f} s: {dest}")
    return dest

"""What the Core ML and Core AI exports share besides their I/O signature (:mod:`ane_lib.signature`)
and their atomic writes (:mod:`ane_lib._files`): the error they raise, their progress lines and
the metadata they record about what was exported.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from ane_lib.signature import (
    TensorSpec,
    check_input_names,
    check_io_names,
    input_specs,
    model_options,
)

__all__ = [
    "META_PREFIX",
    "ExportError",
    "check_model_and_inputs",
    "decode_metadata",
    "export_metadata",
    "model_name",
    "progress_reporter",
]

#: Prefix of the metadata keys the exports write (``"ane_lib.model"``, ...).
META_PREFIX = "ane_lib."


class ExportError(RuntimeError):
    """``torch.export`` or the conversion failed.

    Attributes: ``stage`` (``"torch.export"``, ``"convert"`` or ``"save"``), ``op`` (the ATen op
    kind that failed, if known), ``layer`` (the dotted submodule path, if known).
    """

    def __init__(
        self, message: str, *, stage: str, op: str | None = None, layer: str | None = None
    ) -> None:
        super().__init__(message)
        self.stage = stage
        self.op = op
        self.layer = layer


def progress_reporter(progress: bool | Callable[[str], None]) -> Callable[[str], None] | None:
    """The export's ``progress`` argument as a function to call with each stage line, or None.

    ``True``: lines on stderr, each with the seconds since this call; a callable: itself;
    ``False``: None. Anything else is a TypeError.
    """
    if progress is True:
        start = time.perf_counter()

        def say(message: str) -> None:
            elapsed = time.perf_counter() - start
            print(f"ane-lib export [{elapsed:6.1f} s] {message}", file=sys.stderr, flush=True)

        return say
    if callable(progress):
        return progress
    if progress is not False:
        raise TypeError(f"progress must be a bool or a callable, got {progress!r}")
    return None


def export_metadata(
    model: nn.Module,
    model_name: str,
    specs: Mapping[str, TensorSpec],
    outputs: Sequence[str],
    *,
    seed: int,
    input_name: str | None,
    extra: Mapping[str, Any],
    user: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The entries an export records (before the ``"ane_lib."`` prefix): the model's name and
    registry options, ane_lib's version, every input's spec and the output names, the seed of the
    example inputs; ``input_shape``/``input_name`` for a single input (``input_name`` not None)
    and ``output_name`` for a single output; then the stack's own ``extra`` entries, then the
    caller's ``user`` entries, which win."""
    import ane_lib

    entries: dict[str, Any] = {
        "model": model_name,
        "version": ane_lib.__version__,
        "inputs": [{"name": n, **spec.to_dict()} for n, spec in specs.items()],
        "outputs": list(outputs),
        "example_seed": seed,
        **extra,
    }
    if input_name is not None:
        entries |= {"input_shape": list(specs[input_name].shape), "input_name": input_name}
    if len(outputs) == 1:
        entries["output_name"] = outputs[0]
    options = model_options(model)
    if options is not None:
        entries["options"] = options
    entries.update(dict(user or {}))
    return entries


def model_name(model: nn.Module, name: str | None) -> str:
    """The name an export records: ``name`` if given, else the model's ``name`` attribute (the
    registry's models), its Hugging Face config's ``name``, or its class name."""
    config_name = getattr(getattr(model, "config", None), "name", None)
    return name or getattr(model, "name", None) or config_name or type(model).__name__


def decode_metadata(stored: Mapping[str, Any]) -> dict[str, Any]:
    """The entries an export recorded, read back from a model's metadata ``stored``: the keys
    with :data:`META_PREFIX`, without it, their JSON text decoded (kept as it is where it is not
    JSON). Keys of other tools are left out."""
    out: dict[str, Any] = {}
    for key, raw in stored.items():
        if not key.startswith(META_PREFIX):
            continue
        try:
            out[key[len(META_PREFIX) :]] = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError:
            out[key[len(META_PREFIX) :]] = raw
    return out


def check_model_and_inputs(
    model: object, input_shape: Any, input_name: str, output_name: str
) -> tuple[dict[str, TensorSpec], dict[str, Any], bool]:
    """The first checks of both exports: ``model`` is a module, the names are usable, and
    ``input_shape`` is one input's shape or a mapping whose names ``model.forward`` takes.

    Returns ``(specs, given, single_input)`` as :func:`ane_lib.signature.input_specs` does,
    and whether one unnamed input was given.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_io_names(input_name, output_name)
    specs, given = input_specs(input_shape, input_name)
    single_input = not isinstance(input_shape, Mapping)
    if not single_input:
        check_input_names(model, list(specs))
    return specs, given, single_input

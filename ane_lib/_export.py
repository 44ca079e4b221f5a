"""What the Core ML and Core AI exports share besides their I/O signature (:mod:`ane_lib.signature`)
and their atomic writes (:mod:`ane_lib._files`): the error they raise, their progress lines and
the metadata they record about what was exported.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from ane_lib.signature import TensorSpec, model_options

__all__ = ["ExportError", "export_metadata", "model_name", "progress_reporter"]


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

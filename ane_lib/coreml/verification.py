"""Check a saved package against its PyTorch model: run both on the same inputs and compare.

The inputs are random samples of the package's declared inputs (drawn as ``export`` recorded
them: token ids in their range, a 0/1 mask, an image in ``[0, 1)``), or a data set the caller
passes. Every output of the package is compared with the model's output of the same name
(:func:`~ane_lib.signature.flatten_outputs`), and the figures are given per output and for
the worst output. The measures and the comparison are shared with the Core AI runtime's check
(:mod:`ane_lib.verification`).

Two comparisons answer two questions:

- is the executor right? Export with ``precision="fp32"`` and verify (the executor's default
  mode, ``"declared"``, then stores every value in fp32, as the package declares): only the
  executor's arithmetic differs from PyTorch (about 1e-6 relative).
- what does deployment cost? Export in fp16 (the default) and verify: the package declares
  fp16 throughout, so every value is stored in fp16, as on the Neural Engine
  (``mode="neural_engine_fp16"`` forces that for any package), against PyTorch in fp32.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from ane_lib.coreml.program import PackageInfo, package_io
from ane_lib.precision import Precision
from ane_lib.signature import TensorSpec
from ane_lib.verification import (
    Verification,
    check_verify_arguments,
    compare,
    psnr,
    recorded_specs,
)

__all__ = ["Verification", "psnr", "verify"]


_FLOAT_TYPES = {"FLOAT16": torch.float16, "FLOAT32": torch.float32}


def _recorded_specs(info: PackageInfo) -> dict[str, TensorSpec]:
    """The package's inputs as ``export`` recorded them, else from its declared types."""
    from ane_lib.coreml.export import read_export_metadata

    return recorded_specs(
        read_export_metadata(info.path).get("inputs"),
        {t.name: (t.shape, _FLOAT_TYPES.get(t.dtype, t.dtype)) for t in info.inputs},
        source=repr(str(info.path)),
    )


def verify(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    samples: int | None = None,
    seed: int = 0,
    mode: str | None = None,
    precision: Precision | None = None,
    inputs: Iterable[torch.Tensor | Mapping[str, torch.Tensor]] | None = None,
) -> Verification:
    """Run the package at ``path`` with the reference executor and ``model`` in PyTorch on the
    same inputs, and compare every output.

    Args:
        path: a saved ``.mlpackage``, e.g. from :func:`ane_lib.coreml.export`.
        model: the PyTorch model; called as ``model(x)`` for a one-input package, else as
            ``model(**inputs)``. It runs in its own dtype (fp32 by default), in eval mode.
        samples: number of random inputs (default 2); not with ``inputs``.
        seed: random inputs use seeds ``seed, seed + 1, ...``: each draws every input as
            ``export`` recorded it (e.g. an image ``(1, 3, 256, 256)`` in ``[0, 1)``, as
            :func:`~ane_lib.coreml.example_input`; token ids in ``[0, vocab)``).
        mode: how the executor stores values (default ``"declared"``: each in the type the
            package declares; see :func:`ane_lib.coreml.run`).
        precision: the earlier alias: ``"fp16"`` is ``mode="neural_engine_fp16"``,
            ``"fp32"`` is ``mode="fp32_reference"``.
        inputs: a data set instead of random inputs: an iterable of samples, each a tensor
            (one-input package) or a mapping input name -> tensor of the declared shape.

    Float inputs that the package takes in fp16 are rounded to fp16 for both sides. Returns a
    :class:`Verification` with figures per output and for the worst output.
    """
    from ane_lib.coreml.executor import resolve_mode, run
    from ane_lib.coreml.program import load_program

    n_random = check_verify_arguments(model, samples, seed, inputs)
    mode = resolve_mode(mode, precision)
    info = package_io(path)
    specs = _recorded_specs(info)
    declared = {t.name: t.dtype for t in info.inputs}
    program = load_program(path)
    return compare(
        model,
        lambda arrays: run(program, arrays, mode),
        specs,
        [t.name for t in info.outputs],
        samples=n_random,
        seed=seed,
        inputs=inputs,
        fp16_inputs=[name for name, dtype in declared.items() if dtype == "FLOAT16"],
        mode=mode,
        engine="executor",
        source=repr(str(path)),
    )

"""Check a Core AI program against its PyTorch model, with Apple's runtime.

The same measures and the same inputs as :func:`ane_lib.coreml.verify` (shared in
:mod:`ane_lib.verification`): random samples of the inputs as :func:`ane_lib.coreai.export`
recorded them, or a data set; PSNR, maximum absolute and relative errors and top-1 agreement,
per output and for the worst. The program runs in Apple's runtime (CPU on Linux) in the
precision it was exported in: an fp16 program computes in fp16, so its figures are what the
half-precision deployment costs; an fp32 program checks the conversion itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from ane_lib.coreai.export import read_export_metadata
from ane_lib.coreai.runtime import Session
from ane_lib.signature import TensorSpec
from ane_lib.verification import Verification, check_verify_arguments, compare, recorded_specs

__all__ = ["ENGINE", "verify"]

#: How a Core AI verification names what ran the program.
ENGINE = "Core AI runtime"


_FLOAT_TYPES = {"float16": torch.float16, "float32": torch.float32}


def _specs(path: str | os.PathLike[str], session: Session) -> dict[str, TensorSpec]:
    """The program's inputs as ``export`` recorded them, else from its signature."""
    return recorded_specs(
        read_export_metadata(path).get("inputs"),
        {
            name: (shape, _FLOAT_TYPES.get(dtype, dtype))
            for name, (shape, dtype) in session.signature.inputs.items()
        },
        source=repr(str(path)),
        noun="program",
    )


def verify(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    samples: int | None = None,
    seed: int = 0,
    inputs: Iterable[torch.Tensor | Mapping[str, torch.Tensor]] | None = None,
) -> Verification:
    """Run the Core AI program at ``path`` with Apple's runtime and ``model`` in PyTorch on the
    same inputs, and compare every output.

    Args:
        path: a saved ``.aimodel``, e.g. from :func:`ane_lib.coreai.export`.
        model: the PyTorch model (``model(x)`` for one input, else ``model(**inputs)``), run in
            its own dtype, in eval mode.
        samples: number of random inputs (default 2); not with ``inputs``.
        seed: random inputs use seeds ``seed, seed + 1, ...``, drawn as ``export`` recorded
            them (e.g. an image in ``[0, 1)``, as :func:`ane_lib.coreml.example_input`).
        inputs: a data set instead: an iterable of tensors (one-input program) or mappings
            input name -> tensor.

    Float inputs that the program takes in fp16 are rounded to fp16 for both sides. Returns a
    :class:`~ane_lib.verification.Verification` whose ``mode`` is the program's precision.
    """
    n_random = check_verify_arguments(model, samples, seed, inputs)
    with Session(path) as session:
        specs = _specs(path, session)
        declared = session.signature.inputs
        fp16 = [name for name, (_, dtype) in declared.items() if dtype == "float16"]
        out_dtypes = {dtype for _, dtype in session.signature.outputs.values()}
        precision = read_export_metadata(path).get("precision") or (
            "fp16" if out_dtypes == {"float16"} else "fp32"
        )
        return compare(
            model,
            session,
            specs,
            list(session.signature.outputs),
            samples=n_random,
            seed=seed,
            inputs=inputs,
            fp16_inputs=fp16,
            mode=str(precision),
            engine=ENGINE,
            source=repr(str(path)),
            noun="program",
        )

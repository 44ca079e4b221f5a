"""Run a package over a whole data set and score its logits (accuracy, agreement, PSNR).

:func:`run_dataset` feeds the samples of a data set one at a time to the package's executor
(:func:`ane_lib.coreml.run`), as an app would feed its images to a batch-1 model.
:func:`score_logits` compares the logits with the labels and with a reference model's logits.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ane_lib.coreml.verification import psnr

if TYPE_CHECKING:
    from coremltools.converters.mil.mil import Program

__all__ = ["LogitScore", "run_dataset", "score_logits"]


def run_dataset(
    path_or_program: str | os.PathLike[str] | Program,
    samples: Any,
    mode: str | None = None,
    *,
    precision: str | None = None,
) -> np.ndarray:
    """The package's output for every sample: ``samples: (N, *shape) -> (N, *out_shape)``.

    The package must have one input of shape ``(1, *shape)`` and one output, e.g. an image
    classifier exported for ``(1, 3, 32, 32)`` and ``samples`` of shape ``(N, 3, 32, 32)``
    (numpy array or torch tensor); it is run once per sample by :func:`ane_lib.coreml.run` in
    ``mode`` (default ``"declared"``: each value in the type the package gives it;
    ``precision="fp16"`` / ``"fp32"`` are the earlier names of ``"neural_engine_fp16"`` and
    ``"fp32_reference"``). The result is float32 (in an fp16 run it holds the fp16 values the
    package computed).
    """
    from ane_lib.coreml.executor import resolve_mode, run
    from ane_lib.coreml.program import load_program

    run_mode = resolve_mode(mode, precision)
    program = (
        load_program(path_or_program)
        if isinstance(path_or_program, (str, os.PathLike))
        else path_or_program
    )
    function = program.functions["main"]
    if len(function.inputs) != 1 or len(function.outputs) != 1:
        raise ValueError(
            f"the package must have one input and one output, has {list(function.inputs)} -> "
            f"{[v.name for v in function.outputs]}"
        )
    name, var = next(iter(function.inputs.items()))
    if hasattr(samples, "detach"):
        samples = samples.detach().cpu().numpy()
    samples = np.asarray(samples)
    if tuple(var.shape) != (1, *samples.shape[1:]) or len(samples) == 0:
        raise ValueError(
            f"samples must have shape (N, {', '.join(str(d) for d in var.shape[1:])}) with "
            f"N >= 1 for the package's input {name!r} of shape {tuple(var.shape)}, got "
            f"{samples.shape}"
        )
    output = function.outputs[0].name
    results = [run(program, {name: x[None]}, run_mode)[output] for x in samples]
    return np.concatenate(results).astype(np.float32)


@dataclass(frozen=True)
class LogitScore:
    """How logits ``(N, classes)`` do against labels and against reference logits.

    ``accuracy``: share of samples whose arg-max is the label; ``agreement``: share whose
    arg-max is the reference's; ``psnr_db``: PSNR of the logits against the reference's
    (:func:`ane_lib.coreml.psnr`); ``samples``: N.
    """

    samples: int
    accuracy: float
    agreement: float
    psnr_db: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def score_logits(logits: Any, labels: Any, reference: Any) -> LogitScore:
    """Score ``logits: (N, classes)`` against ``labels: (N,)`` and ``reference: (N, classes)``."""
    got = np.asarray(logits.detach() if hasattr(logits, "detach") else logits, np.float64)
    ref = np.asarray(reference.detach() if hasattr(reference, "detach") else reference, np.float64)
    truth = np.asarray(labels.detach() if hasattr(labels, "detach") else labels)
    if got.ndim != 2 or got.shape != ref.shape or truth.shape != got.shape[:1]:
        raise ValueError(
            f"logits and reference must have the same shape (N, classes) and labels (N,), got "
            f"{got.shape}, {ref.shape} and {truth.shape}"
        )
    predicted = got.argmax(1)
    return LogitScore(
        samples=len(truth),
        accuracy=float(np.mean(predicted == truth)),
        agreement=float(np.mean(predicted == ref.argmax(1))),
        psnr_db=psnr(ref, got),
    )

"""ane_lib.coreai: the same model on Apple's Core AI, converted and run with Apple's own tools.

Mirrors :mod:`ane_lib.coreml`, sharing its inputs and outputs (:mod:`ane_lib.signature`), its
verification measures and the Neural Engine rule table (:mod:`ane_lib.ane_rules`):

- :func:`export` writes a Core AI program (``.aimodel``, fp16 by default) with coreai-torch;
- :func:`run` / :class:`Session` execute it with coreai-core's runtime (CPU on Linux);
- :func:`verify` compares it with the PyTorch model (PSNR, errors, top-1 agreement);
- :func:`report` applies the Neural Engine rules to its ops, shapes and dtypes;
- :func:`compress` quantizes or palettizes its weights with coreai-opt.

Needs the ``[coreai]`` extra, whose wheels exist for CPython 3.11 on Linux x86_64 (glibc >= 2.34)
and on macOS 26+ on Apple silicon. Importing this package always works; its functions raise
:class:`CoreAIUnavailableError` naming what is missing where the packages are not installed.
What only a Mac can do (compute units, the compute plan, the Neural Engine) is not here: on
Linux the runtime runs on the CPU.
"""

from ane_lib.coreai._sdk import CoreAIUnavailableError, available, unavailable_reason
from ane_lib.coreai.compress import asset_bytes, compress
from ane_lib.coreai.export import (
    PRECISIONS,
    CoreAIExportError,
    Precision,
    export,
    read_export_metadata,
    read_module_paths,
)
from ane_lib.coreai.report import report
from ane_lib.coreai.runtime import FunctionSignature, Session, run, run_dataset, signature
from ane_lib.coreai.verification import verify
from ane_lib.verification import Verification

__all__ = [
    "PRECISIONS",
    "CoreAIExportError",
    "CoreAIUnavailableError",
    "FunctionSignature",
    "Precision",
    "Session",
    "asset_bytes",
    "available",
    "compress",
    "export",
    "read_export_metadata",
    "Verification",
    "read_module_paths",
    "report",
    "run",
    "run_dataset",
    "signature",
    "unavailable_reason",
    "verify",
]

"""ane_lib.coreml: from a PyTorch model to a Core ML package, and back again on any OS.

- :func:`export` writes an fp16 ML program (``.mlpackage``) from a PyTorch model;
  :func:`verify` compares the package, run by the executor, with the model in PyTorch.
- :func:`load_program` / :func:`package_io` read a saved package back (Linux or macOS).
- :func:`run` executes the package's program with the reference executor (any OS);
  :func:`numeric_health` reports, per op, how its values sit in fp16's range.
- :func:`report` checks it against the Neural Engine's layout rules (:class:`Report`).
- :func:`predict_on_device` / :func:`compute_plan` use Core ML itself (macOS only).
- :func:`compress` writes a weight-compressed (or W8A8) copy of a package;
  :func:`run_dataset` / :func:`score_logits` run a package over a data set and score it.
"""

from ane_lib.coreml.compress import (
    calibration_ranges,
    compress,
    compressed_weights,
    decompress,
    package_bytes,
    weight_bytes,
)
from ane_lib.coreml.device import ComputePlan, OpPlacement, compute_plan, predict_on_device
from ane_lib.coreml.evaluate import LogitScore, run_dataset, score_logits
from ane_lib.coreml.executor import (
    DECLINED_OPS,
    MODES,
    SUPPORTED_OPS,
    ExecutorError,
    Float16OverflowError,
    NonFiniteOutputError,
    NonFiniteOutputWarning,
    NumericHealth,
    ProgramValidationError,
    UnsupportedOpError,
    numeric_health,
    run,
)
from ane_lib.coreml.export import ExportError, example_input, export, read_export_metadata
from ane_lib.coreml.program import PackageInfo, TensorInfo, load_program, package_io
from ane_lib.coreml.report import Report, plot_padding_by_stage, report
from ane_lib.coreml.signature import TensorSpec
from ane_lib.coreml.verification import Verification, psnr, verify

__all__ = [
    "DECLINED_OPS",
    "MODES",
    "SUPPORTED_OPS",
    "NumericHealth",
    "ProgramValidationError",
    "numeric_health",
    "ExecutorError",
    "Float16OverflowError",
    "NonFiniteOutputError",
    "NonFiniteOutputWarning",
    "UnsupportedOpError",
    "ComputePlan",
    "ExportError",
    "LogitScore",
    "OpPlacement",
    "PackageInfo",
    "Report",
    "TensorInfo",
    "TensorSpec",
    "Verification",
    "calibration_ranges",
    "compress",
    "compressed_weights",
    "compute_plan",
    "decompress",
    "example_input",
    "export",
    "load_program",
    "package_bytes",
    "package_io",
    "plot_padding_by_stage",
    "predict_on_device",
    "psnr",
    "read_export_metadata",
    "report",
    "run",
    "run_dataset",
    "score_logits",
    "verify",
    "weight_bytes",
]

"""A reference executor for Core ML ML programs: run a saved ``.mlpackage`` on any OS.

Core ML's runtime exists only on Apple platforms. :func:`run` executes the MIL program inside
a package (read back by :func:`ane_lib.coreml.program.load_program`) op by op with torch's CPU
kernels, so that on Linux as well as on a Mac one can check what an exported model computes
and how much fp16 costs it. Each op follows its definition in coremltools
(``coremltools.converters.mil.mil.ops.defs``); the implementations live in
:mod:`ane_lib.coreml.ops`, one module per op family, and ``tests/conformance`` checks them
against references written from the same definitions.

How float values are stored (``mode``):

- ``"declared"`` (the default): each variable in the type the program declares for it,
  fp16 or fp32. This is what the program says Core ML computes: iOS17+ programs may mix fp16
  weights with fp32 activations, run some ops in fp32 beside fp16 ones, and cast explicitly.
- ``"neural_engine_fp16"``: every float value -- inputs, weights, each op's output -- in fp16,
  as the Neural Engine holds them, whatever the program declares (parameters that an op takes
  in fp32 only, such as ``upsample_bilinear``'s scale factors, stay fp32).
- ``"fp32_reference"``: every float value in fp32. Run on a package holding float32 weights
  (``ane_lib.coreml.export(..., precision="fp32")``) it reproduces PyTorch's float32 forward to
  about 1e-6 relative, which is what proves the executor right.

The earlier keyword ``precision`` still works as an alias: ``precision="fp16"`` is
``mode="neural_engine_fp16"`` and ``precision="fp32"`` is ``mode="fp32_reference"``.

In every mode an op computes in float32 from its inputs' stored values, and the executor rounds
the result to the output's storage type (IEEE 754 round-to-nearest-even, subnormals kept). The
executor does not model the Neural Engine's internal accumulation, which Apple does not
document: agreement with a device is close, not bit-exact.

Checks made on every run:

- Core ML's own rules before running (:class:`ProgramValidationError`): inputs the op
  specifications mark const are constants, tensors have rank at most 5.
- The first op whose output is no longer finite (a value beyond fp16's 65504 turns into inf):
  :class:`Float16OverflowError` by default, or a :class:`NonFiniteOutputWarning`.
- Each op's output shape against the program's declaration (a mismatch is an executor bug).

:func:`numeric_health` reports, per op, the share of subnormal values (fp16 values below
2**-14, which hardware may flush to zero) beside zeros and the largest magnitude; see
:mod:`ane_lib.coreml.executor.health` for what Arm and Apple document about flushing.

The op types it runs are :data:`SUPPORTED_OPS` (from the registry); any other raises
:class:`UnsupportedOpError` naming the op, with the documented reason where an op type is
declined on purpose (:data:`DECLINED_OPS`). ``python -m ane_lib.coreml.executor --coverage``
prints the op count, the coverage of each coremltools op family and the conformance tests.

Declined on purpose, each with :class:`UnsupportedOpError` and this reason:

- ``conv_quantized``: an experimental coremltools op that only its older neuralnetwork backend
  lowers; an ML program never holds it (compressed weights appear as constexpr ops).
- ``resize`` with ``NEAREST_NEIGHBOR`` and a ``sampling_mode`` other than ``DEFAULT``, and
  ``crop_resize`` with a ``sampling_mode`` other than ``ALIGN_CORNERS`` /
  ``STRICT_ALIGN_CORNERS``: the definitions do not say which source positions these read, and
  coremltools' recorded Core ML outputs do not show it; guessing would give answers that are not
  Core ML's.
- ``affine`` with a ``coordinates_mode`` other than ``normalized_minus_one_to_one``, the only one
  its definition allows.

Where an index is out of range (gathers and scatters), Core ML's result is undefined and the
executor raises :class:`ExecutorError`. The random ops draw from the distributions their
definitions give, from torch's generator: the values are not Core ML's. The compression ops
(``constexpr_*``, ``quantize``, ``dequantize``) come with the chapter 9 work, in their own
family modules of :mod:`ane_lib.coreml.ops`.
"""

from __future__ import annotations

from ane_lib.coreml.executor._engine import (
    MODES,
    PRECISION_ALIASES,
    Mode,
    numeric_health,
    resolve_mode,
    run,
)
from ane_lib.coreml.executor._errors import (
    Float16OverflowError,
    NonFiniteOutputError,
    NonFiniteOutputWarning,
    ProgramValidationError,
)
from ane_lib.coreml.executor.health import NumericHealth, OpHealth
from ane_lib.coreml.ops import DECLINED, REGISTRY, ExecutorError, UnsupportedOpError

__all__ = [
    "DECLINED_OPS",
    "MODES",
    "PRECISION_ALIASES",
    "SUPPORTED_OPS",
    "ExecutorError",
    "Float16OverflowError",
    "Mode",
    "NonFiniteOutputError",
    "NonFiniteOutputWarning",
    "NumericHealth",
    "OpHealth",
    "ProgramValidationError",
    "UnsupportedOpError",
    "numeric_health",
    "resolve_mode",
    "run",
]

SUPPORTED_OPS: frozenset[str] = frozenset(REGISTRY)
"""Every MIL op type :func:`run` implements, read from the op registry when imported."""

DECLINED_OPS: dict[str, str] = {name: d.reason for name, d in DECLINED.items()}
"""Op types declined on purpose, with the reason :class:`UnsupportedOpError` gives."""

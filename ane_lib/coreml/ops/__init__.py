"""The reference executor's op implementations, one module per op family.

The families follow coremltools' files of op definitions
(``coremltools/converters/mil/mil/ops/defs/iOS*/<family>.py``): ``activation``,
``classify``, ``compression``, ``control_flow``, ``conv``, ``elementwise_binary``,
``elementwise_unary``, ``image_resizing``, ``linear``, ``normalization``, ``pool``,
``quantization``, ``random``, ``recurrent``,
``reduction``, ``scatter_gather``, ``states``, ``tensor_operation``,
``tensor_transformation``, ``transformers``. Each op's semantics are those of its
definition there (the input specification and the docstring, across the opsets iOS15 to
iOS18), and ``tests/conformance/test_<family>.py`` checks them against references written
from the same definitions.

Adding ops (the one idiom)
--------------------------

A family is a module of this package that registers functions::

    from ane_lib.coreml.ops._registry import OpArgs, register

    @register("constexpr_lut_to_dense")
    def _lut_to_dense(a: OpArgs) -> torch.Tensor:
        indices = a.get("indices")      # input values: float32 / int / bool torch tensors
        lut = a.numpy("lut")            # ... or the same as numpy arrays
        ...                             # a.int("axis"), a.str("mode", "x"), a.has("bias")
        return dense                    # tensor, array or scalar; a tuple for several outputs

The family's name is the module's name (``register(..., family=...)`` overrides it) and should be
coremltools' name for the family, as ``--coverage`` counts by it (the constexpr ops are in
``ops/compression.py``, ``quantize`` and ``dequantize`` in ``ops/quantization.py``). To add a
family, create ``ops/<family>.py`` and add its name to ``FAMILIES`` below; the executor, its
``--coverage`` report and ``SUPPORTED_OPS`` all read the registry. An op declined on purpose
is recorded with ``decline("op", "why")``: running it raises ``UnsupportedOpError`` with that
reason. The executor casts and rounds every result to its variable's storage type, so an op
computes in float32 (float64 where exactness is cheap) and does not round itself.
"""

from __future__ import annotations

import importlib

from ane_lib.coreml.ops._registry import (
    DECLINED,
    REGISTRY,
    Declined,
    ExecutorError,
    OpArgs,
    OpDef,
    Runtime,
    UnsupportedOpError,
    decline,
    register,
)

__all__ = [
    "DECLINED",
    "FAMILIES",
    "REGISTRY",
    "Declined",
    "ExecutorError",
    "OpArgs",
    "OpDef",
    "Runtime",
    "UnsupportedOpError",
    "decline",
    "register",
]

FAMILIES: tuple[str, ...] = (
    "activation",
    "classify",
    "compression",
    "control_flow",
    "conv",
    "elementwise_binary",
    "elementwise_unary",
    "image_resizing",
    "linear",
    "normalization",
    "pool",
    "quantization",
    "random",
    "recurrent",
    "reduction",
    "scatter_gather",
    "states",
    "tensor_operation",
    "tensor_transformation",
    "transformers",
)
"""The family modules of this package, imported (and so registered) with it."""

for _family in FAMILIES:
    importlib.import_module(f"{__name__}.{_family}")

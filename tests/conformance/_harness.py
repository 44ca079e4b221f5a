"""The conformance harness: build one MIL op with coremltools' builder, run it with the executor,
and compare with a reference written from the op's definition.

Each case is checked three ways:

- fp32: the op built with fp32 inputs, run in the executor's default mode ("declared"), against
  the reference computed in float64 from the same inputs: within ``FP32_RTOL`` of the
  reference's scale (its largest magnitude, at least 1).
- fp16: the op built with fp16 inputs (where its specification allows fp16), against the
  reference computed in float64 from the fp16 inputs: within the rounding of that reference to
  fp16 (one fp16 unit in the last place of each value), plus float32's own error on the scale.
- value inference: where coremltools ships the op's own ``value_inference``, the op built on
  constants is evaluated by coremltools at build time, and the executor's output for the same
  constants must agree with it (fp32 tolerance; exactly for integers and booleans).

The references never call the executor's code: they are numpy (float64) written from the
definitions' formulas, or torch's own functions where torch's op is the definition's source.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from hypothesis import strategies as st

from ane_lib.coreml import run
from ane_lib.coreml.program import import_coremltools

ct = import_coremltools()
from coremltools.converters.mil import Builder as mb  # noqa: E402, N813
from coremltools.converters.mil.mil import types  # noqa: E402
from coremltools.converters.mil.mil.operation import Operation  # noqa: E402
from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry  # noqa: E402

__all__ = [
    "FP32_RTOL",
    "IOS15",
    "IOS16",
    "IOS17",
    "IOS18",
    "assert_fp16",
    "broadcast_shapes",
    "assert_fp32",
    "build",
    "check",
    "ct",
    "has_value_inference",
    "input_dtypes",
    "like",
    "mb",
    "rng",
    "run_built",
    "types",
]

logging.getLogger("coremltools").setLevel(logging.ERROR)

FP32_RTOL = 1e-5
IOS15, IOS16, IOS17, IOS18 = ct.target.iOS15, ct.target.iOS16, ct.target.iOS17, ct.target.iOS18

_BUILTIN = {
    np.dtype(np.float32): types.fp32,
    np.dtype(np.float16): types.fp16,
    np.dtype(np.int32): types.int32,
    np.dtype(np.bool_): types.bool,
    np.dtype(np.int8): types.int8,
    np.dtype(np.uint8): types.uint8,
    np.dtype(np.int16): types.int16,
    np.dtype(np.uint16): types.uint16,
}

# cases where coremltools' value inference was compared, per op type: a test module checks that
# its value-inference comparisons really ran (a check that never runs cannot fail)
VALUE_INFERENCE_COMPARED: dict[str, int] = {}


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _op_class(op_type: str, opset: Any) -> Any:
    versions = SSAOpRegistry.core_ops.get(op_type) or {}
    chosen = None
    for version, cls in versions.items():
        if version <= opset and (chosen is None or version > chosen[0]):
            chosen = (version, cls)
    return None if chosen is None else chosen[1]


def input_dtypes(op_type: str, key: str, opset: Any = IOS18) -> set[str]:
    """The dtypes (``"fp16"``, ``"fp32"``, ``"int32"``, ``"bool"`` ...) the op's specification
    allows for input ``key`` at ``opset``."""
    cls = _op_class(op_type, opset)
    spec = cls.input_spec.input_types[key]
    domain = getattr(spec, "type_domain_id", None)
    allowed = cls.type_domains.get(domain, ()) if isinstance(domain, str) else spec.type_domain
    return {types.builtin_to_string(t) for t in allowed}


def like(var: Any, value: Any) -> np.ndarray:
    """``value`` as a constant of ``var``'s float type (an op's fp16 and fp32 variants need
    parameters of the input's type)."""
    return np.asarray(value, dtype=types.nptype_from_builtin(var.dtype))


def has_value_inference(op_type: str, opset: Any = IOS18) -> bool:
    """Whether coremltools defines ``value_inference`` for the op (at ``opset``)."""
    cls = _op_class(op_type, opset)
    return cls is not None and cls.value_inference is not Operation.value_inference


def build(fn: Callable[..., Any], inputs: Mapping[str, np.ndarray], opset: Any = IOS17) -> Any:
    """A program whose inputs are placeholders with the arrays' shapes and dtypes, calling
    ``fn(**placeholders)``."""
    specs = [
        mb.TensorSpec(shape=a.shape, dtype=_BUILTIN[np.asarray(a).dtype]) for a in inputs.values()
    ]
    names = list(inputs)

    def body(*args: Any) -> Any:
        out = fn(**dict(zip(names, args, strict=True)))
        return tuple(out) if isinstance(out, (list, tuple)) else out

    # coremltools names the placeholders after the parameters of the function it is given
    # (``__code__.co_varnames``): a lambda with exactly those parameter names
    params = ", ".join(names)
    wrapped = eval(f"lambda {params}: body({params})", {"body": body})  # noqa: S307
    return mb.program(input_specs=specs, opset_version=opset)(wrapped)


def run_built(program: Any, inputs: Mapping[str, np.ndarray], mode: str = "declared") -> list[Any]:
    return list(run(program, dict(inputs), mode).values())


def _scale(ref: np.ndarray) -> float:
    return max(float(np.max(np.abs(ref))) if ref.size else 0.0, 1.0)


def assert_fp32(got: Any, ref: Any, what: str = "") -> None:
    """``got`` within ``FP32_RTOL`` of ``ref``'s scale (exact for integers and booleans)."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, reference {ref.shape}"
    if ref.dtype.kind in "biu" or got.dtype.kind in "biu":
        np.testing.assert_array_equal(got, ref, err_msg=what)
        return
    err = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    both_nan = np.isnan(got) & np.isnan(ref)
    same_inf = np.isinf(ref) & (got == ref)
    bad = ~(both_nan | same_inf) & ~(err <= FP32_RTOL * _scale(ref[np.isfinite(ref)]))
    assert not bad.any(), (
        f"{what}: {int(bad.sum())} of {ref.size} values off by more than {FP32_RTOL:g} of the "
        f"scale; worst {float(np.nanmax(np.where(bad, err, 0))):.3g}"
    )


def _fp16_ulp(v: np.ndarray) -> np.ndarray:
    """The spacing of fp16 numbers at each |v| (2**-24 below the normal range)."""
    mag = np.abs(np.asarray(v, np.float64))
    exponent = np.floor(np.log2(np.maximum(mag, 2.0**-14)))
    return 2.0 ** (exponent - 10)


def assert_fp16(got: Any, ref: Any, what: str = "", extra: float = 0.0) -> None:
    """``got`` (an fp16 result) within one fp16 unit in the last place of the float64
    reference computed from the same fp16 inputs, plus float32's error (``1e-6`` of the scale,
    or ``extra`` for ops that sum many terms)."""
    got, ref = np.asarray(got), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, reference {ref.shape}"
    if got.dtype.kind in "biu":
        np.testing.assert_array_equal(got, ref, err_msg=what)
        return
    assert got.dtype == np.float16, f"{what}: expected an fp16 result, got {got.dtype}"
    finite = np.isfinite(ref)
    scale = _scale(ref[finite])
    tol = _fp16_ulp(ref) + max(1e-6, extra) * scale
    err = np.abs(got.astype(np.float64) - ref)
    ok = (err <= tol) | (np.isnan(got) & np.isnan(ref)) | (np.isinf(ref) & (got == ref))
    # a reference beyond fp16's range rounds to inf
    ok |= (np.abs(ref) > 65504) & np.isinf(got) & (np.sign(got) == np.sign(ref))
    assert ok.all(), (
        f"{what}: {int((~ok).sum())} of {ref.size} fp16 values beyond one fp16 ulp of the "
        f"reference; worst error {float(np.max(np.where(ok, 0, err))):.3g}"
    )


def _cast_inputs(inputs: Mapping[str, np.ndarray], dtype: Any) -> dict[str, np.ndarray]:
    return {
        k: (v.astype(dtype) if np.asarray(v).dtype.kind == "f" else v) for k, v in inputs.items()
    }


def check(
    op_type: str,
    fn: Callable[..., Any],
    inputs: Mapping[str, np.ndarray],
    reference: Callable[..., Any],
    *,
    params: Mapping[str, Any] | None = None,
    opset: Any = IOS17,
    fp16: bool = True,
    value_inference: bool = True,
    fp16_extra: float = 0.0,
    what: str = "",
) -> None:
    """Check op ``op_type``, built by ``fn(**placeholders, **params)`` (one output or a
    tuple), against ``reference(*inputs, **params)`` (numpy float64 from the definition), in
    fp32, in fp16 (when ``fp16`` and the float inputs can be fp16) and against coremltools'
    value inference.

    ``params`` are float constants of the op (an alpha, an epsilon): each run passes them in
    its float type, and the reference sees the same rounded values.
    """
    label = f"{op_type} {what}".strip()
    params = dict(params or {})

    def typed(dtype: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        consts = {k: np.asarray(v, dtype) for k, v in params.items()}
        return consts, {k: np.asarray(v, np.float64) for k, v in consts.items()}

    inputs32 = _cast_inputs(inputs, np.float32)
    consts32, ref_params32 = typed(np.float32)
    refs = _as_list(reference(*[_f64(v) for v in inputs32.values()], **ref_params32))
    program = build(lambda **kw: fn(**kw, **consts32), inputs32, opset)
    gots = run_built(program, inputs32)
    assert len(gots) == len(refs), f"{label}: {len(gots)} outputs, reference {len(refs)}"
    for i, (got, ref) in enumerate(zip(gots, refs, strict=True)):
        assert_fp32(got, ref, f"{label} fp32 output {i}")

    if fp16 and any(np.asarray(v).dtype.kind == "f" for v in inputs.values()):
        inputs16 = _cast_inputs(inputs, np.float16)
        consts16, ref_params16 = typed(np.float16)
        refs16 = _as_list(reference(*[_f64(v) for v in inputs16.values()], **ref_params16))
        gots16 = run_built(build(lambda **kw: fn(**kw, **consts16), inputs16, opset), inputs16)
        for i, (got, ref) in enumerate(zip(gots16, refs16, strict=True)):
            if np.asarray(got).dtype == np.float16:
                assert_fp16(got, ref, f"{label} fp16 output {i}", fp16_extra)
            else:
                assert_fp32(got, ref, f"{label} fp16-input output {i}")

    if value_inference and has_value_inference(op_type, opset):
        values = {k: np.asarray(v) for k, v in inputs32.items()}

        def body() -> Any:
            out = fn(**{k: mb.const(val=v) for k, v in values.items()}, **consts32)
            return tuple(out) if isinstance(out, (list, tuple)) else out

        program = mb.program(input_specs=[], opset_version=opset)(body)
        inferred = [v.val for v in program.functions["main"].outputs]
        if all(val is not None and not _symbolic(val) for val in inferred):
            ours = run_built(program, {})
            for i, (got, val) in enumerate(zip(ours, inferred, strict=True)):
                assert_fp32(got, np.asarray(val), f"{label} vs coremltools value_inference {i}")
            VALUE_INFERENCE_COMPARED[op_type] = VALUE_INFERENCE_COMPARED.get(op_type, 0) + 1


def _symbolic(val: Any) -> bool:
    from coremltools.converters.mil.mil.types.symbolic import any_symbolic

    try:
        return bool(any_symbolic(val))
    except Exception:
        return False


def _f64(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v)
    return v.astype(np.float64) if v.dtype.kind == "f" else v


def _as_list(x: Any) -> list[Any]:
    return [np.asarray(v) for v in x] if isinstance(x, (list, tuple)) else [np.asarray(x)]


@st.composite
def broadcast_shapes(
    draw: Any, rank_max: int = 4, size_max: int = 4
) -> tuple[Sequence[int], Sequence[int]]:
    """Two shapes that broadcast together, the second possibly of lower rank."""
    rank = draw(st.integers(1, rank_max))
    base = [draw(st.integers(1, size_max)) for _ in range(rank)]
    a = [d if draw(st.booleans()) else 1 for d in base]
    b = [d if draw(st.booleans()) else 1 for d in base]
    drop = draw(st.integers(0, rank - 1))
    return a, b[drop:]

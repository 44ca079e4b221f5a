"""A numpy reference executor for Core ML ML programs: run a saved ``.mlpackage`` on any OS.

Core ML's runtime exists only on Apple platforms. :func:`run` executes the MIL program inside a
package (read back by :func:`ane_lib.coreml.program.load_program`) op by op with numpy, so that on
Linux as well as on a Mac one can check what an exported model computes and how much fp16
costs it:

- ``precision="fp32"`` stores every float value in float32. Run on a package holding float32
  weights (``ane_lib.coreml.export(..., precision="fp32")``) it reproduces PyTorch's float32
  forward to about 1e-5 relative (1e-6 measured on whole MOAT and DeiT models), which is what
  proves the executor right; ``tests/test_executor.py`` checks this op by op and on models.
- ``precision="fp16"`` stores every float value -- inputs, constant weights and every op's output --
  in float16, as the Neural Engine does, while each op computes in float32 from those fp16
  values. (Op parameters that Core ML takes in fp32 only, such as ``upsample_bilinear``'s scale
  factors, stay in fp32, as they do in an fp16 program.) The difference from the fp32 run is
  the deployment error of fp16. The first op whose
  output is no longer finite (a value beyond fp16's 65504 turns into inf) is reported by name:
  :class:`Float16OverflowError` by default, or a :class:`NonFiniteOutputWarning`.

Casts between float types follow the run's precision (an fp16 program's ``cast`` to fp16 keeps
float32 in an fp32 run); casts to integer or bool types are honoured. The executor does not
model the Neural Engine's internal accumulation, which Apple does not document: agreement with
a device is close, not bit-exact.

Implemented op types (``SUPPORTED_OPS``; the ``const`` op is read directly):

- elementwise binary: add, sub, mul, real_div, pow, maximum, minimum, floor_div, mod, equal,
  not_equal, greater, greater_equal, less, less_equal, logical_and, logical_or, logical_xor
- elementwise unary: abs, acos, asin, atan, atanh, ceil, clip, cos, cosh, erf, exp, exp2,
  floor, identity, inverse, log, logical_not, round, rsqrt, sign, sin, sinh, sqrt, square, tan,
  tanh, threshold, cast
- activations: clamped_relu, elu, gelu (EXACT, TANH_APPROXIMATION, SIGMOID_APPROXIMATION),
  leaky_relu, linear_activation, prelu, relu, relu6, scaled_tanh, sigmoid, sigmoid_hard, silu,
  softmax, softplus, softplus_parametric, softsign, thresholded_relu
- reductions: reduce_argmax, reduce_argmin, reduce_l1_norm, reduce_l2_norm, reduce_log_sum,
  reduce_log_sum_exp, reduce_max, reduce_mean, reduce_min, reduce_prod, reduce_sum,
  reduce_sum_square
- normalisation: batch_norm, instance_norm, l2_norm, layer_norm
- linear algebra: linear, matmul, einsum, scaled_dot_product_attention
- convolution, pooling and resampling: conv, conv_transpose, crop, avg_pool, max_pool,
  l2_pool, upsample_nearest_neighbor, upsample_bilinear
- shape and data movement: reshape, transpose, expand_dims, squeeze, flatten2d, slice_by_index,
  slice_by_size, split, concat, stack, tile, pad, reverse, shape, pixel_shuffle, pixel_unshuffle,
  band_part, cumsum, fill, fill_like, range_1d, one_hot, topk, argsort, sliding_windows
- indexing: gather, gather_along_axis, gather_nd, select
- control flow: cond, while_loop
- compressed weights and quantized activations (``_ops_constexpr``): constexpr_affine_dequantize,
  constexpr_blockwise_shift_scale, constexpr_cast, constexpr_lut_to_dense, constexpr_lut_to_sparse,
  constexpr_sparse_blockwise_shift_scale, constexpr_sparse_to_dense, quantize, dequantize

Any other op raises :class:`UnsupportedOpError` naming the op type and the op.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ane_lib._checks import check_choice
from ane_lib.coreml import _ops_constexpr  # noqa: F401  (registers the constexpr ops in OPS)
from ane_lib.coreml._ops import OPS, ExecutorError, OpArgs

if TYPE_CHECKING:
    from coremltools.converters.mil.mil import Program

__all__ = [
    "SUPPORTED_OPS",
    "PRECISIONS",
    "run",
    "UnsupportedOpError",
    "NonFiniteOutputError",
    "Float16OverflowError",
    "NonFiniteOutputWarning",
    "ExecutorError",
]

PRECISIONS = ("fp16", "fp32")
_ON_OVERFLOW = ("raise", "warn", "ignore")
_BLOCK_OPS = frozenset({"cond", "while_loop"})

SUPPORTED_OPS: frozenset[str] = frozenset(OPS) | _BLOCK_OPS
"""Every MIL op type :func:`run` implements (``const`` is read, not executed)."""

_FP16_MAX = float(np.finfo(np.float16).max)


class UnsupportedOpError(NotImplementedError):
    """The program holds an op type that the reference executor does not implement."""

    def __init__(self, op_type: str, op_name: str) -> None:
        self.op_type = op_type
        self.op_name = op_name
        super().__init__(
            f"op type {op_type!r} (op {op_name!r}) is not implemented by the reference executor; "
            f"implemented: {', '.join(sorted(SUPPORTED_OPS))}"
        )


class NonFiniteOutputError(ArithmeticError):
    """An op produced inf or nan from finite inputs (the first such op of the run).

    Attributes: ``op_name``, ``op_type``, ``precision``, ``count`` (non-finite values),
    ``size`` (all values), ``max_abs`` (the largest magnitude of the op's float32 result,
    before rounding to the storage precision; inf if float32 itself overflowed) and
    ``constant`` (the name of a constant input that does not fit in fp16, if that is the
    cause, else None).
    """

    def __init__(
        self,
        op_name: str,
        op_type: str,
        precision: str,
        count: int,
        size: int,
        max_abs: float,
        constant: str | None = None,
    ) -> None:
        self.op_name = op_name
        self.op_type = op_type
        self.precision = precision
        self.count = count
        self.size = size
        self.max_abs = max_abs
        self.constant = constant
        limit = f"fp16's largest finite value {_FP16_MAX:g}"
        if constant is not None:
            why = f"its constant input {constant!r} exceeds {limit}"
        elif np.isfinite(max_abs):
            # computed in float32 from finite inputs, the result turned inf when stored
            why = f"its float32 result reaches {max_abs:.6g} in magnitude, beyond {limit}"
        else:
            why = "its float32 result is already inf/nan"
        super().__init__(
            f"op {op_name!r} (type {op_type!r}) is the first op whose output is not finite in "
            f"{precision}: {count} of {size} values are inf/nan ({why})"
        )


class Float16OverflowError(NonFiniteOutputError):
    """In an fp16 run, an op's output left fp16's range (|x| > 65504 becomes inf) or became nan."""


class NonFiniteOutputWarning(RuntimeWarning):
    """Issued instead of :class:`NonFiniteOutputError` when ``on_overflow="warn"``."""


def _types() -> Any:
    from ane_lib.coreml.program import import_coremltools

    import_coremltools()  # without its import-time notes about the missing Core ML runtime
    from coremltools.converters.mil.mil import types

    return types


def _describe(var: Any) -> str:
    types = _types()
    shape = tuple(var.shape) if types.is_tensor(var.sym_type) else ()
    return f"{var.name}: {shape} {types.builtin_to_string(var.dtype)}"


def _is_known(dim: Any) -> bool:
    return isinstance(dim, (int, np.integer))


class _Executor:
    """Holds one run's settings and the values computed so far (``env``: var name -> value)."""

    def __init__(self, precision: str, on_overflow: str) -> None:
        self.precision = precision
        self.on_overflow = on_overflow
        self.float_dtype = np.float16 if precision == "fp16" else np.float32
        self.types = _types()
        self.env: dict[str, Any] = {}

    # -- values --------------------------------------------------------------------------------

    def store(self, value: Any, var: Any, constant: bool = False) -> Any:
        """Convert ``value`` to how ``var``'s type is stored in this run.

        Float values are stored in the run's precision, except constants that the program
        declares fp32 in an fp16 run: those stay exact here and are rounded when an op reads
        them as data (see :meth:`read`), since some op parameters exist only in fp32.
        """
        types = self.types
        dtype = var.dtype
        if isinstance(value, str) or (dtype is not None and types.is_str(dtype)):
            return str(value)
        arr = np.asarray(value)
        if dtype is None:
            return arr
        if types.is_float(dtype):
            keep = constant and self.precision == "fp16" and dtype != types.fp16
            return arr.astype(np.float32 if keep else self.float_dtype, copy=False)
        if types.is_bool(dtype):
            return arr.astype(np.bool_, copy=False)
        if types.is_int(dtype):
            return arr.astype(types.nptype_from_builtin(dtype), copy=False)
        return arr

    def lookup(self, var: Any) -> Any:
        name = var.name
        if name in self.env:
            return self.env[name]
        if var.val is not None:  # a constant folded into the graph
            return self.store(var.val, var)
        raise ExecutorError(f"variable {name!r} is read before any op computes it")

    def read(self, op: Any, key: str, var: Any) -> Any:
        """The value of ``var`` as ``op`` reads it through its input ``key``.

        In an fp16 run a float32 constant is rounded to fp16 when the input accepts fp16 (a
        weight, a bias, an epsilon: an fp16 program holds it in fp16), and kept exact when the
        op takes that input in fp32 only (e.g. ``upsample_bilinear``'s scale factors).
        """
        value = self.lookup(var)
        if (
            self.precision == "fp16"
            and isinstance(value, np.ndarray)
            and value.dtype == np.float32
            and _accepts_fp16(op, key, self.types)
        ):
            return value.astype(np.float16)
        return value

    # -- ops -----------------------------------------------------------------------------------

    def run_block(self, block: Any, on_op_done: Any = None) -> list[Any]:
        for index, op in enumerate(block.operations):
            self.run_op(op)
            if on_op_done is not None:
                on_op_done(index)
        return [self.lookup(v) for v in block.outputs]

    def run_op(self, op: Any) -> None:
        op_type = str(op.op_type)
        if op_type == "const":
            for var in op.outputs:
                self.env[var.name] = self.store(var.val, var, constant=True)
            return
        if op_type == "cond":
            results: list[Any] = self._cond(op)
        elif op_type == "while_loop":
            results = self._while_loop(op)
        else:
            fn = OPS.get(op_type)
            if fn is None:
                raise UnsupportedOpError(op_type, str(op.name))
            try:
                value = fn(OpArgs(op, self.read))
            except (ExecutorError, UnsupportedOpError):
                raise
            except Exception as err:
                raise ExecutorError(
                    f"op {op.name!r} (type {op_type!r}) failed in the reference executor: {err}"
                ) from err
            results = [value] if len(op.outputs) == 1 else list(value)
        if len(results) != len(op.outputs):
            raise ExecutorError(
                f"op {op.name!r} (type {op_type!r}) gave {len(results)} outputs, "
                f"the program declares {len(op.outputs)}"
            )
        for var, raw in zip(op.outputs, results, strict=True):
            stored = self.store(raw, var)
            self._check_shape(op, var, stored)
            if isinstance(stored, np.ndarray) and stored.dtype.kind == "f":
                self._check_finite(op, raw, stored)
            self.env[var.name] = stored

    def _cond(self, op: Any) -> list[Any]:
        pred = bool(np.asarray(self.lookup(op.inputs["pred"])).reshape(()))
        return self.run_block(op.blocks[0] if pred else op.blocks[1])

    def _while_loop(self, op: Any) -> list[Any]:
        cond_block, body_block = op.blocks
        values = [self.lookup(v) for v in op.inputs["loop_vars"]]
        while True:
            for var, value in zip(cond_block.inputs, values, strict=True):
                self.env[var.name] = self.store(value, var)
            (keep_going,) = self.run_block(cond_block)
            if not bool(np.asarray(keep_going).reshape(())):
                return values
            for var, value in zip(body_block.inputs, values, strict=True):
                self.env[var.name] = self.store(value, var)
            values = self.run_block(body_block)

    def _check_shape(self, op: Any, var: Any, value: Any) -> None:
        if not isinstance(value, np.ndarray) or not self.types.is_tensor(var.sym_type):
            return
        declared = tuple(var.shape)
        if len(declared) != value.ndim or any(
            _is_known(d) and int(d) != n for d, n in zip(declared, value.shape, strict=True)
        ):
            raise ExecutorError(
                f"op {op.name!r} (type {op.op_type!r}) produced shape {value.shape} for "
                f"{var.name!r}, but the program declares {declared} (a bug in the executor's "
                "implementation of this op)"
            )

    def _check_finite(self, op: Any, raw: Any, stored: np.ndarray) -> None:
        if self.on_overflow == "ignore" or np.isfinite(stored).all():
            return
        # report only the op that introduces inf/nan, not every op that passes it on; in an
        # fp16 run that may be a float32 constant too large for fp16, rounded as it is read
        constant = None
        for key, var in _keyed_inputs(op):
            value = self.lookup(var)
            if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
                continue
            if not np.isfinite(value).all():
                return
            if constant is None and not np.isfinite(self.read(op, key, var)).all():
                constant = str(var.name)
        raw32 = np.asarray(raw, dtype=np.float32)
        finite = raw32[np.isfinite(raw32)]
        max_abs = (
            float(np.max(np.abs(finite))) if finite.size == raw32.size and finite.size else np.inf
        )
        count = int(stored.size - np.isfinite(stored).sum())
        cls = Float16OverflowError if self.precision == "fp16" else NonFiniteOutputError
        error = cls(
            str(op.name), str(op.op_type), self.precision, count, stored.size, max_abs, constant
        )
        if self.on_overflow == "raise":
            raise error
        warnings.warn(str(error), NonFiniteOutputWarning, stacklevel=5)


def _accepts_fp16(op: Any, key: str, types: Any) -> bool:
    """Whether ``op``'s input ``key`` may hold fp16 values, by the op's input specification."""
    spec = op.input_spec.input_types.get(key)
    # an op resolves its inputs' type domains ("T" -> (fp16, fp32)) when it is built
    domain = getattr(spec, "type_domain", ()) or op.type_domains.get(
        getattr(spec, "type_domain_id", None), ()
    )
    allowed = domain if isinstance(domain, tuple) else (domain,)
    return not allowed or types.fp16 in allowed


def _keyed_inputs(op: Any) -> list[tuple[str, Any]]:
    """(input name, variable) for every variable ``op`` reads directly."""
    out: list[tuple[str, Any]] = []
    for key, value in op.inputs.items():
        if isinstance(value, (list, tuple)):
            out.extend((key, v) for v in value)
        elif value is not None:
            out.append((key, value))
    return out


def _flat_inputs(op: Any) -> list[Any]:
    return [var for _, var in _keyed_inputs(op)]


def _uses(op: Any) -> list[Any]:
    """Every variable ``op`` reads, including those read inside its nested blocks."""
    found = list(_flat_inputs(op))
    for block in op.blocks:
        for inner in block.operations:
            found.extend(_uses(inner))
        found.extend(block.outputs)
    return found


def _resolve_program(path_or_program: Any) -> Program:
    if isinstance(path_or_program, (str, os.PathLike)):
        from ane_lib.coreml.program import load_program

        return load_program(path_or_program)
    from coremltools.converters.mil.mil import Program

    if not isinstance(path_or_program, Program):
        raise TypeError(
            "path_or_program must be a path to a .mlpackage or a coremltools MIL Program, got "
            f"{type(path_or_program).__name__}"
        )
    return path_or_program


def _to_array(name: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch.Tensor
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except Exception as err:
        raise TypeError(f"inputs[{name!r}] could not be read as an array: {err}") from err
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"inputs[{name!r}] must be a numeric array, got dtype {arr.dtype} "
            f"({type(value).__name__})"
        )
    return arr


def _bind_inputs(function: Any, inputs: Any, ex: _Executor) -> None:
    types = ex.types
    if not isinstance(inputs, Mapping):
        raise TypeError(
            f"inputs must be a mapping from input name to array, got {type(inputs).__name__}"
        )
    expected = dict(function.inputs)
    listing = "; ".join(_describe(v) for v in expected.values()) or "(none)"
    missing = [n for n in expected if n not in inputs]
    extra = [n for n in inputs if n not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if extra:
            parts.append(f"unexpected {extra}")
        raise ValueError(f"inputs: {', '.join(parts)}; the program expects: {listing}")
    for name, var in expected.items():
        arr = _to_array(name, inputs[name])
        dtype_name = types.builtin_to_string(var.dtype)
        wanted_kind = (
            "f" if types.is_float(var.dtype) else "b" if types.is_bool(var.dtype) else "iu"
        )
        if arr.dtype.kind not in wanted_kind:
            raise TypeError(
                f"inputs[{name!r}] has dtype {arr.dtype}, but the program declares {dtype_name} "
                f"for it; the program expects: {listing}"
            )
        declared = tuple(var.shape) if types.is_tensor(var.sym_type) else ()
        if arr.ndim != len(declared) or any(
            _is_known(d) and int(d) != n for d, n in zip(declared, arr.shape, strict=True)
        ):
            raise ValueError(
                f"inputs[{name!r}] has shape {arr.shape}, but the program declares "
                f"{declared}; the program expects: {listing}"
            )
        ex.env[name] = ex.store(arr, var)


def run(
    path_or_program: str | os.PathLike[str] | Program,
    inputs: Mapping[str, Any],
    precision: str = "fp16",
    *,
    on_overflow: str = "raise",
    outputs: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Execute an ML program's ``main`` function with numpy and return its outputs by name.

    Args:
        path_or_program: a saved ``.mlpackage`` (read with ``load_program``) or a coremltools
            MIL ``Program``.
        inputs: one array (numpy array or torch tensor) per program input, by name, with the
            declared shape, e.g. ``{"x": x}`` with ``x: (1, 3, 224, 224)``.
        precision: ``"fp16"`` stores every float value in float16 (the deployed precision);
            ``"fp32"`` stores them in float32 (the reference).
        on_overflow: what to do when an op first produces inf/nan from finite inputs:
            ``"raise"`` (:class:`Float16OverflowError` in fp16, :class:`NonFiniteOutputError`
            in fp32), ``"warn"`` (:class:`NonFiniteOutputWarning`, then carry on) or
            ``"ignore"``.
        outputs: names of the variables to return; default the function's outputs. Any
            intermediate variable name of the program may be asked for.

    Returns:
        ``{name: array}`` in the order asked for; float arrays are float32 in an fp32 run and
        of the declared type in an fp16 run (float16 for an ``ane_lib.coreml.export`` package,
        whose outputs are fp16; float32 holding fp16 values for a program with fp32 outputs).

    Raises:
        UnsupportedOpError: the program holds an op type not in :data:`SUPPORTED_OPS`.
        Float16OverflowError / NonFiniteOutputError: see ``on_overflow``.
        ValueError / TypeError: bad arguments, or inputs whose names, shapes or dtypes do not
            match the program's declared inputs (the message lists them).
    """
    check_choice("precision", precision, PRECISIONS)
    check_choice("on_overflow", on_overflow, _ON_OVERFLOW)
    program = _resolve_program(path_or_program)
    if "main" not in program.functions:
        raise ValueError(f"the program has no 'main' function (it has {sorted(program.functions)})")
    function = program.functions["main"]
    ex = _Executor(precision, on_overflow)
    _bind_inputs(function, inputs, ex)

    wanted = [v.name for v in function.outputs] if outputs is None else list(outputs)
    if isinstance(outputs, str):
        raise TypeError(f"outputs must be a sequence of variable names, got the string {outputs!r}")
    declared = {v.name: v for v in function.inputs.values()}
    ops = list(function.operations)
    for op in ops:
        declared.update((v.name, v) for v in op.outputs)
    unknown = [n for n in wanted if n not in declared]
    if unknown:
        raise ValueError(
            f"outputs {unknown} are not variables of the program; its outputs are "
            f"{[v.name for v in function.outputs]}"
        )

    # free each value after its last reader so that large models fit in memory
    last_use: dict[str, int] = {}
    for index, op in enumerate(ops):
        for var in _uses(op):
            last_use[var.name] = index
    keep = set(wanted) | {v.name for v in function.outputs}

    def release(index: int) -> None:
        op = ops[index]
        for var in [*_uses(op), *op.outputs]:
            if var.name not in keep and last_use.get(var.name, -1) <= index:
                ex.env.pop(var.name, None)

    with np.errstate(all="ignore"):  # inf/nan are checked for explicitly
        ex.run_block(function, on_op_done=release)

    result: dict[str, np.ndarray] = {}
    for name in wanted:
        value = np.asarray(ex.env[name])
        if value.dtype.kind == "f":
            var_dtype = declared[name].dtype
            target = np.float32 if precision == "fp32" else ex.types.nptype_from_builtin(var_dtype)
            value = value.astype(target, copy=False)
        result[name] = value
    return result

"""Numpy implementations of MIL operations, one function per op type, for the reference executor.

Each function takes an :class:`OpArgs` (the op and a way to read its input values) and returns the
op's output value, or a tuple of values for ops with several outputs (``split``, ``topk``). Float
inputs arrive as float32 arrays whatever the storage precision, so every op computes in float32;
the executor rounds the results to the storage precision afterwards.

The semantics follow the op definitions of coremltools (``coremltools.converters.mil.mil.ops.defs``,
opsets iOS15 to iOS18), e.g. ``conv``'s ``pad_type`` rules, ``reshape``'s ``0`` and ``-1`` entries,
``slice_by_index``'s masks and ``squeeze``'s PyTorch-style tolerance of non-unit axes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["OPS", "OpArgs", "ExecutorError"]

_MISSING = object()


class ExecutorError(RuntimeError):
    """The program is malformed, or an op produced something its declared type rules out."""


class OpArgs:
    """The inputs of one op, read from the executor's values.

    ``get(name)`` returns the value of input ``name``: float tensors as float32 arrays (a copy
    when stored in fp16), other tensors as stored (int32, bool), strings as ``str``; an input
    that is a tuple of variables (``concat``'s ``values``) gives a list of values.
    """

    def __init__(self, op: Any, read: Callable[[Any, str, Any], Any]) -> None:
        self.op = op
        self._read = read  # (op, input name, var) -> stored value

    @property
    def name(self) -> str:
        return str(self.op.name)

    @property
    def op_type(self) -> str:
        return str(self.op.op_type)

    def has(self, key: str) -> bool:
        """True when input ``key`` is given (optional inputs may be absent)."""
        return self.op.inputs.get(key) is not None

    def get(self, key: str, default: Any = _MISSING) -> Any:
        var = self.op.inputs.get(key)
        if var is None:
            if default is _MISSING:
                raise ExecutorError(
                    f"op {self.name!r} (type {self.op_type!r}) lacks its required input {key!r}"
                )
            return default
        if isinstance(var, (list, tuple)):
            return [self._compute_value(key, v) for v in var]
        return self._compute_value(key, var)

    def _compute_value(self, key: str, var: Any) -> Any:
        value = self._read(self.op, key, var)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            return value.astype(np.float32, copy=False)
        return value

    def output_shape(self, index: int = 0) -> tuple[int, ...] | None:
        """The shape the program declares for output ``index``, or None if not fully known."""
        shape = self.op.outputs[index].shape
        if all(isinstance(d, (int, np.integer)) for d in shape):
            return tuple(int(d) for d in shape)
        return None


OpFn = Callable[[OpArgs], Any]
OPS: dict[str, OpFn] = {}


def _register(*names: str) -> Callable[[OpFn], OpFn]:
    def wrap(fn: OpFn) -> OpFn:
        for name in names:
            OPS[name] = fn
        return fn

    return wrap


# ---------------------------------------------------------------------------------------------
# small converters for op parameters


def _ints(value: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(value).reshape(-1))


def _int(value: Any) -> int:
    return int(np.asarray(value).reshape(()))


def _float(value: Any) -> float:
    return float(np.asarray(value).reshape(()))


def _bool(value: Any) -> bool:
    return bool(np.asarray(value).reshape(()))


def _bools(value: Any, n: int) -> tuple[bool, ...]:
    if value is None:
        return (False,) * n
    return tuple(bool(v) for v in np.asarray(value).reshape(-1))


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _axes(value: Any, rank: int) -> tuple[int, ...]:
    return tuple(_axis(a, rank) for a in _ints(value))


# ---------------------------------------------------------------------------------------------
# elementwise binary ops (NumPy broadcasting, as MIL's elementwise_binary)

_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "real_div": np.true_divide,
    "pow": np.power,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "floor_div": np.floor_divide,
    "mod": np.mod,  # Python's %, the sign follows the divisor (coremltools: operator.mod)
    "equal": np.equal,
    "not_equal": np.not_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "less": np.less,
    "less_equal": np.less_equal,
    "logical_and": np.logical_and,
    "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
}


def _binary(fn: Callable[[Any, Any], Any]) -> OpFn:
    def op(a: OpArgs) -> Any:
        return fn(a.get("x"), a.get("y"))

    return op


for _name, _fn in _BINARY.items():
    OPS[_name] = _binary(_fn)


# ---------------------------------------------------------------------------------------------
# elementwise unary ops and activations


# erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z / 2): Chebyshev fit of Numerical Recipes (2nd ed.,
# "erfcc"), fractional error < 1.2e-7 for z >= 0
_ERFC_FIT = (
    -1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
    0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277,
)  # fmt: skip


def _erf(x: np.ndarray) -> np.ndarray:
    """erf in float64 to within 6e-8 relative of ``math.erf`` (numpy has no erf of its own)."""
    shape = np.shape(x)
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.zeros_like(t)
    for c in reversed(_ERFC_FIT[1:]):
        poly = (poly + c) * t
    out = np.sign(x) * (1.0 - t * np.exp(-z * z + _ERFC_FIT[0] + poly))
    # near 0, 1 - erfc loses the relative precision: sum the Taylor series instead
    near = z < 0.5
    xs = x[near]
    x2 = xs * xs
    term = xs.copy()
    total = xs.copy()
    for n in range(1, 14):
        term *= -x2 / n
        total += term / (2 * n + 1)
    out[near] = total * (2.0 / math.sqrt(math.pi))
    return out.reshape(shape)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


_UNARY: dict[str, Callable[[np.ndarray], Any]] = {
    "abs": np.abs,
    "acos": np.arccos,
    "asin": np.arcsin,
    "atan": np.arctan,
    "atanh": np.arctanh,
    "ceil": np.ceil,
    "cos": np.cos,
    "cosh": np.cosh,
    "erf": _erf,
    "exp": np.exp,
    "exp2": np.exp2,
    "floor": np.floor,
    "logical_not": np.logical_not,
    "round": np.round,  # halves to even: 0.5 -> 0, as the op definition says
    "sign": np.sign,
    "sin": np.sin,
    "sinh": np.sinh,
    "sqrt": np.sqrt,
    "square": np.square,
    "tan": np.tan,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.minimum(np.maximum(x, 0), 6),
    "sigmoid": _sigmoid,
    "silu": lambda x: x * _sigmoid(x),
    "softplus": lambda x: np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "identity": lambda x: x,
}


def _unary(fn: Callable[[np.ndarray], Any]) -> OpFn:
    def op(a: OpArgs) -> Any:
        return fn(a.get("x"))

    return op


for _name, _ufn in _UNARY.items():
    OPS[_name] = _unary(_ufn)


@_register("inverse")
def _inverse(a: OpArgs) -> np.ndarray:
    return 1.0 / (a.get("x") + _float(a.get("epsilon", 1e-4)))


@_register("log")
def _log(a: OpArgs) -> np.ndarray:
    return np.log(a.get("x") + _float(a.get("epsilon", 1e-45)))


@_register("rsqrt")
def _rsqrt(a: OpArgs) -> np.ndarray:
    return 1.0 / np.sqrt(a.get("x") + _float(a.get("epsilon", 1e-12)))


@_register("clip")
def _clip(a: OpArgs) -> np.ndarray:
    return np.minimum(np.maximum(a.get("x"), a.get("alpha")), a.get("beta"))


@_register("threshold")
def _threshold(a: OpArgs) -> np.ndarray:
    return np.maximum(a.get("x"), a.get("alpha"))


@_register("gelu")
def _gelu(a: OpArgs) -> np.ndarray:
    x = a.get("x")
    mode = str(a.get("mode", "EXACT"))
    if mode == "EXACT":
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
    if mode == "TANH_APPROXIMATION":
        inner = np.float32(math.sqrt(2.0 / math.pi)) * (x + np.float32(0.044715) * x**3)
        return 0.5 * x * (1.0 + np.tanh(inner))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(np.float32(1.702) * x)
    raise ExecutorError(f"op {a.name!r} (type 'gelu') has an unknown mode {mode!r}")


@_register("leaky_relu")
def _leaky_relu(a: OpArgs) -> np.ndarray:
    x = a.get("x")
    return np.where(x < 0, x * a.get("alpha"), x)


@_register("elu")
def _elu(a: OpArgs) -> np.ndarray:
    x = a.get("x")
    return np.where(x > 0, x, a.get("alpha") * np.expm1(np.minimum(x, 0)))


@_register("clamped_relu")
def _clamped_relu(a: OpArgs) -> np.ndarray:
    x, alpha, beta = a.get("x"), a.get("alpha"), a.get("beta")
    return np.minimum(np.where(x >= 0, x, alpha * x), beta)


@_register("linear_activation")
def _linear_activation(a: OpArgs) -> np.ndarray:
    return a.get("alpha") * a.get("x") + a.get("beta")


@_register("scaled_tanh")
def _scaled_tanh(a: OpArgs) -> np.ndarray:
    return a.get("alpha") * np.tanh(a.get("beta") * a.get("x"))


@_register("sigmoid_hard")
def _sigmoid_hard(a: OpArgs) -> np.ndarray:
    return np.minimum(np.maximum(a.get("alpha") * a.get("x") + a.get("beta"), 0), 1)


@_register("thresholded_relu")
def _thresholded_relu(a: OpArgs) -> np.ndarray:
    x = a.get("x")
    return np.where(x >= a.get("alpha"), x, np.float32(0))


def _per_channel(v: np.ndarray, rank: int) -> np.ndarray:
    """A (C,) vector shaped to broadcast along axis 1 of a rank-``rank`` tensor."""
    return np.asarray(v).reshape((1, -1) + (1,) * (rank - 2))


@_register("prelu")
def _prelu(a: OpArgs) -> np.ndarray:
    x = a.get("x")
    alpha = _per_channel(a.get("alpha"), x.ndim)
    return np.maximum(x, 0) + alpha * np.minimum(x, 0)


@_register("softplus_parametric")
def _softplus_parametric(a: OpArgs) -> np.ndarray:
    x = a.get("x")
    alpha = _per_channel(a.get("alpha"), x.ndim)
    beta = _per_channel(a.get("beta"), x.ndim)
    z = beta * x
    return alpha * (np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0))


@_register("softmax")
def _softmax(a: OpArgs) -> np.ndarray:
    x = a.get("x")
    axis = _int(a.get("axis", -1))
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


@_register("cast")
def _cast(a: OpArgs) -> np.ndarray:
    # The executor stores the result with the op's declared output type (ints, bools) or in its
    # own float precision; here only the conversion of values matters: float -> int truncates
    # toward zero (numpy's astype, as coremltools' own constant folding does).
    x = np.asarray(a.get("x"))
    dtype = str(a.get("dtype"))
    if dtype.startswith(("int", "uint")):
        return np.trunc(x).astype(np.int64) if x.dtype.kind == "f" else x.astype(np.int64)
    if dtype == "bool":
        return x != 0
    return x.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# reductions


def _reduce(fn: Callable[..., np.ndarray]) -> OpFn:
    def op(a: OpArgs) -> np.ndarray:
        x = a.get("x")
        axes_value = a.get("axes", None)
        axes = None if axes_value is None else _axes(axes_value, x.ndim)
        keep = _bool(a.get("keep_dims", False))
        return fn(x, axis=axes, keepdims=keep)

    return op


def _log_sum_exp(x: np.ndarray, axis: Any, keepdims: bool) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


_REDUCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "reduce_sum": np.sum,
    "reduce_mean": np.mean,
    "reduce_max": np.max,
    "reduce_min": np.min,
    "reduce_prod": np.prod,
    "reduce_sum_square": lambda x, axis, keepdims: np.sum(x * x, axis=axis, keepdims=keepdims),
    "reduce_l1_norm": lambda x, axis, keepdims: np.sum(np.abs(x), axis=axis, keepdims=keepdims),
    "reduce_l2_norm": lambda x, axis, keepdims: np.sqrt(
        np.sum(x * x, axis=axis, keepdims=keepdims)
    ),
    "reduce_log_sum": lambda x, axis, keepdims: np.log(np.sum(x, axis=axis, keepdims=keepdims)),
    "reduce_log_sum_exp": _log_sum_exp,
}
for _name, _rfn in _REDUCTIONS.items():
    OPS[_name] = _reduce(_rfn)


def _reduce_arg(fn: Callable[..., np.ndarray]) -> OpFn:
    def op(a: OpArgs) -> np.ndarray:
        x = a.get("x")
        axis = _axis(_int(a.get("axis", -1)), x.ndim)
        out = fn(x, axis=axis)
        if _bool(a.get("keep_dims", False)):
            out = np.expand_dims(out, axis)
        return out.astype(np.int32)

    return op


OPS["reduce_argmax"] = _reduce_arg(np.argmax)
OPS["reduce_argmin"] = _reduce_arg(np.argmin)


# ---------------------------------------------------------------------------------------------
# normalisation


def _normalize(x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
    mean = np.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    var = np.mean(centred * centred, axis=axes, keepdims=True)
    return centred / np.sqrt(var + np.float32(eps))


@_register("layer_norm")
def _layer_norm(a: OpArgs) -> np.ndarray:
    x = a.get("x")
    axes_value = a.get("axes", None)
    axes = tuple(range(x.ndim)) if axes_value is None else _axes(axes_value, x.ndim)
    y = _normalize(x, axes, _float(a.get("epsilon", 1e-5)))
    # gamma/beta hold x's normalised axes in x's own axis order, whatever the order of `axes`
    shape = [x.shape[d] if d in axes else 1 for d in range(x.ndim)]
    if a.has("gamma"):
        y = y * np.reshape(a.get("gamma"), shape)
    if a.has("beta"):
        y = y + np.reshape(a.get("beta"), shape)
    return y


@_register("batch_norm")
def _batch_norm(a: OpArgs) -> np.ndarray:
    x = a.get("x")
    mean = _per_channel(a.get("mean"), x.ndim)
    var = _per_channel(a.get("variance"), x.ndim)
    y = (x - mean) / np.sqrt(var + np.float32(_float(a.get("epsilon", 1e-5))))
    if a.has("gamma"):
        y = y * _per_channel(a.get("gamma"), x.ndim)
    if a.has("beta"):
        y = y + _per_channel(a.get("beta"), x.ndim)
    return y


@_register("instance_norm")
def _instance_norm(a: OpArgs) -> np.ndarray:
    x = a.get("x")
    y = _normalize(x, tuple(range(2, x.ndim)), _float(a.get("epsilon", 1e-5)))
    if a.has("gamma"):
        y = y * _per_channel(a.get("gamma"), x.ndim)
    if a.has("beta"):
        y = y + _per_channel(a.get("beta"), x.ndim)
    return y


@_register("l2_norm")
def _l2_norm(a: OpArgs) -> np.ndarray:
    # x: (*B, D1, D2, D3) -- each batch entry divided by its L2 norm over the last 3 axes
    x = a.get("x")
    axes = tuple(range(x.ndim - 3, x.ndim))
    eps = np.float32(_float(a.get("epsilon", 1e-6)))
    return x / np.sqrt(np.sum(x * x, axis=axes, keepdims=True) + eps)


# ---------------------------------------------------------------------------------------------
# linear algebra


@_register("linear")
def _linear(a: OpArgs) -> np.ndarray:
    # x: (*D, D_in), weight: (D_out, D_in), bias: (D_out,)
    y = np.matmul(a.get("x"), np.asarray(a.get("weight")).T)
    return y + a.get("bias") if a.has("bias") else y


@_register("matmul")
def _matmul(a: OpArgs) -> np.ndarray:
    x, y = a.get("x"), a.get("y")
    if _bool(a.get("transpose_x", False)) and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    if _bool(a.get("transpose_y", False)) and y.ndim >= 2:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


@_register("einsum")
def _einsum(a: OpArgs) -> np.ndarray:
    # MIL restricts the equation to "nchw,nwhu->nchu"-like forms (batch axes broadcast when 1);
    # numpy's einsum evaluates any equation and broadcasts size-1 axes the same way.
    values = a.get("values")
    return np.einsum(str(a.get("equation")), *values, optimize=True)


@_register("scaled_dot_product_attention")
def _sdpa(a: OpArgs) -> np.ndarray:
    # query: (B, *, L, E), key: (B, *, S, E), value: (B, *, S, EV) -> (B, *, L, EV)
    q, k, v = a.get("query"), a.get("key"), a.get("value")
    logits = np.matmul(q, np.swapaxes(k, -1, -2)) / np.float32(math.sqrt(q.shape[-1]))
    if a.has("attn_mask"):
        mask = np.asarray(a.get("attn_mask"))
        logits = np.where(mask, logits, -np.inf) if mask.dtype == np.bool_ else logits + mask
    e = np.exp(logits - np.max(logits, axis=-1, keepdims=True))
    return np.matmul(e / np.sum(e, axis=-1, keepdims=True), v)


# ---------------------------------------------------------------------------------------------
# convolution and pooling


def _spatial_pads(
    pad_type: str,
    pad: Sequence[int] | None,
    in_sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> list[tuple[int, int]]:
    """(before, after) padding per spatial axis, following MIL's ``pad_type`` rules."""
    n = len(in_sizes)
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        assert pad is not None
        return [(int(pad[2 * i]), int(pad[2 * i + 1])) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        out: list[tuple[int, int]] = []
        for size, k, s, d in zip(in_sizes, kernel, strides, dilations, strict=True):
            eff = (k - 1) * d + 1
            total = max(0, s * math.ceil(size / s) - size + eff - s)
            small, large = total // 2, total - total // 2
            # "same" puts the odd extra element after, "same_lower" before
            out.append((small, large) if pad_type == "same" else (large, small))
        return out
    raise ExecutorError(f"unknown pad_type {pad_type!r}")


def _window_slices(
    offset: Sequence[int], strides: Sequence[int], out_sizes: Sequence[int]
) -> tuple[slice, ...]:
    return tuple(
        slice(o, o + s * (n - 1) + 1, s) for o, s, n in zip(offset, strides, out_sizes, strict=True)
    )


def _conv_geometry(a: OpArgs, x: np.ndarray, kernel: Sequence[int]) -> tuple[Any, ...]:
    n_sp = x.ndim - 2
    strides = _ints(a.get("strides", [1] * n_sp))
    dilations = _ints(a.get("dilations", [1] * n_sp))
    pad_type = str(a.get("pad_type", "valid"))
    pad = _ints(a.get("pad")) if a.has("pad") else None
    pads = _spatial_pads(pad_type, pad, x.shape[2:], kernel, strides, dilations)
    return strides, dilations, pads


@_register("conv")
def _conv(a: OpArgs) -> np.ndarray:
    # x: (N, C_in, *D_in), weight: (C_out, C_in / groups, *K) -> (N, C_out, *D_out)
    x = a.get("x")
    w = np.asarray(a.get("weight"), dtype=np.float32)
    groups = _int(a.get("groups", 1))
    kernel = w.shape[2:]
    strides, dilations, pads = _conv_geometry(a, x, kernel)
    xp = np.pad(x, [(0, 0), (0, 0), *pads])
    out_sizes = [
        (xp.shape[2 + i] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1
        for i in range(len(kernel))
    ]
    n, c_in = x.shape[:2]
    c_out = w.shape[0]
    cg_in, cg_out = c_in // groups, c_out // groups
    wg = w.reshape(groups, cg_out, cg_in, *kernel)
    out = np.zeros((n, groups, cg_out, int(np.prod(out_sizes))), dtype=np.float32)
    # one batched matmul per kernel tap: (G, Cg_out, Cg_in) @ (N, G, Cg_in, prod(D_out))
    for tap in itertools.product(*(range(k) for k in kernel)):
        offset = [t * d for t, d in zip(tap, dilations, strict=True)]
        window = xp[(slice(None), slice(None), *_window_slices(offset, strides, out_sizes))]
        window = window.reshape(n, groups, cg_in, -1)
        out += np.matmul(wg[(..., *tap)], window)
    out = out.reshape(n, c_out, *out_sizes)
    if a.has("bias"):
        out += _per_channel(a.get("bias"), out.ndim)
    return out


@_register("conv_transpose")
def _conv_transpose(a: OpArgs) -> np.ndarray:
    # x: (N, C_in, *D_in), weight: (C_in, C_out / groups, *K) -> (N, C_out, *D_out)
    x = a.get("x")
    w = np.asarray(a.get("weight"), dtype=np.float32)
    groups = _int(a.get("groups", 1))
    n_sp = x.ndim - 2
    kernel = w.shape[2:]
    strides = _ints(a.get("strides", [1] * n_sp))
    dilations = _ints(a.get("dilations", [1] * n_sp))
    n, c_in = x.shape[:2]
    cg_in, cg_out = c_in // groups, w.shape[1]
    c_out = cg_out * groups
    full = [
        (x.shape[2 + i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 for i in range(n_sp)
    ]
    out = np.zeros((n, groups, cg_out, *full), dtype=np.float32)
    wg = w.reshape(groups, cg_in, cg_out, *kernel)
    xg = x.reshape(n, groups, cg_in, -1)
    for tap in itertools.product(*(range(k) for k in kernel)):
        # (G, Cg_out, Cg_in) @ (N, G, Cg_in, prod(D_in)), scattered to every stride-th position
        contrib = np.matmul(np.swapaxes(wg[(..., *tap)], -1, -2), xg)
        offset = [t * d for t, d in zip(tap, dilations, strict=True)]
        target = _window_slices(offset, strides, x.shape[2:])
        out[(slice(None), slice(None), slice(None), *target)] += contrib.reshape(
            n, groups, cg_out, *x.shape[2:]
        )
    out = out.reshape(n, c_out, *full)
    pad_type = str(a.get("pad_type", "valid"))
    if pad_type == "custom":
        pad = _ints(a.get("pad"))
        crops = [(pad[2 * i], pad[2 * i + 1]) for i in range(n_sp)]
    elif pad_type == "valid":
        crops = [(0, 0)] * n_sp
    else:  # "same": the output is in * stride; crop the excess, the odd element at the end
        target_sizes = [x.shape[2 + i] * strides[i] for i in range(n_sp)]
        crops = [
            ((f - t) // 2, f - t - (f - t) // 2) for f, t in zip(full, target_sizes, strict=True)
        ]
    sizes = [f - b - e for (b, e), f in zip(crops, full, strict=True)]
    declared = a.output_shape()
    if declared is not None:
        # output_shape may ask for more than the crop leaves (PyTorch's output_padding): the
        # extra positions take what the scatter put in the trailing pad, zeros beyond it
        sizes = list(declared[2:])
    ends = [b + size for (b, _), size in zip(crops, sizes, strict=True)]
    room = [max(f, end) for f, end in zip(full, ends, strict=True)]
    if room != full:
        out = np.pad(out, [(0, 0), (0, 0), *((0, r - f) for r, f in zip(room, full, strict=True))])
    window = tuple(slice(b, end) for (b, _), end in zip(crops, ends, strict=True))
    out = out[(slice(None), slice(None), *window)]
    if a.has("bias"):
        out = out + _per_channel(a.get("bias"), out.ndim)
    return out


def _pool(a: OpArgs, kind: str) -> np.ndarray:
    # x: (N, C, *D_in) -> (N, C, *D_out)
    x = a.get("x")
    n_sp = x.ndim - 2
    kernel = _ints(a.get("kernel_sizes"))
    strides = _ints(a.get("strides", [1] * n_sp))
    pad_type = str(a.get("pad_type", "valid")).lower()
    pad = _ints(a.get("pad")) if a.has("pad") else None
    pads = _spatial_pads(pad_type, pad, x.shape[2:], kernel, strides, (1,) * n_sp)
    ceil_mode = _bool(a.get("ceil_mode", False))
    out_sizes = []
    for i in range(n_sp):
        total_pad = pads[i][0] + pads[i][1]
        span = x.shape[2 + i] + total_pad - kernel[i]
        if ceil_mode:
            size = -(-span // strides[i]) + 1
            # with padding, the last window must start inside the input or its left padding
            if total_pad > 0 and (size - 1) * strides[i] >= x.shape[2 + i] + total_pad / 2:
                size -= 1
        else:
            size = span // strides[i] + 1
        out_sizes.append(size)
    # extra room on the right for ceil_mode windows that run past the declared padding
    extra = [
        max(0, (o - 1) * s + k - (d + p0 + p1))
        for o, s, k, d, (p0, p1) in zip(out_sizes, strides, kernel, x.shape[2:], pads, strict=True)
    ]
    widths = [(0, 0), (0, 0)] + [(p0, p1 + e) for (p0, p1), e in zip(pads, extra, strict=True)]
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, widths, constant_values=fill)
    acc = np.full((*x.shape[:2], *out_sizes), fill, dtype=np.float32)
    if kind == "avg":
        real = np.pad(np.ones(x.shape[2:], np.float32), widths[2:])
        padded = np.pad(
            np.ones(
                [d + p0 + p1 for d, (p0, p1) in zip(x.shape[2:], pads, strict=True)], np.float32
            ),
            [(0, e) for e in extra],
        )
        count = np.zeros(out_sizes, np.float32)
        exclude = _bool(a.get("exclude_padding_from_average", False))
        counted = real if exclude else padded
    for tap in itertools.product(*(range(k) for k in kernel)):
        sl = _window_slices(tap, strides, out_sizes)
        window = xp[(slice(None), slice(None), *sl)]
        if kind == "max":
            acc = np.maximum(acc, window)
        elif kind == "l2":
            acc += window * window
        else:
            acc += window
            count += counted[sl]
    if kind == "avg":
        return acc / count
    return np.sqrt(acc) if kind == "l2" else acc


OPS["avg_pool"] = lambda a: _pool(a, "avg")
OPS["max_pool"] = lambda a: _pool(a, "max")
OPS["l2_pool"] = lambda a: _pool(a, "l2")


@_register("crop")
def _crop(a: OpArgs) -> np.ndarray:
    # x: (*D, H, W) -> (*D, H - top - bottom, W - left - right)
    x = a.get("x")
    top, bottom = _ints(a.get("crop_height"))
    left, right = _ints(a.get("crop_width"))
    return x[..., top : x.shape[-2] - bottom, left : x.shape[-1] - right]


@_register("upsample_nearest_neighbor")
def _upsample_nearest(a: OpArgs) -> np.ndarray:
    # x: (*D, H, W) -> (*D, floor(H * sh), floor(W * sw)); output pixel i reads floor(i / s)
    x = a.get("x")
    out = x
    for axis, key in ((-2, "scale_factor_height"), (-1, "scale_factor_width")):
        scale = _float(a.get(key, 1))
        size_in = x.shape[axis]
        size_out = int(math.floor(size_in * scale))
        src = np.minimum(np.floor(np.arange(size_out) / scale).astype(np.int64), size_in - 1)
        out = np.take(out, src, axis=axis)
    return out


def _linear_resample(x: np.ndarray, axis: int, grid: np.ndarray) -> np.ndarray:
    """Sample ``x`` along ``axis`` at fractional positions ``grid`` (linear interpolation)."""
    low = np.floor(grid).astype(np.int64)
    high = np.minimum(low + 1, x.shape[axis] - 1)
    shape = [1] * x.ndim
    shape[axis] = -1
    frac = (grid - low).astype(np.float32).reshape(shape)
    return np.take(x, low, axis=axis) * (1 - frac) + np.take(x, high, axis=axis) * frac


@_register("upsample_bilinear")
def _upsample_bilinear(a: OpArgs) -> np.ndarray:
    # x: (*D, H, W) -> (*D, floor(H * sh), floor(W * sw)); the sampling grid is derived from
    # the input and output sizes (the op definition's notes), not from the scale factors
    x = a.get("x")
    align = _bool(a.get("align_corners", True))
    half_pixel = _bool(a.get("half_pixel_centers", not align))
    out = x
    for axis, key in ((-2, "scale_factor_height"), (-1, "scale_factor_width")):
        size_in = x.shape[axis]
        size_out = int(math.floor(size_in * _float(a.get(key, 1))))
        i = np.arange(size_out, dtype=np.float64)
        if align:
            grid = i * ((size_in - 1) / (size_out - 1) if size_out > 1 else 0.0)
        else:
            spacing = size_in / size_out
            grid = i * spacing + (0.5 * spacing - 0.5 if half_pixel else 0.0)
        out = _linear_resample(out, axis % x.ndim, np.clip(grid, 0, size_in - 1))
    return out


# ---------------------------------------------------------------------------------------------
# shape and data movement


@_register("reshape")
def _reshape(a: OpArgs) -> np.ndarray:
    x = np.asarray(a.get("x"))
    shape = list(_ints(a.get("shape")))
    # 0 copies the matching axis of x counted from the right (iOS17 rule; it is the iOS15 rule
    # whenever len(shape) == rank(x)); a 0 with no matching axis means 1
    for i, s in enumerate(shape):
        if s == 0:
            j = x.ndim - (len(shape) - i)
            shape[i] = x.shape[j] if j >= 0 else 1
    return x.reshape(shape)


@_register("transpose")
def _transpose(a: OpArgs) -> np.ndarray:
    return np.transpose(a.get("x"), _ints(a.get("perm")))


@_register("expand_dims")
def _expand_dims(a: OpArgs) -> np.ndarray:
    x = np.asarray(a.get("x"))
    axes = _ints(a.get("axes"))
    rank_out = x.ndim + len(axes)
    return np.expand_dims(x, tuple(sorted(_axis(ax, rank_out) for ax in axes)))


@_register("squeeze")
def _squeeze(a: OpArgs) -> np.ndarray:
    x = np.asarray(a.get("x"))
    if not a.has("axes"):
        return np.squeeze(x)
    # like PyTorch, axes whose size is not 1 are left alone
    axes = tuple(ax for ax in _axes(a.get("axes"), x.ndim) if x.shape[ax] == 1)
    return np.squeeze(x, axis=axes)


@_register("flatten2d")
def _flatten2d(a: OpArgs) -> np.ndarray:
    x = np.asarray(a.get("x"))
    axis = _axis(_int(a.get("axis", 1)), x.ndim)
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


@_register("slice_by_index")
def _slice_by_index(a: OpArgs) -> np.ndarray:
    x = np.asarray(a.get("x"))
    r = x.ndim
    begin = list(_ints(a.get("begin")))
    end = list(_ints(a.get("end")))
    stride = list(_ints(a.get("stride"))) if a.has("stride") else [1] * r
    begin_mask = _bools(a.get("begin_mask", None), r)
    end_mask = _bools(a.get("end_mask", None), r)
    squeeze_mask = _bools(a.get("squeeze_mask", None), r)
    index: list[Any] = []
    for i in range(r):
        if squeeze_mask[i]:
            index.append(begin[i])
            continue
        index.append(
            slice(None if begin_mask[i] else begin[i], None if end_mask[i] else end[i], stride[i])
        )
    return np.asarray(x[tuple(index)])


@_register("slice_by_size")
def _slice_by_size(a: OpArgs) -> np.ndarray:
    x = np.asarray(a.get("x"))
    begin = _ints(a.get("begin"))
    size = _ints(a.get("size"))
    index = []
    for b, s, d in zip(begin, size, x.shape, strict=True):
        b = b + d if b < 0 else b
        index.append(slice(b, d if s == -1 else b + s))
    return x[tuple(index)]


@_register("split")
def _split(a: OpArgs) -> tuple[np.ndarray, ...]:
    x = np.asarray(a.get("x"))
    axis = _axis(_int(a.get("axis")), x.ndim)
    if a.has("split_sizes"):
        sizes = _ints(a.get("split_sizes"))
        cuts = np.cumsum(sizes)[:-1]
        return tuple(np.split(x, cuts, axis=axis))
    return tuple(np.split(x, _int(a.get("num_splits")), axis=axis))


@_register("concat")
def _concat(a: OpArgs) -> np.ndarray:
    values = [np.asarray(v) for v in a.get("values")]
    axis = _axis(_int(a.get("axis")), values[0].ndim)
    if _bool(a.get("interleave", False)):
        # out[i::n] = values[i] along axis
        stacked = np.stack(values, axis=axis + 1)
        shape = list(values[0].shape)
        shape[axis] *= len(values)
        return stacked.reshape(shape)
    return np.concatenate(values, axis=axis)


@_register("stack")
def _stack(a: OpArgs) -> np.ndarray:
    values = [np.asarray(v) for v in a.get("values")]
    return np.stack(values, axis=_axis(_int(a.get("axis")), values[0].ndim + 1))


@_register("tile")
def _tile(a: OpArgs) -> np.ndarray:
    return np.tile(a.get("x"), _ints(a.get("reps")))


@_register("pad")
def _pad(a: OpArgs) -> np.ndarray:
    # pad: (2N,) before/after pairs for the last N axes of x
    x = a.get("x")
    pad = _ints(a.get("pad"))
    n = len(pad) // 2
    widths = [(0, 0)] * (x.ndim - n) + [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    mode = str(a.get("mode", "constant"))
    if mode == "constant":
        return np.pad(x, widths, constant_values=_float(a.get("constant_val", 0.0)))
    if mode == "reflect":
        return np.pad(x, widths, mode="reflect")
    if mode == "replicate":
        return np.pad(x, widths, mode="edge")
    raise ExecutorError(f"op {a.name!r} (type 'pad') has an unknown mode {mode!r}")


@_register("reverse")
def _reverse(a: OpArgs) -> np.ndarray:
    x = np.asarray(a.get("x"))
    axes = _axes(a.get("axes"), x.ndim) if a.has("axes") else tuple(range(x.ndim))
    return np.flip(x, axis=axes)


@_register("shape")
def _shape(a: OpArgs) -> np.ndarray:
    return np.asarray(np.shape(a.get("x")), dtype=np.int32)


@_register("pixel_shuffle")
def _pixel_shuffle(a: OpArgs) -> np.ndarray:
    # x: (N, C * f^2, H, W) -> (N, C, H * f, W * f), as torch.nn.PixelShuffle
    x = a.get("x")
    f = _int(a.get("upscale_factor"))
    n, c, h, w = x.shape
    y = x.reshape(n, c // (f * f), f, f, h, w).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (f * f), h * f, w * f)


@_register("pixel_unshuffle")
def _pixel_unshuffle(a: OpArgs) -> np.ndarray:
    # x: (N, C, H * f, W * f) -> (N, C * f^2, H, W), as torch.nn.PixelUnshuffle
    x = a.get("x")
    f = _int(a.get("downscale_factor"))
    n, c, hf, wf = x.shape
    y = x.reshape(n, c, hf // f, f, wf // f, f).transpose(0, 1, 3, 5, 2, 4)
    return y.reshape(n, c * f * f, hf // f, wf // f)


@_register("band_part")
def _band_part(a: OpArgs) -> np.ndarray:
    # keep x[..., i, j] where (lower < 0 or i - j <= lower) and (upper < 0 or j - i <= upper)
    x = a.get("x")
    lower, upper = _int(a.get("lower", -1)), _int(a.get("upper", -1))
    rows, cols = x.shape[-2:]
    i = np.arange(rows)[:, None]
    j = np.arange(cols)[None, :]
    keep = np.ones((rows, cols), dtype=bool)
    if lower >= 0:
        keep &= i - j <= lower
    if upper >= 0:
        keep &= j - i <= upper
    return np.where(keep, x, np.zeros((), x.dtype))


@_register("cumsum")
def _cumsum(a: OpArgs) -> np.ndarray:
    x = a.get("x")
    axis = _axis(_int(a.get("axis", 0)), x.ndim)
    reverse = _bool(a.get("reverse", False))
    y = np.flip(x, axis) if reverse else x
    out = np.cumsum(y, axis=axis)
    if _bool(a.get("exclusive", False)):
        out = out - y
    return np.flip(out, axis) if reverse else out


@_register("fill")
def _fill(a: OpArgs) -> np.ndarray:
    return np.full(_ints(a.get("shape")), a.get("value", 0.0))


@_register("fill_like")
def _fill_like(a: OpArgs) -> np.ndarray:
    return np.full(np.shape(a.get("ref_tensor")), a.get("value", 0.0))


@_register("range_1d")
def _range_1d(a: OpArgs) -> np.ndarray:
    return np.arange(a.get("start"), a.get("end"), a.get("step"))


@_register("one_hot")
def _one_hot(a: OpArgs) -> np.ndarray:
    # indices: (*D) -> (*D with a new axis of size one_hot_vector_size at `axis`)
    idx = np.asarray(a.get("indices"))
    depth = _int(a.get("one_hot_vector_size"))
    axis = _axis(_int(a.get("axis", -1)), idx.ndim + 1)
    on, off = a.get("on_value", 1), a.get("off_value", 0)
    hot = np.expand_dims(idx, axis) == np.arange(depth).reshape(
        [-1 if d == axis else 1 for d in range(idx.ndim + 1)]
    )
    return np.where(hot, on, off)


@_register("topk")
def _topk(a: OpArgs) -> tuple[np.ndarray, np.ndarray]:
    x = a.get("x")
    k = _int(a.get("k", 1))
    axis = _axis(_int(a.get("axis", -1)), x.ndim)
    ascending = _bool(a.get("ascending", False))
    key = x if ascending else -x
    order = np.argsort(key, axis=axis, kind="stable")
    idx = np.take(order, np.arange(k), axis=axis)
    return np.take_along_axis(x, idx, axis=axis), idx.astype(np.int32)


@_register("argsort")
def _argsort(a: OpArgs) -> np.ndarray:
    x = a.get("x")
    axis = _axis(_int(a.get("axis", -1)), x.ndim)
    key = x if _bool(a.get("ascending", False)) else -x
    return np.argsort(key, axis=axis, kind="stable").astype(np.int32)


@_register("sliding_windows")
def _sliding_windows(a: OpArgs) -> np.ndarray:
    # x: (*d0, d_axis, *dn) -> (*d0, n_windows, size, *dn)
    x = a.get("x")
    axis = _axis(_int(a.get("axis")), x.ndim)
    size = _int(a.get("size"))
    stride = _int(a.get("stride", 1))
    starts = range(0, x.shape[axis] - size + 1, stride)
    return np.stack([np.take(x, np.arange(s, s + size), axis=axis) for s in starts], axis=axis)


# ---------------------------------------------------------------------------------------------
# gather and select


def _indices(value: Any, size: int) -> np.ndarray:
    idx = np.asarray(value).astype(np.int64)
    return np.where(idx < 0, idx + size, idx)


@_register("gather")
def _gather(a: OpArgs) -> np.ndarray:
    # x: (*D), indices: (*N) -> D[:axis] + N[batch_dims:] + D[axis+1:]
    x = np.asarray(a.get("x"))
    axis = _axis(_int(a.get("axis", 0)), x.ndim)
    batch_dims = _int(a.get("batch_dims", 0))
    idx = _indices(a.get("indices"), x.shape[axis])
    if batch_dims == 0:
        return np.take(x, idx, axis=axis)
    batch = x.shape[:batch_dims]
    xs = x.reshape(-1, *x.shape[batch_dims:])
    ids = idx.reshape(-1, *idx.shape[batch_dims:])
    parts = [np.take(xb, ib, axis=axis - batch_dims) for xb, ib in zip(xs, ids, strict=True)]
    out = np.stack(parts)
    return out.reshape(*batch, *out.shape[1:])


@_register("gather_along_axis")
def _gather_along_axis(a: OpArgs) -> np.ndarray:
    x = np.asarray(a.get("x"))
    axis = _axis(_int(a.get("axis", 0)), x.ndim)
    return np.take_along_axis(x, _indices(a.get("indices"), x.shape[axis]), axis=axis)


@_register("gather_nd")
def _gather_nd(a: OpArgs) -> np.ndarray:
    # x: (*B, *D), indices: (*B, *I, K) -> (*B, *I, *D[K:]) with B = batch_dims axes
    x = np.asarray(a.get("x"))
    idx = np.asarray(a.get("indices")).astype(np.int64)
    batch_dims = _int(a.get("batch_dims", 0))
    if batch_dims:
        batch = x.shape[:batch_dims]
        xs = x.reshape(-1, *x.shape[batch_dims:])
        ids = idx.reshape(-1, *idx.shape[batch_dims:])
        out = np.stack([xb[tuple(np.moveaxis(ib, -1, 0))] for xb, ib in zip(xs, ids, strict=True)])
        return out.reshape(*batch, *out.shape[1:])
    return x[tuple(np.moveaxis(idx, -1, 0))]


@_register("select")
def _select(a: OpArgs) -> np.ndarray:
    return np.where(np.asarray(a.get("cond")).astype(bool), a.get("a"), a.get("b"))

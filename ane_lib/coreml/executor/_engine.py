"""The executor proper: bind inputs, run each op through the registry, store each result in its
variable's storage type, check it, and return the outputs asked for."""

from __future__ import annotations

import math
import os
import warnings
import weakref
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

import numpy as np
import torch

from ane_lib._checks import check_choice
from ane_lib.coreml.executor._errors import (
    Float16OverflowError,
    NonFiniteOutputError,
    NonFiniteOutputWarning,
)
from ane_lib.coreml.executor._validate import validate_program
from ane_lib.coreml.executor.health import NumericHealth, OpHealth, op_health
from ane_lib.coreml.ops import REGISTRY, ExecutorError, OpArgs, UnsupportedOpError

if TYPE_CHECKING:
    from coremltools.converters.mil.mil import Program

__all__ = ["MODES", "PRECISION_ALIASES", "Mode", "numeric_health", "resolve_mode", "run"]

Mode = Literal["declared", "neural_engine_fp16", "fp32_reference"]
MODES: tuple[str, ...] = get_args(Mode)
PRECISION_ALIASES: dict[str, str] = {"fp16": "neural_engine_fp16", "fp32": "fp32_reference"}
"""The ``precision`` keyword of earlier versions, and the mode each value now means."""

OnOverflow = Literal["raise", "warn", "ignore"]
_ON_OVERFLOW: tuple[str, ...] = get_args(OnOverflow)

_TORCH_INT = {
    "int8": torch.int8,
    "uint8": torch.uint8,
    "int16": torch.int16,
    "uint16": torch.int32,  # torch has few uint16 kernels: held in int32, returned as uint16
    "int32": torch.int32,
    "uint32": torch.int64,
    "int64": torch.int64,
    "uint64": torch.int64,
}


def _types() -> Any:
    from ane_lib.coreml.program import import_coremltools

    import_coremltools()  # without its import-time notes about the missing Core ML runtime
    from coremltools.converters.mil.mil import types

    return types


def _round_fp16(t: torch.Tensor) -> torch.Tensor:
    """float32 values rounded to the nearest fp16 (IEEE 754, subnormals kept), held in float32.

    torch's conversion uses the CPU's F16C instructions where it has them: unlike numpy's
    ``astype(np.float16)``, it is as fast for subnormal values as for normal ones.
    """
    return t.to(torch.float16).to(torch.float32)


def _as_tensor(value: Any) -> Any:
    """An op's or a caller's value as a torch tensor (strings, lists, dicts pass through)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (str, list, dict)):
        return value
    arr = np.asarray(value)
    if arr.dtype.kind in "US":
        return str(arr.reshape(()).item()) if arr.size == 1 else value
    if arr.dtype.kind == "O":
        return value
    if arr.dtype == np.uint16:
        arr = arr.astype(np.int32)
    elif arr.dtype in (np.uint32, np.uint64):
        arr = arr.astype(np.int64)
    if not arr.flags.writeable or not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr).copy()
    return torch.from_numpy(arr)


class _VarPlan:
    """What storing a variable's values needs, read once from its type."""

    __slots__ = (
        "constant",
        "declared",
        "dtype",
        "fp16",
        "kind",
        "tensor",
        "torch_dtype",
        "variadic",
    )

    def __init__(self, var: Any, types: Any) -> None:
        from coremltools.converters.mil.mil.types.symbolic import any_variadic

        sym = var.sym_type
        container = types.is_list(sym) or types.is_dict(sym)
        dtype = None if container else var.dtype  # a list variable has no dtype
        self.dtype = dtype
        self.constant = var.op is not None and str(var.op.op_type) == "const"
        self.fp16 = dtype == types.fp16
        self.tensor = types.is_tensor(sym)
        self.declared: tuple[Any, ...] = tuple(var.shape) if self.tensor else ()
        self.variadic = bool(self.tensor and any_variadic(self.declared))
        self.torch_dtype: torch.dtype | None = None
        if container:
            self.kind = "passthrough"
        elif dtype is not None and types.is_str(dtype):
            self.kind = "str"
        elif dtype is not None and types.is_float(dtype):
            self.kind = "float"
        elif dtype is not None and types.is_bool(dtype):
            self.kind, self.torch_dtype = "int", torch.bool
        elif dtype is not None and types.is_int(dtype):
            self.kind = "int"
            self.torch_dtype = _TORCH_INT.get(types.builtin_to_string(dtype), torch.int64)
        else:
            self.kind = "other"


class _ProgramCache:
    """What is computed once per program object: validation, constants (converted once: a
    program changed in place after a run is best copied), last uses of variables."""

    def __init__(self) -> None:
        self.plans: dict[int, tuple[Any, _VarPlan]] = {}
        self.validated = False
        self.constants: dict[int, tuple[Any, Any]] = {}  # id(var) -> (var, value)
        self.rounded: dict[int, tuple[Any, torch.Tensor]] = {}  # fp32 constants as fp16
        self.last_use: dict[str, int] | None = None


_CACHES: weakref.WeakKeyDictionary[Any, _ProgramCache] = weakref.WeakKeyDictionary()


def _cache_for(program: Any) -> _ProgramCache:
    cache = _CACHES.get(program)
    if cache is None:
        cache = _CACHES[program] = _ProgramCache()
    return cache


def _keyed_inputs(op: Any) -> list[tuple[str, Any]]:
    """(input name, variable) for every variable ``op`` reads directly."""
    out: list[tuple[str, Any]] = []
    for key, value in op.inputs.items():
        if isinstance(value, (list, tuple)):
            out.extend((key, v) for v in value)
        elif value is not None:
            out.append((key, value))
    return out


def _uses(op: Any) -> list[Any]:
    """Every variable ``op`` reads, including those read inside its nested blocks."""
    found = [var for _, var in _keyed_inputs(op)]
    for block in op.blocks:
        for inner in block.operations:
            found.extend(_uses(inner))
        found.extend(block.outputs)
    return found


def _accepts_fp16(op: Any, key: str, types: Any) -> bool:
    """Whether ``op``'s input ``key`` may hold fp16 values, by the op's input specification."""
    spec = op.input_spec.input_types.get(key)
    # an op resolves its inputs' type domains ("T" -> (fp16, fp32)) when it is built
    domain = getattr(spec, "type_domain", ()) or op.type_domains.get(
        getattr(spec, "type_domain_id", None), ()
    )
    allowed = domain if isinstance(domain, tuple) else (domain,)
    return not allowed or types.fp16 in allowed


def _is_known(dim: Any) -> bool:
    # a negative size is no size: coremltools declares topk(k=-1)'s axis as -1
    return isinstance(dim, (int, np.integer)) and bool(dim >= 0)


class _Executor:
    """One run: its settings, the values computed so far (``env``: var name -> value), the
    state values and the per-op observer. Implements the ops' ``Runtime``."""

    def __init__(
        self,
        program: Any,
        mode: str,
        on_overflow: str,
        seed: int,
        observer: Callable[[Any, Any, Any, str], None] | None = None,
    ) -> None:
        self.mode = mode
        self.on_overflow = on_overflow
        self.seed = seed
        self.observer = observer
        self.types = _types()
        self.cache = _cache_for(program)
        self.env: dict[str, Any] = {}
        self.states: dict[str, Any] = {}
        self._op_index = 0

    # -- storage types ---------------------------------------------------------------------------

    def storage(self, var: Any) -> str:
        """How ``var``'s float values are stored in this run: "fp16" or "fp32"."""
        if self.mode == "fp32_reference":
            return "fp32"
        if self.mode == "neural_engine_fp16":
            return "fp16"
        return "fp16" if self._plan(var).fp16 else "fp32"

    def _plan(self, var: Any) -> _VarPlan:
        entry = self.cache.plans.get(id(var))
        if entry is None or entry[0] is not var:
            entry = self.cache.plans[id(var)] = (var, _VarPlan(var, self.types))
        return entry[1]

    def store(self, value: Any, var: Any) -> Any:
        """``value`` converted to how ``var``'s type is stored in this run.

        Floats are held in float32 tensors, rounded to fp16 where the variable is stored in
        fp16; in the Neural Engine mode, constants the program declares fp32 stay exact here
        and are rounded where an op reads them as data (see :meth:`read`), since some op
        parameters exist only in fp32.
        """
        plan = var if isinstance(var, _VarPlan) else self._plan(var)
        kind = plan.kind
        if kind == "passthrough":
            return value
        if kind == "str":
            return str(value)
        t = _as_tensor(value)
        if not isinstance(t, torch.Tensor) or kind == "other":
            return t
        if kind == "float":
            if t.dtype != torch.float32:
                t = t.to(torch.float32)
            mode = self.mode
            if (mode == "declared" and plan.fp16) or (
                mode == "neural_engine_fp16" and not plan.constant
            ):
                t = _round_fp16(t)
            return t
        target = plan.torch_dtype
        return t if t.dtype == target else t.to(target)

    @staticmethod
    def _is_constant(var: Any) -> bool:
        return var.op is not None and str(var.op.op_type) == "const"

    # -- the Runtime of the ops ------------------------------------------------------------------

    def constant(self, var: Any) -> Any:
        entry = self.cache.constants.get(id(var))
        if entry is None or entry[0] is not var:
            value = var.val
            if hasattr(value, "ls"):  # a coremltools list value (classify's classes)
                value = list(value.ls)
            stored = self.store(value, var)
            entry = self.cache.constants[id(var)] = (var, stored)
        return entry[1]

    def lookup(self, var: Any) -> Any:
        name = var.name
        if name in self.env:
            return self.env[name]
        if var.val is not None:  # a constant folded into the graph, never computed by an op
            return self.constant(var)
        raise ExecutorError(f"variable {name!r} is read before any op computes it")

    def read(self, op: Any, key: str, var: Any) -> Any:
        """The value of ``var`` as ``op`` reads it through its input ``key``.

        In the Neural Engine mode a float32 constant is rounded to fp16 when the input accepts
        fp16 (a weight, a bias, an epsilon: the Neural Engine holds them in fp16), and kept
        exact when the op takes that input in fp32 only (``upsample_bilinear``'s scale
        factors).
        """
        value = self.lookup(var)
        if (
            self.mode == "neural_engine_fp16"
            and isinstance(value, torch.Tensor)
            and value.dtype == torch.float32
            and self._is_constant(var)
            and var.dtype != self.types.fp16
            and _accepts_fp16(op, key, self.types)
        ):
            entry = self.cache.rounded.get(id(var))
            if entry is None or entry[0] is not var:
                entry = self.cache.rounded[id(var)] = (var, _round_fp16(value))
            return entry[1]
        return value

    def run_block(self, block: Any, values: Sequence[Any]) -> list[Any]:
        for var, value in zip(block.inputs, values, strict=True):
            self.env[var.name] = self.store(value, var)
        for op in block.operations:
            self.run_op(op)
        return [self.lookup(v) for v in block.outputs]

    def generator(self, op: Any, seed: int) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed(seed if seed >= 0 else self.seed * 1_000_003 + self._op_index)
        return g

    def state(self, var: Any) -> Any:
        name = var.name
        if name not in self.states:
            raise ExecutorError(f"state {name!r} is read but is not a state input of the program")
        return self.states[name]

    def set_state(self, var: Any, value: Any) -> None:
        holder = _Holder(var.sym_type.wrapped_type())
        self.states[var.name] = self.store(value, _VarPlan(holder, self.types))

    # -- ops -------------------------------------------------------------------------------------

    def run_op(self, op: Any) -> None:
        self._op_index += 1
        op_type = str(op.op_type)
        entry = REGISTRY.get(op_type)
        if entry is None:
            raise UnsupportedOpError(op_type, str(op.name))
        try:
            value = entry.fn(OpArgs(op, self))
        except (ExecutorError, UnsupportedOpError, NonFiniteOutputError):
            raise
        except Exception as err:
            raise ExecutorError(
                f"op {op.name!r} (type {op_type!r}) failed in the reference executor: {err}"
            ) from err
        outputs = op.outputs
        results = list(value) if isinstance(value, tuple) else [value]
        if len(results) != len(outputs):
            raise ExecutorError(
                f"op {op.name!r} (type {op_type!r}) gave {len(results)} outputs, "
                f"the program declares {len(outputs)}"
            )
        for var, raw in zip(outputs, results, strict=True):
            stored = self.store(raw, var)
            if isinstance(stored, torch.Tensor):
                self._check_shape(op, var, stored)
                if stored.is_floating_point():
                    if self.on_overflow != "ignore":
                        self._check_finite(op, var, raw, stored)
                    if self.observer is not None and op_type != "const":  # computed values
                        self.observer(op, var, stored, self.storage(var))
            self.env[var.name] = stored

    def _check_shape(self, op: Any, var: Any, value: torch.Tensor) -> None:
        plan = self._plan(var)
        if not plan.tensor:
            if self.types.is_scalar(var.sym_type) and value.numel() != 1:
                raise ExecutorError(
                    f"op {op.name!r} (type {op.op_type!r}) produced shape "
                    f"{tuple(value.shape)} for {var.name!r}, but the program declares a scalar"
                )
            return
        if plan.variadic:  # rank unknown until run time (fill with a runtime shape)
            return
        declared = plan.declared
        if len(declared) != value.ndim or any(
            _is_known(d) and int(d) != n for d, n in zip(declared, value.shape, strict=True)
        ):
            raise ExecutorError(
                f"op {op.name!r} (type {op.op_type!r}) produced shape {tuple(value.shape)} for "
                f"{var.name!r}, but the program declares {declared} (a bug in the executor's "
                "implementation of this op)"
            )

    def _check_finite(self, op: Any, var: Any, raw: Any, stored: torch.Tensor) -> None:
        # one summing pass decides the common case: a finite sum means finite values (values
        # so large that their float32 sum overflows go on to the exact check)
        if math.isfinite(float(stored.sum())) or bool(torch.isfinite(stored).all()):
            return
        # report only the op that introduces inf/nan, not every op that passes it on; in the
        # Neural Engine mode that may be a float32 constant too large for fp16, rounded as read
        constant = None
        for key, inp in _keyed_inputs(op):
            value = self.lookup(inp)
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                continue
            if not bool(torch.isfinite(value).all()):
                return
            if constant is None and not bool(torch.isfinite(self.read(op, key, inp)).all()):
                constant = str(inp.name)
        raw32 = _as_tensor(raw)
        raw32 = raw32.to(torch.float32) if isinstance(raw32, torch.Tensor) else stored
        finite = torch.isfinite(raw32)
        max_abs = float(raw32.abs().max()) if bool(finite.all()) and raw32.numel() else math.inf
        count = stored.numel() - int(torch.isfinite(stored).sum())
        storage = self.storage(var)
        cls = Float16OverflowError if storage == "fp16" else NonFiniteOutputError
        error = cls(
            str(op.name),
            str(op.op_type),
            self.mode,
            storage,
            count,
            stored.numel(),
            max_abs,
            constant,
        )
        if self.on_overflow == "raise":
            raise error
        warnings.warn(str(error), NonFiniteOutputWarning, stacklevel=5)


class _Holder:
    """A stand-in variable with a given type (the tensor type a state wraps)."""

    op = None

    def __init__(self, sym_type: Any) -> None:
        self.sym_type = sym_type
        self.dtype = sym_type.get_primitive() if hasattr(sym_type, "get_primitive") else None
        self.shape = tuple(sym_type.get_shape()) if hasattr(sym_type, "get_shape") else ()
        self.name = "state"


# ---------------------------------------------------------------------------------------------
# inputs and outputs


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


def _describe(var: Any, types: Any) -> str:
    sym = var.sym_type
    if types.is_state(sym):
        inner = sym.wrapped_type()
        dtype = types.builtin_to_string(inner.get_primitive())
        return f"{var.name}: state {tuple(inner.get_shape())} {dtype}"
    shape = tuple(var.shape) if types.is_tensor(sym) else ()
    return f"{var.name}: {shape} {types.builtin_to_string(var.dtype)}"


def _to_array(where: str, value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except Exception as err:
        raise TypeError(f"{where} could not be read as an array: {err}") from err
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{where} must be a numeric array, got dtype {arr.dtype} ({type(value).__name__})"
        )
    return arr


def _check_array(
    where: str, arr: np.ndarray, dtype: Any, shape: tuple[Any, ...], listing: str, types: Any
) -> None:
    dtype_name = types.builtin_to_string(dtype)
    wanted_kind = "f" if types.is_float(dtype) else "b" if types.is_bool(dtype) else "iu"
    if arr.dtype.kind not in wanted_kind:
        raise TypeError(
            f"{where} has dtype {arr.dtype}, but the program declares {dtype_name} for it; "
            f"the program expects: {listing}"
        )
    if arr.ndim != len(shape) or any(
        _is_known(d) and int(d) != n for d, n in zip(shape, arr.shape, strict=True)
    ):
        raise ValueError(
            f"{where} has shape {arr.shape}, but the program declares {shape}; the program "
            f"expects: {listing}"
        )


def _bind_inputs(
    function: Any, inputs: Any, states: Mapping[str, Any] | None, ex: _Executor
) -> None:
    types = ex.types
    if not isinstance(inputs, Mapping):
        raise TypeError(
            f"inputs must be a mapping from input name to array, got {type(inputs).__name__}"
        )
    if states is not None and not isinstance(states, Mapping):
        raise TypeError(
            f"states must be a mapping from state name to array, got {type(states).__name__}"
        )
    declared = dict(function.inputs)
    listing = "; ".join(_describe(v, types) for v in declared.values()) or "(none)"
    data = {n: v for n, v in declared.items() if not types.is_state(v.sym_type)}
    state_vars = {n: v for n, v in declared.items() if types.is_state(v.sym_type)}
    missing = [n for n in data if n not in inputs]
    extra = [n for n in inputs if n not in data]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if extra:
            parts.append(f"unexpected {extra}")
        raise ValueError(f"inputs: {', '.join(parts)}; the program expects: {listing}")
    unknown_states = [n for n in (states or {}) if n not in state_vars]
    if unknown_states:
        raise ValueError(
            f"states: unexpected {unknown_states}; the program's states are {sorted(state_vars)}"
        )
    for name, var in data.items():
        arr = _to_array(f"inputs[{name!r}]", inputs[name])
        shape = tuple(var.shape) if types.is_tensor(var.sym_type) else ()
        _check_array(f"inputs[{name!r}]", arr, var.dtype, shape, listing, types)
        ex.env[name] = ex.store(arr, var)
    for name, var in state_vars.items():
        inner = var.sym_type.wrapped_type()
        holder = _Holder(inner)
        shape = tuple(inner.get_shape())
        if states is not None and name in states:
            arr = _to_array(f"states[{name!r}]", states[name])
            _check_array(f"states[{name!r}]", arr, holder.dtype, shape, listing, types)
        else:  # Core ML's make_state() starts a state at zeros
            arr = np.zeros([int(d) for d in shape], dtype=types.nptype_from_builtin(holder.dtype))
        ex.states[name] = ex.store(arr, _VarPlan(holder, types))


def _to_numpy(value: Any, var_dtype: Any, mode: str, types: Any) -> Any:
    """A stored value as returned to the caller: numpy in the declared type (float32 in the
    fp32 reference mode)."""
    if not isinstance(value, torch.Tensor):
        return value
    arr = value.detach().numpy()
    if value.is_floating_point():
        if mode == "fp32_reference" or var_dtype is None or not types.is_float(var_dtype):
            return arr.astype(np.float32, copy=False)
        return arr.astype(types.nptype_from_builtin(var_dtype), copy=False)
    if var_dtype is not None and (types.is_int(var_dtype) or types.is_bool(var_dtype)):
        return arr.astype(types.nptype_from_builtin(var_dtype), copy=False)
    return arr


def resolve_mode(mode: str | None, precision: str | None) -> Mode:
    """The run's mode from ``mode`` and the earlier ``precision`` keyword (an alias)."""
    if precision is not None:
        check_choice("precision", precision, tuple(PRECISION_ALIASES))
        aliased = PRECISION_ALIASES[precision]
        if mode is not None and mode != aliased:
            raise ValueError(
                f"precision={precision!r} means mode={aliased!r}, but mode={mode!r} was given; "
                "pass only mode"
            )
        return cast(Mode, aliased)
    if mode is None:
        return "declared"
    if mode in PRECISION_ALIASES:  # run(program, inputs, "fp16"): the earlier positional form
        return cast(Mode, PRECISION_ALIASES[mode])
    check_choice("mode", mode, MODES)
    return cast(Mode, mode)


def _execute(
    path_or_program: Any,
    inputs: Mapping[str, Any],
    mode: str,
    *,
    on_overflow: str,
    outputs: Sequence[str] | None,
    seed: int,
    states: MutableMapping[str, Any] | None,
    observer: Callable[[Any, Any, Any, str], None] | None,
) -> dict[str, Any]:
    check_choice("on_overflow", on_overflow, _ON_OVERFLOW)
    if isinstance(outputs, str):
        raise TypeError(f"outputs must be a sequence of variable names, got the string {outputs!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    program = _resolve_program(path_or_program)
    if "main" not in program.functions:
        raise ValueError(f"the program has no 'main' function (it has {sorted(program.functions)})")
    function = program.functions["main"]
    ex = _Executor(program, mode, on_overflow, seed, observer)
    if not ex.cache.validated:
        validate_program(function)
        ex.cache.validated = True
    _bind_inputs(function, inputs, states, ex)

    wanted = [v.name for v in function.outputs] if outputs is None else list(outputs)
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
    if ex.cache.last_use is None:
        last_use: dict[str, int] = {}
        for index, op in enumerate(ops):
            for var in _uses(op):
                last_use[var.name] = index
        ex.cache.last_use = last_use
    last = ex.cache.last_use
    keep = set(wanted) | {v.name for v in function.outputs}
    env = ex.env
    with torch.no_grad():
        for index, op in enumerate(ops):
            ex.run_op(op)
            for var in _uses(op):
                name = var.name
                if name not in keep and last.get(name, -1) <= index:
                    env.pop(name, None)
            for var in op.outputs:
                if var.name not in keep and last.get(var.name, -1) <= index:
                    env.pop(var.name, None)

    types = ex.types
    result = {name: _to_numpy(env[name], declared[name].dtype, mode, types) for name in wanted}
    if states is not None:
        for name, var in function.inputs.items():
            if types.is_state(var.sym_type):
                inner = var.sym_type.wrapped_type().get_primitive()
                states[name] = _to_numpy(ex.states[name], inner, mode, types)
    return result


def run(
    path_or_program: str | os.PathLike[str] | Program,
    inputs: Mapping[str, Any],
    mode: Mode | None = None,
    *,
    precision: str | None = None,
    on_overflow: OnOverflow = "raise",
    outputs: Sequence[str] | None = None,
    seed: int = 0,
    states: MutableMapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Execute an ML program's ``main`` function op by op and return its outputs by name.

    Args:
        path_or_program: a saved ``.mlpackage`` (read with ``load_program``) or a coremltools
            MIL ``Program``.
        inputs: one array (numpy array or torch tensor) per program input, by name, with the
            declared shape, e.g. ``{"image": x}`` with ``x: (1, 3, 224, 224)``.
        mode: how float values are stored (see the module's documentation):
            ``"declared"`` (default) as the program types each variable, fp16 or fp32;
            ``"neural_engine_fp16"`` every float value in fp16, as on the Neural Engine;
            ``"fp32_reference"`` every float value in fp32, the reference that checks the
            executor against PyTorch.
        precision: the keyword of earlier versions, an alias: ``"fp16"`` is
            ``mode="neural_engine_fp16"``, ``"fp32"`` is ``mode="fp32_reference"`` (also
            accepted as ``mode``, where earlier versions took ``precision`` by position).
        on_overflow: what to do when an op first produces inf/nan from finite inputs:
            ``"raise"`` (:class:`Float16OverflowError` for an fp16-stored output,
            :class:`NonFiniteOutputError` otherwise), ``"warn"``
            (:class:`NonFiniteOutputWarning`, then carry on) or ``"ignore"``.
        outputs: names of the variables to return; default the function's outputs. Any
            intermediate variable of the program may be asked for.
        seed: seeds the ``random_*`` ops whose own ``seed`` is -1.
        states: values of the program's state inputs (iOS18 stateful models), by name; the
            executor writes the updated states back into this mapping, as Core ML updates an
            ``MLState``. States not given start at zeros.

    Returns:
        ``{name: array}`` in the order asked for, each in its declared type (float16 for an
        fp16 variable); in ``"fp32_reference"`` mode float outputs are float32.

    Raises:
        UnsupportedOpError: the program holds an op type not in ``SUPPORTED_OPS``.
        ProgramValidationError: the program breaks a rule Core ML checks (a constant input
            computed at run time, a tensor of rank above 5).
        Float16OverflowError / NonFiniteOutputError: see ``on_overflow``.
        ValueError / TypeError: bad arguments, or inputs whose names, shapes or dtypes do not
            match the program's declared inputs (the message lists them).
    """
    resolved = resolve_mode(mode, precision)
    return _execute(
        path_or_program,
        inputs,
        resolved,
        on_overflow=on_overflow,
        outputs=outputs,
        seed=seed,
        states=states,
        observer=None,
    )


def numeric_health(
    path_or_program: str | os.PathLike[str] | Program,
    inputs: Mapping[str, Any],
    mode: Mode | None = None,
    *,
    precision: str | None = None,
    seed: int = 0,
    states: MutableMapping[str, Any] | None = None,
) -> NumericHealth:
    """Run the program as :func:`run` does and report, per op, how its stored float outputs sit
    in their storage type's range: the share of subnormal values (below fp16's smallest normal
    2**-14 for fp16 storage), of zeros, the largest magnitude and inf/nan counts.

    Overflow does not stop this run (``on_overflow="ignore"``): the report's
    ``first_nonfinite`` names the op where it starts.
    """
    resolved = resolve_mode(mode, precision)
    rows: list[OpHealth] = []

    def observe(op: Any, var: Any, value: Any, storage: str) -> None:
        row = op_health(op, var, value, storage)
        if row is not None:
            rows.append(row)

    _execute(
        path_or_program,
        inputs,
        resolved,
        on_overflow="ignore",
        outputs=None,
        seed=seed,
        states=states,
        observer=observe,
    )
    return NumericHealth(resolved, tuple(rows))

"""The ANE check of a Core ML package: what the Neural Engine would pad, reject or fall back on.

:func:`report` reads a saved ``.mlpackage`` (or an already loaded MIL ``Program``) on any OS and
walks every op of its main function, nested blocks included. For each op it records the output
shapes and dtypes and the bytes they occupy under the Neural Engine's 64-byte last-axis rule
(:mod:`ane_lib.functional.alignment`), and the :class:`Report` sums them up:

* an op histogram and the number of layout ops (``transpose``, ``reshape``), which move data
  without computing anything (Apple's 2022 post: minimise copies);
* the largest tensor rank and the ops above rank 5 (Core ML's limit);
* real versus padded activation bytes, per op, per stage and in total, and the ops whose last
  axis wastes most;
* ops on the *reported* fallback list (below); fp32 ops (the Neural Engine computes in fp16);
  dimensions above 16384 (a community-reported size limit, not documented by Apple);
* the bytes of the weights.

The fallback list is not Apple's: Apple publishes no list of ops that run on the Neural Engine,
and says placement depends on the device, OS version and tensor sizes. It is the list gathered by
M. Hollemans in ``hollance/neural-engine``, ``docs/unsupported-layers.md`` ("some of these are
guesses"), mapped conservatively to ML-program ops:

* custom layers (``custom_layer`` / registered custom ops);
* recurrent layers: ``lstm``, ``gru``, ``rnn``;
* gather: ``gather``, ``gather_nd``, ``gather_along_axis``;
* dilated convolution: ``conv`` with a dilation above 1;
* pooling (``max_pool``, ``avg_pool``, ``l2_pool``) with a kernel above 13 or a stride above 2;
* upsampling (``upsample_*``, ``resize_*``) by more than 2x along an axis.

Its other two items, "broadcastable and ND layers" and some broadcasting multiplies, name
layer types of the older neural-network format that ML programs do not have, so they are not
mapped. Only a Mac can say where an op really runs (``MLComputePlan``, Xcode's performance
report); this report says what to look at first.

Activation bytes count the outputs of every op except ``const`` and ``constexpr_*`` ops (those
are weights, materialised at load time); the function's inputs are not counted. A scalar output
counts as one value on a last axis of 1. Weights are the constant tensors of floating-point or
8-bit-or-narrower type (and everything feeding a ``constexpr_*`` decompression op); integer
constants (shapes, axes, permutations, index tables) and scalars are reported apart.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ane_lib._checks import check_positive_int
from ane_lib.coreml.program import import_coremltools, load_program
from ane_lib.functional.alignment import padded_nbytes, real_nbytes
from ane_lib.functional.rank import COREML_MAX_RANK

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "LAYOUT_OP_TYPES",
    "MAX_RANK",
    "MAX_DIM",
    "FALLBACK_SOURCE",
    "OpRecord",
    "StagePadding",
    "Report",
    "report",
    "default_stage_key",
    "plot_padding_by_stage",
]

#: Op types counted as layout ops: they move or relabel data and compute nothing.
LAYOUT_OP_TYPES: tuple[str, ...] = ("transpose", "reshape")
#: Largest tensor rank Core ML accepts (coremltools issues 1723, 1330, 2291); one constant for
#: the library, shared with :class:`ane_lib.functional.RankRecorder`.
MAX_RANK = COREML_MAX_RANK
#: Largest dimension reported to run on the Neural Engine (community reports, not Apple).
MAX_DIM = 16384
#: Where the fallback list comes from.
FALLBACK_SOURCE = "hollance/neural-engine, docs/unsupported-layers.md (reported, not official)"

_GATHER_OPS = ("gather", "gather_nd", "gather_along_axis")
_RNN_OPS = ("lstm", "gru", "rnn")
_POOL_OPS = ("max_pool", "avg_pool", "l2_pool")
_MAX_POOL_KERNEL = 13
_MAX_POOL_STRIDE = 2
_MAX_UPSAMPLE = 2.0
# torch.export names lifted parameters p_<path>, buffers b_<path>, constants c_<path>;
# coremltools keeps those names on the const ops and appends a cast suffix.
_PARAM_NAME = re.compile(r"^[pbc]_(?P<path>.+?)(?:_to_fp16|_to_fp32|_cast_fp16)*$")
_STAGE_PATH = re.compile(r"^(?P<stage>.*?(?:stages?|layers?)_\d+)(?:_|$)")

Shape = tuple[int | str, ...]


@dataclass(frozen=True)
class OpRecord:
    """One non-constant op of the program and the bytes its outputs occupy.

    ``shapes``/``dtypes``: one entry per tensor or scalar output (a symbolic dimension is a
    string and its output is left out of the byte counts). ``scope``: the torch parameter path
    this op is attributed to (e.g. ``"stages_0_0_proj_weight"``): that of its own weights if it
    has any, else inherited from the most recent op it reads. ``fallback``: why the op is on
    the reported fallback list, or None. ``boundary_cast``: a ``cast`` reading a function input
    or producing a function output (the fp32 <-> fp16 conversions at the model's edges).
    """

    name: str
    op_type: str
    scope: str
    shapes: tuple[Shape, ...]
    dtypes: tuple[str, ...]
    real_bytes: int
    padded_bytes: int
    fallback: str | None = None
    boundary_cast: bool = False

    @property
    def rank(self) -> int:
        """Largest rank among the outputs (0 for scalars or no outputs)."""
        return max((len(s) for s in self.shapes), default=0)

    @property
    def max_dim(self) -> int:
        """Largest known dimension among the outputs (0 if none)."""
        return max((d for s in self.shapes for d in s if isinstance(d, int)), default=0)

    @property
    def wasted_bytes(self) -> int:
        """Padding bytes: ``padded_bytes - real_bytes``."""
        return self.padded_bytes - self.real_bytes

    @property
    def overhead(self) -> float:
        """``padded_bytes / real_bytes`` (1.0 when nothing is counted)."""
        return self.padded_bytes / self.real_bytes if self.real_bytes else 1.0

    @property
    def is_fp32(self) -> bool:
        """True if an output is fp32 and the op is not a cast at the model's edge."""
        return "fp32" in self.dtypes and not self.boundary_cast

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op_type": self.op_type,
            "scope": self.scope,
            "shapes": [list(s) for s in self.shapes],
            "dtypes": list(self.dtypes),
            "real_bytes": self.real_bytes,
            "padded_bytes": self.padded_bytes,
            "fallback": self.fallback,
            "boundary_cast": self.boundary_cast,
        }


@dataclass(frozen=True)
class StagePadding:
    """Activation bytes of one stage: real, padded to 64 bytes, and the number of ops."""

    real_bytes: int
    padded_bytes: int
    ops: int

    @property
    def overhead(self) -> float:
        return self.padded_bytes / self.real_bytes if self.real_bytes else 1.0


def default_stage_key(record: OpRecord) -> str:
    """Stage of an op from its scope: ``"stages_2_blocks_0_attn_q_weight"`` -> ``"stages_2"``.

    The prefix up to the first ``stage(s)_<i>`` / ``layer(s)_<i>``; otherwise the first word of
    the scope (``"stem_0_weight"`` -> ``"stem"``, ``"head_weight"`` -> ``"head"``); ops before
    any weight (input casts) are ``"input"``.
    """
    if not record.scope:
        return "input"
    match = _STAGE_PATH.match(record.scope)
    return match.group("stage") if match else record.scope.split("_")[0]


@dataclass
class Report:
    """What :func:`report` found; ``str(report)`` is a readable table, ``to_dict()`` JSON.

    ``ops``: every non-constant op in program order. ``weight_bytes``: bytes of the weight
    constants (``weight_tensors`` of them); ``other_const_bytes``: integer and scalar constants.
    ``inputs`` / ``outputs``: the main function's interface, name -> (shape, dtype).

    Attribution caveat: an op's ``scope`` (and so its stage in :meth:`padding_by_stage`) comes
    from the names of the weight constants it reads. The converter stores equal constants once,
    under one name, so every op that reads a merged constant is attributed to the layer whose
    name the converter kept. An untrained model is full of equal constants (norm scales of one,
    shifts of zero, batch-norm statistics of zero and one), and its per-op and per-stage
    attribution can be wrong. Export trained weights, or perturbed ones
    (:func:`ane_lib.models.perturb_weights_`), when the attribution matters; the totals do not
    depend on it.
    """

    source: str
    ops: list[OpRecord]
    const_count: int
    weight_bytes: int
    weight_tensors: int
    other_const_bytes: int
    inputs: dict[str, tuple[Shape, str]] = field(default_factory=dict)
    outputs: dict[str, tuple[Shape, str]] = field(default_factory=dict)

    # ----------------------------------------------------------------- derived views

    @property
    def op_histogram(self) -> dict[str, int]:
        """Op type -> count, most frequent first (const ops not included)."""
        return dict(Counter(r.op_type for r in self.ops).most_common())

    @property
    def layout_op_counts(self) -> dict[str, int]:
        """Count of each layout op type (see :data:`LAYOUT_OP_TYPES`)."""
        hist = Counter(r.op_type for r in self.ops)
        return {t: hist.get(t, 0) for t in LAYOUT_OP_TYPES}

    @property
    def layout_ops(self) -> int:
        """Number of ``transpose`` and ``reshape`` ops."""
        return sum(self.layout_op_counts.values())

    @property
    def max_rank(self) -> int:
        return max((r.rank for r in self.ops), default=0)

    @property
    def high_rank_ops(self) -> list[OpRecord]:
        """Ops with an output of rank above :data:`MAX_RANK`."""
        return [r for r in self.ops if r.rank > MAX_RANK]

    @property
    def large_dim_ops(self) -> list[OpRecord]:
        """Ops with an output dimension above :data:`MAX_DIM`."""
        return [r for r in self.ops if r.max_dim > MAX_DIM]

    @property
    def fallback_ops(self) -> list[OpRecord]:
        """Ops on the reported fallback list (see the module docstring)."""
        return [r for r in self.ops if r.fallback is not None]

    @property
    def fp32_ops(self) -> list[OpRecord]:
        """Ops computing in fp32, except the casts at the model's inputs and outputs."""
        return [r for r in self.ops if r.is_fp32]

    @property
    def boundary_casts(self) -> list[OpRecord]:
        return [r for r in self.ops if r.boundary_cast]

    @property
    def activation_real_bytes(self) -> int:
        return sum(r.real_bytes for r in self.ops)

    @property
    def activation_padded_bytes(self) -> int:
        return sum(r.padded_bytes for r in self.ops)

    @property
    def padding_overhead(self) -> float:
        """Total padded over total real activation bytes."""
        real = self.activation_real_bytes
        return self.activation_padded_bytes / real if real else 1.0

    @property
    def ok(self) -> bool:
        """True when no check fails: rank <= 5, no reported fallback, no fp32 op, no huge dim.

        Padding is not a failure; it is a cost, shown in the table.
        """
        return not self.problems()

    def problems(self) -> list[str]:
        """One line per failed check (empty when :attr:`ok`)."""
        out = []
        if self.high_rank_ops:
            out.append(f"{len(self.high_rank_ops)} op(s) with rank > {MAX_RANK}")
        if self.fallback_ops:
            out.append(f"{len(self.fallback_ops)} op(s) on the reported fallback list")
        if self.fp32_ops:
            out.append(f"{len(self.fp32_ops)} fp32 op(s)")
        if self.large_dim_ops:
            out.append(f"{len(self.large_dim_ops)} op(s) with a dimension > {MAX_DIM}")
        return out

    def worst_padding(self, k: int = 10) -> list[OpRecord]:
        """The ``k`` ops that waste most bytes on last-axis padding, worst first."""
        check_positive_int("k", k)
        wasteful = [r for r in self.ops if r.wasted_bytes > 0]
        return sorted(wasteful, key=lambda r: r.wasted_bytes, reverse=True)[:k]

    def padding_by_stage(
        self, key: Callable[[OpRecord], str] = default_stage_key
    ) -> dict[str, StagePadding]:
        """Activation bytes grouped by ``key(op)`` (default :func:`default_stage_key`).

        Stages appear in program order of their first op. The default key reads the stage from
        the op's ``scope``, i.e. from the names of the weight constants it reads; in a package
        made from an untrained model, equal constants are merged under one layer's name and
        ops can land in the wrong stage (see :class:`Report`). Use trained weights or
        :func:`ane_lib.models.perturb_weights_` before exporting.
        """
        if not callable(key):
            raise TypeError(f"key must be a callable OpRecord -> str, got {key!r}")
        totals: dict[str, list[int]] = {}
        for r in self.ops:
            t = totals.setdefault(str(key(r)), [0, 0, 0])
            t[0] += r.real_bytes
            t[1] += r.padded_bytes
            t[2] += 1
        return {s: StagePadding(*t) for s, t in totals.items()}

    # ----------------------------------------------------------------- output

    def to_dict(self, *, top: int = 10) -> dict[str, Any]:
        """Everything as JSON-able builtins (``json.dumps`` works on the result)."""
        return {
            "source": self.source,
            "ok": self.ok,
            "problems": self.problems(),
            "inputs": {n: {"shape": list(s), "dtype": d} for n, (s, d) in self.inputs.items()},
            "outputs": {n: {"shape": list(s), "dtype": d} for n, (s, d) in self.outputs.items()},
            "ops": len(self.ops),
            "const_ops": self.const_count,
            "op_histogram": self.op_histogram,
            "layout_ops": self.layout_ops,
            "layout_op_counts": self.layout_op_counts,
            "max_rank": self.max_rank,
            "high_rank_ops": [_brief(r) for r in self.high_rank_ops],
            "activation_real_bytes": self.activation_real_bytes,
            "activation_padded_bytes": self.activation_padded_bytes,
            "padding_overhead": self.padding_overhead,
            "worst_padding": [r.to_dict() for r in self.worst_padding(top)],
            "padding_by_stage": {
                s: {"real_bytes": p.real_bytes, "padded_bytes": p.padded_bytes, "ops": p.ops}
                for s, p in self.padding_by_stage().items()
            },
            "fallback_source": FALLBACK_SOURCE,
            "fallback_ops": [{**_brief(r), "reason": r.fallback} for r in self.fallback_ops],
            "fp32_ops": [_brief(r) for r in self.fp32_ops],
            "boundary_casts": [r.name for r in self.boundary_casts],
            "max_dim": max((r.max_dim for r in self.ops), default=0),
            "large_dim_ops": [_brief(r) for r in self.large_dim_ops],
            "weight_bytes": self.weight_bytes,
            "weight_tensors": self.weight_tensors,
            "other_const_bytes": self.other_const_bytes,
            "op_records": [r.to_dict() for r in self.ops],
        }

    def __str__(self) -> str:
        return _format(self)


# --------------------------------------------------------------------------- building


def report(path_or_program: Any, *, function: str = "main") -> Report:
    """Check a Core ML package (or a loaded MIL program) against the Neural Engine's rules.

    Args:
        path_or_program: path of a saved ``.mlpackage`` (read with
            :func:`ane_lib.coreml.load_program`, on any OS) or a
            ``coremltools.converters.mil.mil.Program``.
        function: name of the program function to walk.

    Returns:
        a :class:`Report`; ``print(report(...))`` shows it as a table.
    """
    import_coremltools()
    from coremltools.converters.mil.mil import Program

    if isinstance(path_or_program, (str, os.PathLike)):
        source = os.fspath(path_or_program)
        program = load_program(path_or_program)
    elif isinstance(path_or_program, Program):
        source = "<MIL program>"
        program = path_or_program
    else:
        raise TypeError(
            "path_or_program must be a path to a .mlpackage or a coremltools MIL Program, got "
            f"{path_or_program!r} ({type(path_or_program).__name__})"
        )
    if function not in program.functions:
        raise ValueError(
            f"function {function!r} is not in the program; it has {sorted(program.functions)}"
        )
    return _build(program.functions[function], source)


def _walk(block: Any) -> Iterator[Any]:
    """Every op of ``block`` in program order, nested blocks (cond, while_loop) included."""
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from _walk(inner)


def _input_vars(op: Any) -> Iterator[Any]:
    for value in op.inputs.values():
        if isinstance(value, (list, tuple)):
            yield from value
        else:
            yield value


def _dtype_name(var: Any) -> str:
    from coremltools.converters.mil.mil import types

    return str(types.builtin_to_string(var.dtype))


def _is_counted(var: Any) -> bool:
    from coremltools.converters.mil.mil import types

    return bool(types.is_tensor(var.sym_type) or types.is_scalar(var.sym_type)) and not (
        types.is_str(var.dtype)
    )


def _shape(var: Any) -> Shape:
    """Output shape with symbolic dimensions (flexible shapes) as strings."""
    dims: list[int | str] = []
    for d in var.shape:
        try:
            dims.append(int(d))
        except TypeError:
            dims.append(str(d))
    return tuple(dims)


def _is_weight_op(op: Any) -> bool:
    """``const`` and ``constexpr_*`` ops hold weights; their outputs are not activations."""
    return op.op_type == "const" or op.op_type.startswith("constexpr_")


def _output_bytes(var: Any) -> tuple[int, int]:
    """(real, padded) bytes of one output, 0 when its shape is symbolic."""
    from coremltools.converters.mil.mil import types

    shape = _shape(var)
    if any(not isinstance(d, int) for d in shape) or any(d == 0 for d in shape):
        return 0, 0
    np_dtype = types.nptype_from_builtin(var.dtype)
    dims = [int(d) for d in shape]
    return real_nbytes(dims, np_dtype), padded_nbytes(dims, np_dtype)


def _const_nbytes(var: Any) -> int:
    """Storage bytes of a constant: elements x bit width / 8, rounded up."""
    value = var.val
    if value is None or isinstance(value, str):
        return 0
    try:
        bits = int(var.dtype.get_bitwidth())
    except AttributeError:  # bool and other types without a bit width: one byte per value
        bits = 8
    count = math.prod(int(d) for d in _shape(var))  # constants have concrete shapes
    return -(-count * bits // 8)


def _is_weight(var: Any) -> bool:
    from coremltools.converters.mil.mil import types

    if any(child.op_type.startswith("constexpr_") for child in var.child_ops):
        return True
    if not types.is_tensor(var.sym_type) or len(var.shape) == 0:
        return False
    if types.is_float(var.dtype):
        return True
    bits = getattr(var.dtype, "get_bitwidth", lambda: 32)()
    return types.is_int(var.dtype) and bits <= 8


def _param_path(name: str) -> str:
    match = _PARAM_NAME.match(name)
    return match.group("path") if match else ""


def _option(op: Any, name: str) -> list[float] | None:
    var = op.inputs.get(name)
    if var is None or var.val is None:
        return None
    value = var.val
    return [float(v) for v in (value.ravel() if hasattr(value, "ravel") else [value])]


def _fallback_reason(op: Any) -> str | None:
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    t = op.op_type
    if t == "custom_layer" or t in SSAOpRegistry.custom_ops:
        return "custom layer"
    if t in _RNN_OPS:
        return "recurrent layer (RNN/LSTM/GRU)"
    if t in _GATHER_OPS:
        return "gather"
    if t == "conv":
        dil = _option(op, "dilations")
        if dil and max(dil) > 1:
            return f"dilated convolution (dilations={[int(d) for d in dil]})"
    if t in _POOL_OPS:
        kernel = _option(op, "kernel_sizes") or []
        strides = _option(op, "strides") or []
        if kernel and max(kernel) > _MAX_POOL_KERNEL:
            sizes = [int(k) for k in kernel]
            return f"pooling with kernel > {_MAX_POOL_KERNEL} (kernel_sizes={sizes})"
        if strides and max(strides) > _MAX_POOL_STRIDE:
            steps = [int(k) for k in strides]
            return f"pooling with stride > {_MAX_POOL_STRIDE} (strides={steps})"
    if t.startswith(("upsample_", "resize_")):
        scale = _upsample_scale(op)
        if scale is not None and scale > _MAX_UPSAMPLE:
            return f"upsampling by more than {_MAX_UPSAMPLE:g}x ({scale:g}x)"
    return None


def _upsample_scale(op: Any) -> float | None:
    """Largest output/input ratio over the last two axes, from the shapes."""
    x = op.inputs.get("x")
    if x is None or not op.outputs:
        return None
    before, after = _shape(x), _shape(op.outputs[0])
    if len(before) < 2 or len(before) != len(after):
        return None
    pairs = list(zip(before[-2:], after[-2:], strict=True))
    if any(not isinstance(a, int) or not isinstance(b, int) or a == 0 for a, b in pairs):
        return None
    return max(b / a for a, b in pairs)  # type: ignore[operator]


def _attribute_scopes(ops: list[Any], named: dict[int, str]) -> list[str]:
    """The torch parameter path each compute op is attributed to (see :class:`OpRecord`).

    An op reading weights named after a torch parameter (``named``: id(var) -> path) belongs to
    that parameter's module. An op reading only unnamed weights (made by a converter fusion,
    e.g. a batch norm folded into a conv: ``const_18``) belongs to the next op that reads named
    weights, i.e. the module it starts. Any other op (activations, adds, layout ops) belongs to
    the module of the most recent op it reads from; ops that read only function inputs to none.
    """
    own: list[str | None] = []
    fused: list[bool] = []
    for op in ops:
        weights = [v for v in _input_vars(op) if v.op is not None and _is_weight_op(v.op)]
        paths = [named[id(v)] for v in weights if named.get(id(v))]
        own.append(paths[0] if paths else None)
        fused.append(not paths and any(_is_weight(v) for v in weights))
    upcoming: str | None = None
    for i in range(len(ops) - 1, -1, -1):
        if own[i] is not None:
            upcoming = own[i]
        elif fused[i]:
            own[i] = upcoming

    scopes: list[str] = []
    scope_of: dict[int, str] = {}
    order_of: dict[int, int] = {}
    for i, op in enumerate(ops):
        scope = own[i]
        if scope is None:
            made = [v for v in _input_vars(op) if id(v) in order_of]
            latest = max(made, key=lambda v: order_of[id(v)]) if made else None
            scope = scope_of[id(latest)] if latest is not None else ""
        scopes.append(scope)
        for var in op.outputs:
            scope_of[id(var)] = scope
            order_of[id(var)] = i
    return scopes


def _build(func: Any, source: str) -> Report:
    function_inputs = {id(v) for v in func.inputs.values()}
    function_outputs = {id(v) for v in func.outputs}
    named: dict[int, str] = {}  # id(weight var) -> torch parameter path
    compute: list[Any] = []
    const_count = weight_bytes = weight_tensors = other_bytes = 0
    for op in _walk(func):
        if not _is_weight_op(op):
            compute.append(op)
            continue
        for var in op.outputs:
            named[id(var)] = _param_path(op.name) or _param_path(var.name)
        if op.op_type == "const":
            const_count += 1
            var = op.outputs[0]
            if _is_weight(var):
                weight_bytes += _const_nbytes(var)
                weight_tensors += 1
            else:
                other_bytes += _const_nbytes(var)

    records: list[OpRecord] = []
    for op, scope in zip(compute, _attribute_scopes(compute, named), strict=True):
        inputs = list(_input_vars(op))
        counted = [v for v in op.outputs if _is_counted(v)]
        sizes = [_output_bytes(v) for v in counted]
        boundary = op.op_type == "cast" and (
            any(id(v) in function_inputs for v in inputs)
            or any(id(v) in function_outputs for v in op.outputs)
        )
        records.append(
            OpRecord(
                name=op.name,
                op_type=op.op_type,
                scope=scope,
                shapes=tuple(_shape(v) for v in counted),
                dtypes=tuple(_dtype_name(v) for v in counted),
                real_bytes=sum(r for r, _ in sizes),
                padded_bytes=sum(p for _, p in sizes),
                fallback=_fallback_reason(op),
                boundary_cast=boundary,
            )
        )

    return Report(
        source=source,
        ops=records,
        const_count=const_count,
        weight_bytes=weight_bytes,
        weight_tensors=weight_tensors,
        other_const_bytes=other_bytes,
        inputs={n: (_shape(v), _dtype_name(v)) for n, v in func.inputs.items()},
        outputs={v.name: (_shape(v), _dtype_name(v)) for v in func.outputs},
    )


# --------------------------------------------------------------------------- text output


def _brief(r: OpRecord) -> dict[str, Any]:
    return {"name": r.name, "op_type": r.op_type, "shapes": [list(s) for s in r.shapes]}


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if abs(n) < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover - unreachable


def _fmt_shape(shapes: tuple[Shape, ...]) -> str:
    return ", ".join("(" + ", ".join(str(d) for d in s) + ")" for s in shapes) or "-"


def _table(header: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    lines = [indent + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append(indent + "  ".join("-" * w for w in widths))
    lines += [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return lines


def _check_line(
    ok: bool, text: str, items: list[OpRecord], detail: Callable[[OpRecord], str]
) -> list[str]:
    lines = [f"  [{'ok' if ok else '!!'}] {text}"]
    for r in items[:8]:
        lines.append(f"         {r.name} ({r.op_type}): {detail(r)}")
    if len(items) > 8:
        lines.append(f"         ... and {len(items) - 8} more")
    return lines


def _format(rep: Report, top: int = 10) -> str:
    lines = [f"ANE report: {rep.source}"]
    for kind, table in (("input", rep.inputs), ("output", rep.outputs)):
        for name, (shape, dtype) in table.items():
            lines.append(f"  {kind} {name}: {_fmt_shape((shape,))} {dtype}")
    counts = ", ".join(f"{t} {n}" for t, n in rep.layout_op_counts.items())
    lines += [
        f"  ops: {len(rep.ops)} (+ {rep.const_count} const)   layout ops: {rep.layout_ops} "
        f"({counts})   max rank: {rep.max_rank}",
        f"  activations: {_fmt_bytes(rep.activation_real_bytes)} real, "
        f"{_fmt_bytes(rep.activation_padded_bytes)} padded to 64-byte rows "
        f"({rep.padding_overhead:.2f}x)",
        f"  weights: {_fmt_bytes(rep.weight_bytes)} in {rep.weight_tensors} tensors "
        f"(+ {_fmt_bytes(rep.other_const_bytes)} other constants)",
        "",
        "Checks",
    ]
    lines += _check_line(
        not rep.high_rank_ops,
        f"rank <= {MAX_RANK} (max {rep.max_rank})",
        rep.high_rank_ops,
        lambda r: _fmt_shape(r.shapes),
    )
    lines += _check_line(
        not rep.fallback_ops,
        f"ops on the reported fallback list: {len(rep.fallback_ops)}  [{FALLBACK_SOURCE}]",
        rep.fallback_ops,
        lambda r: str(r.fallback),
    )
    lines += _check_line(
        not rep.fp32_ops,
        f"fp32 ops: {len(rep.fp32_ops)} (+ {len(rep.boundary_casts)} casts at inputs/outputs)",
        rep.fp32_ops,
        lambda r: _fmt_shape(r.shapes),
    )
    lines += _check_line(
        not rep.large_dim_ops,
        f"dimensions <= {MAX_DIM}",
        rep.large_dim_ops,
        lambda r: _fmt_shape(r.shapes),
    )
    lines += ["", "Op histogram"]
    hist = rep.op_histogram
    lines += _table(["op", "count"], [[t, str(n)] for t, n in hist.items()])
    lines += ["", "Padding by stage"]
    lines += _table(
        ["stage", "ops", "real", "padded", "x"],
        [
            [
                s,
                str(p.ops),
                _fmt_bytes(p.real_bytes),
                _fmt_bytes(p.padded_bytes),
                f"{p.overhead:.2f}",
            ]
            for s, p in rep.padding_by_stage().items()
        ],
    )
    worst = rep.worst_padding(top)
    lines += ["", f"Most bytes lost to last-axis padding (top {len(worst)})"]
    lines += _table(
        ["op", "type", "shape", "dtype", "real", "padded", "x"],
        [
            [
                r.name,
                r.op_type,
                _fmt_shape(r.shapes),
                ",".join(r.dtypes),
                _fmt_bytes(r.real_bytes),
                _fmt_bytes(r.padded_bytes),
                f"{r.overhead:.2f}",
            ]
            for r in worst
        ],
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- figure


def plot_padding_by_stage(
    rep: Report,
    ax: Axes | None = None,
    *,
    key: Callable[[OpRecord], str] = default_stage_key,
) -> Axes:
    """Bar chart of real versus padded activation bytes per stage (KiB), ratio on top.

    Draws into ``ax`` (a new figure if None) and returns it. Needs matplotlib.
    """
    import matplotlib.pyplot as plt

    if not isinstance(rep, Report):
        raise TypeError(f"rep must be a Report, got {type(rep).__name__}")
    stages = rep.padding_by_stage(key)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(stages) + 2), 3.2))
    names = list(stages)
    xs = range(len(names))
    real = [stages[s].real_bytes / 1024 for s in names]
    padded = [stages[s].padded_bytes / 1024 for s in names]
    width = 0.4
    ax.bar([x - width / 2 for x in xs], real, width, label="real bytes")
    ax.bar([x + width / 2 for x in xs], padded, width, label="padded to 64-byte rows")
    for x, s, p in zip(xs, names, padded, strict=True):
        ax.annotate(
            f"{stages[s].overhead:.2f}x",
            (x + width / 2, p),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_xticks(list(xs), names, rotation=30, ha="right")
    ax.set_ylabel("activation KiB")
    ax.set_title("Activation memory per stage under the 64-byte last-axis rule")
    ax.legend(fontsize=8)
    return ax

"""The Neural Engine's rules as one table: what each checks, how bad it is, who says so.

Each :class:`Rule` has an id, a one-line statement of what it checks, a severity, its sources
(each marked official or "reported, not official"), advice on the fix, and a function from a
:class:`~ane_lib.ane_rules.graph.Graph` to the :class:`Finding` objects where it fires. The
report's text, its ``to_dict()``, the command line's exit status and the book all read
:data:`RULES`; nothing else lists the checks.

Severities (:data:`SEVERITIES`, worst first):

- ``"error"``: the program does not convert or compile (Core ML refuses it).
- ``"warning"``: the program runs, but ops are reported to leave the Neural Engine for the GPU
  or CPU, or to compute wrongly on it.
- ``"cost"``: the program runs on the Neural Engine, but wastes memory traffic or time.

Where a source is a community report rather than Apple's word, the rule says so; where two
sources disagree (hollance's 2020 list and Apple's 2026 rules on dilations and pooling strides),
the newer official one wins and the rule's text says what was left out. Apple publishes no list
of the ops that run on the Neural Engine and says placement depends on the device, the OS version
and the tensor sizes (coremltools issue 1780): only a Mac can say where an op really runs
(:func:`ane_lib.coreml.compute_plan`). These rules say what to look at first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ane_lib.ane_rules.graph import Graph, Op, Shape
from ane_lib.functional.alignment import ALIGNMENT_BYTES, dtype_nbytes
from ane_lib.functional.rank import COREML_MAX_RANK

__all__ = [
    "Severity",
    "SEVERITIES",
    "Source",
    "Finding",
    "Rule",
    "RULES",
    "rule",
    "LAYOUT_OP_TYPES",
    "MAX_RANK",
    "MAX_SPATIAL",
    "LARGE_KERNEL",
    "LARGE_DILATION",
    "FP16_MAX",
]

Severity = Literal["error", "warning", "cost"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "cost")
"""Worst first: it does not convert or compile; it leaves the Neural Engine or computes wrongly
there; it wastes."""

#: Op types that move or relabel data and compute nothing (Apple 2022: minimise them).
LAYOUT_OP_TYPES: tuple[str, ...] = ("transpose", "reshape")
#: Largest tensor rank Core ML accepts.
MAX_RANK = COREML_MAX_RANK
#: Largest width and height (the last two axes) that the Neural Engine loads, as the community
#: reports it; Apple documents no limit.
MAX_SPATIAL = 16384
#: Kernels wider than this are flagged as large. Apple gives no number; its example calls a 9x9
#: kernel large and suggests two 5x5 ones. 7 lets the common 7x7 depthwise kernel through.
LARGE_KERNEL = 7
#: Dilations above this are flagged as large (Apple: factor them into 2s and 3s).
LARGE_DILATION = 3
#: Largest finite fp16 value: a constant below ``-FP16_MAX`` becomes ``-inf`` in fp16.
FP16_MAX = 65504.0


@dataclass(frozen=True)
class Source:
    """Where a rule comes from: its ``title``, its ``url``, the book's citation key ``cite``,
    whether it is ``official`` (Apple's documents, coremltools maintainers) or only reported by
    the community, and a ``short`` name for narrow tables."""

    title: str
    url: str
    cite: str
    official: bool = True
    short: str = ""

    def __str__(self) -> str:
        return self.title if self.official else f"{self.title} (reported, not official)"


APPLE_NE_RULES = Source(
    "Apple, coreai-models: Neural Engine rules (2026)",
    "https://github.com/apple/coreai-models/blob/main/skills/skills/model-authoring/"
    "references/neural_engine_rules.md",
    "apple_coreai_models",
    short="Apple rules 2026",
)
APPLE_2022 = Source(
    "Apple ML Research: Deploying Transformers on the ANE (2022)",
    "https://machinelearning.apple.com/research/neural-engine-transformers",
    "apple2022ane",
    short="Apple 2022",
)
APPLE_2024 = Source(
    "Apple ML Research: Vision Transformers on the ANE (2024)",
    "https://machinelearning.apple.com/research/vision-transformers",
    "apple2024vit",
    short="Apple 2024",
)
COREMLTOOLS_RANK = Source(
    "coremltools issues 1723, 2291 (maintainers)",
    "https://github.com/apple/coremltools/issues/1723",
    "coremltools_issue1723",
    short="coremltools #1723",
)
HOLLANCE = Source(
    "hollance/neural-engine: unsupported layers (2020)",
    "https://github.com/hollance/neural-engine/blob/master/docs/unsupported-layers.md",
    "hollance_neural_engine",
    official=False,
    short="hollance 2020",
)
COMMUNITY_LIMITS = Source(
    "Community notes: optimization guidelines for the ANE (2024)",
    "https://gist.github.com/antmikinka/715499ae63630575065b22e5cb6ad8dd",
    "ane_community_guidelines",
    official=False,
    short="community notes",
)


@dataclass(frozen=True)
class Finding:
    """One place where a rule fires: the ``op`` (None for a program input), a short
    ``message`` with the numbers, and the bytes the op loses to padding (``bytes_lost``, for
    the padding rules; 0 otherwise)."""

    rule: str
    message: str
    op: Op | None = None
    bytes_lost: int = 0

    @property
    def where(self) -> str:
        """The op's module path for display (``"(input)"`` for a program input)."""
        return self.op.where if self.op is not None else "(input)"


@dataclass(frozen=True)
class Rule:
    """One entry of the rule table (see the module docstring); ``rule(graph)`` runs it."""

    id: str
    title: str
    severity: Severity
    sources: tuple[Source, ...]
    advice: str
    check: Callable[[Graph], list[Finding]]

    def __call__(self, graph: Graph) -> tuple[Finding, ...]:
        if not isinstance(graph, Graph):
            raise TypeError(f"graph must be an ane_lib.ane_rules.Graph, got {type(graph).__name__}")
        return tuple(self.check(graph))

    @property
    def source_text(self) -> str:
        """The sources, ``"; "``-separated, each marked when it is not official."""
        return "; ".join(str(s) for s in self.sources)


# --------------------------------------------------------------------------- helpers


def fmt_shape(shape: Shape) -> str:
    """``(1, 640, 16, 16)`` as Python writes tuples: ``(64,)``, and ``()`` for a scalar."""
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _prime_factors(n: int) -> list[int]:
    factors, p = [], 2
    while p * p <= n:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    if n > 1:
        factors.append(n)
    return factors


def _not_2_3(n: int) -> list[int]:
    """Prime factors of ``n`` other than 2 and 3 (``[]`` for 1)."""
    return sorted({p for p in _prime_factors(n) if p not in (2, 3)})


def _itemsize(dtype: str) -> int | None:
    try:
        return dtype_nbytes(dtype)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- checks


def _rank(graph: Graph) -> list[Finding]:
    return [
        Finding("rank", f"rank {op.rank}: {', '.join(fmt_shape(s) for s in op.shapes)}", op)
        for op in graph.ops
        if op.rank > MAX_RANK
    ]


def _fp32(graph: Graph) -> list[Finding]:
    """fp32 ops with where their fp32 came from, and the casts back out of fp32."""
    origin: dict[str, tuple[str, ...]] = {}
    found: list[Finding] = []
    for op in graph.ops:
        if op.boundary_cast:
            continue
        fp32_in = [v for v in op.inputs if v.dtype == "fp32"]
        sources: list[str] = []
        for v in fp32_in:
            if v.kind == "op":
                sources.extend(origin.get(v.name, ()))
            elif v.kind == "const":
                what = "scalar constant" if v.rank == 0 else "constant"
                sources.append(f"{what} {v.name}")
            else:
                sources.append(f"input {v.name}")
        if "fp32" in op.dtypes:
            if not fp32_in:  # fp32 starts here: a cast, or an op that upcasts
                sources = [f"{op.op_type} {op.name}"]
            unique = tuple(dict.fromkeys(sources))[:3]
            for v in op.outputs:
                origin[v.name] = unique
            found.append(Finding("fp32", f"fp32 from {', '.join(unique) or 'unknown'}", op))
        elif fp32_in and op.is_cast:
            found.append(Finding("fp32", f"casts fp32 back to {', '.join(op.dtypes)}", op))
    return found


def _static_shapes(graph: Graph) -> list[Finding]:
    found = [
        Finding("static-shapes", f"input {v.name} has a flexible shape {fmt_shape(v.shape)}")
        for v in graph.flexible_inputs
    ]
    for op in graph.ops:
        flexible = [v for v in op.outputs if not v.is_static]
        if flexible:
            shapes = ", ".join(fmt_shape(v.shape) for v in flexible)
            found.append(Finding("static-shapes", f"output shape {shapes} is not static", op))
    return found


def _dimension_limits(graph: Graph) -> list[Finding]:
    found = []
    limits = (
        (-1, "width", MAX_SPATIAL),
        (-2, "height", MAX_SPATIAL),
    )
    for op in graph.ops:
        over = []
        for v in op.outputs:
            for axis, name, limit in limits:
                size = v.shape[axis] if v.rank >= -axis else 0
                if isinstance(size, int) and size > limit:
                    over.append(f"{name} {size} > {limit}")
        if over:
            found.append(Finding("dimension-limits", "; ".join(dict.fromkeys(over)), op))
    return found


def _last_axis_padding(graph: Graph) -> list[Finding]:
    found = []
    for op in graph.ops:
        lost = op.wasted_bytes
        if lost <= 0:
            continue
        worst = max(op.outputs, key=lambda v: v.padded_bytes - v.real_bytes)
        size = _itemsize(worst.dtype) or 0
        row = int(worst.last_axis) * size
        padded_row = -(-row // ALIGNMENT_BYTES) * ALIGNMENT_BYTES
        message = (
            f"last axis {worst.last_axis} x {worst.dtype} = {row} B in {padded_row} B rows: "
            f"{op.overhead:.2f}x"
        )
        found.append(Finding("last-axis-padding", message, op, bytes_lost=lost))
    return found


def _singleton_last_axis(graph: Graph) -> list[Finding]:
    found = []
    for op in graph.ops:
        for v in op.outputs:
            if v.rank == 0 or v.last_axis != 1 or not v.is_static:
                continue
            if math.prod(int(d) for d in v.shape) <= 1:
                continue
            size = _itemsize(v.dtype)
            factor = f", {ALIGNMENT_BYTES // size}x" if size else ""
            message = f"{fmt_shape(v.shape)} {v.dtype}: one value per 64-byte row{factor}"
            found.append(
                Finding(
                    "singleton-last-axis",
                    message,
                    op,
                    bytes_lost=v.padded_bytes - v.real_bytes,
                )
            )
            break
    return found


def _touches_last_axis(op: Op) -> str | None:
    """Why a transpose or reshape rewrites the last axis, or None if it leaves it alone."""
    if op.op_type == "transpose":
        perm = tuple(p % len(op.attr_ints("perm")) for p in op.attr_ints("perm"))
        if perm and perm[-1] != len(perm) - 1:
            return f"moves axis {perm[-1]} last (perm {perm})"
        return None
    if op.op_type == "reshape" and op.inputs and op.outputs:
        before, after = op.inputs[0].last_axis, op.outputs[0].last_axis
        if before != after:
            return f"last axis {before} -> {after}"
    return None


def _last_axis_layout(graph: Graph) -> list[Finding]:
    found = []
    for op in graph.ops:
        if op.op_type in LAYOUT_OP_TYPES and (why := _touches_last_axis(op)):
            message = f"{why}: {fmt_shape(op.inputs[0].shape)} -> {fmt_shape(op.shapes[0])}"
            found.append(Finding("last-axis-layout", message, op))
    return found


def _softmax_axis(graph: Graph) -> list[Finding]:
    found = []
    for op in graph.ops:
        if op.op_type != "softmax" or not op.outputs:
            continue
        rank = op.outputs[0].rank
        axes = op.attr_ints("axis")
        if not axes or rank == 0:
            continue
        axis = axes[0] % rank
        if axis >= rank - 2:
            name = "width" if axis == rank - 1 else "height"
            shape = fmt_shape(op.shapes[0])
            found.append(
                Finding("softmax-axis", f"softmax over axis {axis} ({name}) of {shape}", op)
            )
    return found


def _conv_stride(graph: Graph) -> list[Finding]:
    found = []
    for op in graph.ops:
        if op.op_type not in ("conv", "conv_transpose"):
            continue
        strides = op.attr_ints("strides")
        why = [f"stride {s} has prime factor(s) {_not_2_3(s)}" for s in strides if _not_2_3(s)]
        if len(set(strides)) > 1 and min(strides) > 2:
            why.append(f"unequal large strides {strides}")
        if why:
            found.append(Finding("conv-stride", "; ".join(why), op))
    return found


_POOL_OPS = ("max_pool", "avg_pool", "l2_pool")
_GOOD_POOL_STRIDES = (1, 2, 4)


def _pool_stride(graph: Graph) -> list[Finding]:
    found = []
    for op in graph.ops:
        if op.op_type in _POOL_OPS:
            bad = [s for s in op.attr_ints("strides") if s not in _GOOD_POOL_STRIDES]
            if bad:
                found.append(Finding("pool-stride", f"strides {op.attr_ints('strides')}", op))
    return found


def _large_kernel(graph: Graph) -> list[Finding]:
    found = []
    for op in graph.ops:
        if op.op_type in ("conv", "conv_transpose"):
            kernel = op.attr_ints("kernel_sizes")
            if kernel and max(kernel) > LARGE_KERNEL:
                found.append(Finding("large-kernel", f"kernel {kernel}", op))
    return found


def _large_dilation(graph: Graph) -> list[Finding]:
    found = []
    for op in graph.ops:
        if op.op_type not in ("conv", "conv_transpose"):
            continue
        parts = []
        for d in dict.fromkeys(op.attr_ints("dilations")):
            if d > LARGE_DILATION:
                other = _not_2_3(d)
                chain = " x ".join(str(p) for p in _prime_factors(d))
                parts.append(
                    f"dilation {d} has prime factor(s) {other}"
                    if other
                    else f"dilation {d} = {chain}"
                )
        if parts:
            found.append(Finding("large-dilation", "; ".join(parts), op))
    return found


_MASK_PATH_OPS = frozenset(
    {
        "add",
        "sub",
        "mul",
        "real_div",
        "select",
        "maximum",
        "minimum",
        "reshape",
        "transpose",
        "expand_dims",
        "squeeze",
        "tile",
        "concat",
        "split",
        "slice_by_index",
        "slice_by_size",
        "cast",
        "band_part",
    }
)
_MASK_DEPTH = 8


def _negative_infinity(graph: Graph) -> list[Finding]:
    """Constants of -inf (or below -65504, which fp16 rounds to -inf) that reach a softmax."""
    found: list[Finding] = []
    reported: set[tuple[str, str]] = set()
    for op in graph.ops:
        for v in op.inputs:
            if v.kind != "const" or v.minimum is None or v.minimum >= -FP16_MAX:
                continue
            value = "-inf" if math.isinf(v.minimum) else f"{v.minimum:g} (-inf in fp16)"
            frontier: list[tuple[Op, tuple[str, ...]]] = [(op, (op.op_type,))]
            seen: set[int] = set()
            while frontier:
                current, path = frontier.pop()
                if id(current) in seen or len(path) > _MASK_DEPTH:
                    continue
                seen.add(id(current))
                if current.op_type == "softmax":
                    if (v.name, current.name) not in reported:
                        reported.add((v.name, current.name))
                        message = f"constant {v.name} = {value} reaches it via {' -> '.join(path)}"
                        found.append(Finding("negative-infinity", message, current))
                    continue
                if current.op_type in _MASK_PATH_OPS:
                    frontier.extend(
                        (nxt, (*path, nxt.op_type)) for nxt in graph.downstream(current)
                    )
    return found


_RNN_OPS = ("lstm", "gru", "rnn")
_GATHER_OPS = ("gather", "gather_nd", "gather_along_axis")
_MAX_POOL_KERNEL = 13
_MAX_UPSAMPLE = 2.0


def _upsample_scale(op: Op) -> float | None:
    """Largest output/input ratio over the last two axes, from the shapes."""
    if not op.inputs or not op.outputs:
        return None
    before, after = op.inputs[0].shape, op.outputs[0].shape
    if len(before) < 2 or len(before) != len(after):
        return None
    ratios = []
    for a, b in zip(before[-2:], after[-2:], strict=True):
        if not isinstance(a, int) or not isinstance(b, int) or a == 0:
            return None
        ratios.append(b / a)
    return max(ratios)


def _fallback_reason(op: Op) -> str | None:
    t = op.op_type
    if t == "custom_layer" or op.attrs.get("custom") is True:
        return "custom layer"
    if t in _RNN_OPS:
        return "recurrent layer (RNN/LSTM/GRU)"
    if t in _GATHER_OPS:
        return "gather"
    if t == "conv":
        dilations = op.attr_ints("dilations")
        if any(d > LARGE_DILATION for d in dilations):
            return f"dilated convolution (dilations {dilations})"
    if t in _POOL_OPS:
        kernel, strides = op.attr_ints("kernel_sizes"), op.attr_ints("strides")
        if kernel and max(kernel) > _MAX_POOL_KERNEL:
            return f"pooling with kernel > {_MAX_POOL_KERNEL} ({kernel})"
        if any(s > 2 and s != 4 for s in strides):
            return f"pooling with stride > 2 ({strides})"
    if t.startswith(("upsample_", "resize_")):
        scale = _upsample_scale(op)
        if scale is not None and scale > _MAX_UPSAMPLE:
            return f"upsampling by more than {_MAX_UPSAMPLE:g}x ({scale:g}x)"
    return None


def _reported_fallback(graph: Graph) -> list[Finding]:
    found = []
    for op in graph.ops:
        reason = _fallback_reason(op)
        if reason is not None:
            found.append(Finding("reported-fallback", reason, op))
    return found


def _linear_layer(graph: Graph) -> list[Finding]:
    return [
        Finding("linear-layer", f"linear on {fmt_shape(op.inputs[0].shape)}", op)
        for op in graph.ops
        if op.op_type == "linear" and op.inputs
    ]


# --------------------------------------------------------------------------- the table

RULES: tuple[Rule, ...] = (
    Rule(
        "rank",
        f"every tensor has rank <= {MAX_RANK}",
        "error",
        (APPLE_NE_RULES, COREMLTOOLS_RANK),
        "remove singleton axes or relay the op through rank-5 steps (e.g. the 5D window partition)",
        _rank,
    ),
    Rule(
        "fp32",
        "no op computes in fp32 (the casts at the program's edges excepted)",
        "warning",
        (APPLE_NE_RULES,),
        "export in fp16; remove the cast or the fp32 constant the message names",
        _fp32,
    ),
    Rule(
        "static-shapes",
        "every input and tensor shape is static",
        "warning",
        (APPLE_NE_RULES,),
        "export one program per fixed input shape",
        _static_shapes,
    ),
    Rule(
        "dimension-limits",
        f"width and height <= {MAX_SPATIAL}",
        "warning",
        (COMMUNITY_LIMITS,),
        "split the long axis into two",
        _dimension_limits,
    ),
    Rule(
        "negative-infinity",
        "no -inf constant reaches a softmax (the ANE mishandles -inf)",
        "warning",
        (APPLE_NE_RULES,),
        "mask with -40000 (finite in fp16, exp() still 0) instead of -inf or -1e9",
        _negative_infinity,
    ),
    Rule(
        "reported-fallback",
        "no op on the reported fallback list: custom, RNN, gather, dilation > 3, pooling with "
        "kernel > 13 or a stride above 2 other than 4, upsampling > 2x",
        "warning",
        (HOLLANCE, APPLE_NE_RULES),
        "replace the op (dilations of 2 and 3 and pooling stride 4 are left out of the 2020 "
        "list: Apple's 2026 rules recommend them)",
        _reported_fallback,
    ),
    Rule(
        "last-axis-padding",
        "last axes fill whole 64-byte rows (bytes lost per op and per stage)",
        "cost",
        (APPLE_2022, APPLE_2024, APPLE_NE_RULES),
        "put an axis of a multiple of 32 fp16 values last, e.g. (B, C, 1, H*W) or NHWC windows",
        _last_axis_padding,
    ),
    Rule(
        "singleton-last-axis",
        "no tensor has a last axis of 1 (32x in fp16, 64x in 8 bits)",
        "cost",
        (APPLE_NE_RULES, APPLE_2022),
        "move the long axis last: (B, C, 1, S), not (B*S, C, 1, 1)",
        _singleton_last_axis,
    ),
    Rule(
        "last-axis-layout",
        "no transpose or reshape rewrites the last axis",
        "cost",
        (APPLE_NE_RULES, APPLE_2022),
        "keep one layout from end to end; transpose once, not per head",
        _last_axis_layout,
    ),
    Rule(
        "softmax-axis",
        "softmax runs over channels, not over a spatial axis (the last two)",
        "cost",
        (APPLE_NE_RULES,),
        "lay the normalised axis out as channels: (B, keys, 1, queries), softmax(dim=1)",
        _softmax_axis,
    ),
    Rule(
        "conv-stride",
        "conv strides have only 2 and 3 as prime factors; no unequal strides both above 2",
        "cost",
        (APPLE_NE_RULES,),
        "use strides such as 2, 3, 4, 6, 8, 9, 12, 16; equal, or one of them 2",
        _conv_stride,
    ),
    Rule(
        "pool-stride",
        "pooling strides are 2 or 4",
        "cost",
        (APPLE_NE_RULES,),
        "pool with stride 2 or 4",
        _pool_stride,
    ),
    Rule(
        "large-kernel",
        f"conv kernels are at most {LARGE_KERNEL} wide",
        "cost",
        (APPLE_NE_RULES,),
        "decompose into consecutive smaller kernels (k = k1 + k2 - 1; retrain)",
        _large_kernel,
    ),
    Rule(
        "large-dilation",
        f"conv dilations are at most {LARGE_DILATION}",
        "cost",
        (APPLE_NE_RULES,),
        "factor into chains of dilations 2 and 3 (retrain)",
        _large_dilation,
    ),
    Rule(
        "linear-layer",
        "projections are 1x1 convolutions, not linear layers",
        "cost",
        (APPLE_2022, APPLE_NE_RULES),
        "nn.Linear -> nn.Conv2d(kernel_size=1) on (B, C, 1, S)",
        _linear_layer,
    ),
)
"""The rule table, worst severity first."""

_BY_ID = {r.id: r for r in RULES}
assert len(_BY_ID) == len(RULES), "rule ids must be unique"


def rule(rule_id: str) -> Rule:
    """The rule with id ``rule_id`` (e.g. ``"rank"``); ValueError naming the known ids."""
    try:
        return _BY_ID[rule_id]
    except KeyError:
        raise ValueError(f"rule_id must be one of {sorted(_BY_ID)}, got {rule_id!r}") from None

"""The report: the rule table applied to a program, and the views the book and the CLI read.

:func:`analyse` runs every rule of :data:`~ane_lib.ane_rules.rules.RULES` over a
:class:`~ane_lib.ane_rules.graph.Graph` and returns a :class:`Report`: the findings of each
rule, plus the sums the rules do not need one by one (op histogram, layout ops, activation bytes
real and padded, per op, per stage and per op type). ``str(report)`` is the text table
(:mod:`ane_lib.ane_rules.text`), ``report.to_dict()`` the same as JSON-able builtins, and
``report.failed(...)`` what the command line turns into its exit status.

Activation bytes count the outputs of every op that computes (not constants, not the program's
inputs), each with its last axis padded to 64 bytes (:mod:`ane_lib.functional.alignment`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ane_lib._checks import check_choice, check_positive_int
from ane_lib.ane_rules.graph import Graph, Op, PaddedBytes, Shape
from ane_lib.ane_rules.rules import (
    LAYOUT_OP_TYPES,
    RULES,
    SEVERITIES,
    Finding,
    Rule,
    Severity,
)

__all__ = ["StagePadding", "Report", "analyse", "default_stage_key"]


@dataclass(frozen=True)
class StagePadding(PaddedBytes):
    """Activation bytes of a group of ops: real, padded to 64-byte rows, and the number of ops."""

    real_bytes: int
    padded_bytes: int
    ops: int


def default_stage_key(op: Op) -> str:
    """The stage of an op, from its PyTorch module path (:func:`~ane_lib.ane_rules.stage_of`)."""
    return op.stage


def analyse(graph: Graph, rules: Sequence[Rule] = RULES) -> Report:
    """Apply ``rules`` (default: the whole table) to ``graph`` and return the :class:`Report`."""
    if not isinstance(graph, Graph):
        raise TypeError(f"graph must be an ane_lib.ane_rules.Graph, got {type(graph).__name__}")
    rules = tuple(rules)
    for r in rules:
        if not isinstance(r, Rule):
            raise TypeError(f"rules must hold Rule objects, got {type(r).__name__}")
    return Report(graph, {r.id: r(graph) for r in rules}, rules)


@dataclass(frozen=True)
class Report:
    """What the rules found in one program; ``print(report)`` shows it, ``to_dict()`` is JSON.

    ``graph``: the program as the rules saw it. ``findings``: rule id -> the places where that
    rule fires (empty when it holds). ``rules``: the rules applied, in table order.
    """

    graph: Graph
    findings: Mapping[str, tuple[Finding, ...]]
    rules: tuple[Rule, ...] = RULES

    # ----------------------------------------------------------------- the program

    @property
    def source(self) -> str:
        return self.graph.source

    @property
    def ops(self) -> list[Op]:
        """Every op that computes, in program order."""
        return list(self.graph.ops)

    @property
    def inputs(self) -> dict[str, tuple[Shape, str]]:
        """Program inputs: name -> (shape, dtype)."""
        return {v.name: (v.shape, v.dtype) for v in self.graph.inputs}

    @property
    def outputs(self) -> dict[str, tuple[Shape, str]]:
        """Program outputs: name -> (shape, dtype)."""
        return {v.name: (v.shape, v.dtype) for v in self.graph.outputs}

    @property
    def const_count(self) -> int:
        return self.graph.weights.const_count

    @property
    def weight_bytes(self) -> int:
        return self.graph.weights.weight_bytes

    @property
    def weight_tensors(self) -> int:
        return self.graph.weights.weight_tensors

    @property
    def other_const_bytes(self) -> int:
        return self.graph.weights.other_bytes

    @property
    def module_coverage(self) -> tuple[int, int]:
        """(ops with a known PyTorch module path, all ops)."""
        known = sum(op.module is not None for op in self.graph.ops)
        return known, len(self.graph.ops)

    # ----------------------------------------------------------------- rules

    def rule_findings(self, rule_id: str) -> tuple[Finding, ...]:
        """The findings of one rule; ValueError if the rule was not applied."""
        if rule_id not in self.findings:
            raise ValueError(f"rule_id must be one of {sorted(self.findings)}, got {rule_id!r}")
        return self.findings[rule_id]

    def fired(self, severity: Severity | None = None) -> list[Rule]:
        """The rules that fire, in table order; only those of ``severity`` if given."""
        if severity is not None:
            check_choice("severity", severity, SEVERITIES)
        return [
            r
            for r in self.rules
            if self.findings.get(r.id) and (severity is None or r.severity == severity)
        ]

    def failed(self, fail_on: Severity = "warning") -> bool:
        """True when a rule of severity ``fail_on`` or worse fires (what the CLI exits 1 on)."""
        check_choice("fail_on", fail_on, SEVERITIES)
        worst = SEVERITIES[: SEVERITIES.index(fail_on) + 1]
        return any(r.severity in worst for r in self.fired())

    @property
    def ok(self) -> bool:
        """True when no rule of severity ``error`` or ``warning`` fires (costs are allowed)."""
        return not self.failed("warning")

    def problems(self) -> list[str]:
        """One line per error or warning rule that fires: ``"fp32 (warning): 3 ops"``."""
        return [
            f"{r.id} ({r.severity}): {_count(len(self.findings[r.id]), 'finding')} - {r.title}"
            for r in self.fired()
            if r.severity != "cost"
        ]

    def _ops_of(self, rule_id: str) -> list[Op]:
        seen: dict[int, Op] = {}
        for f in self.findings.get(rule_id, ()):
            if f.op is not None:
                seen.setdefault(id(f.op), f.op)
        return list(seen.values())

    @property
    def high_rank_ops(self) -> list[Op]:
        """Ops with an output of rank above 5 (rule ``rank``)."""
        return self._ops_of("rank")

    @property
    def large_dim_ops(self) -> list[Op]:
        """Ops with an axis above the reported size limits (rule ``dimension-limits``)."""
        return self._ops_of("dimension-limits")

    @property
    def fallback_ops(self) -> list[Op]:
        """Ops on the reported fallback list (rule ``reported-fallback``)."""
        return self._ops_of("reported-fallback")

    @property
    def fp32_ops(self) -> list[Op]:
        """Ops computing in fp32, except the casts at the program's inputs and outputs."""
        return [op for op in self.graph.ops if op.is_fp32]

    @property
    def boundary_casts(self) -> list[Op]:
        return [op for op in self.graph.ops if op.boundary_cast]

    # ----------------------------------------------------------------- layout and bytes

    @property
    def op_histogram(self) -> dict[str, int]:
        """Op type -> count, most frequent first (constants not included)."""
        return dict(Counter(op.op_type for op in self.graph.ops).most_common())

    @property
    def layout_op_counts(self) -> dict[str, int]:
        """Count of each layout op type (``transpose``, ``reshape``)."""
        hist = Counter(op.op_type for op in self.graph.ops)
        return {t: hist.get(t, 0) for t in LAYOUT_OP_TYPES}

    @property
    def layout_ops(self) -> int:
        """Number of transposes and reshapes."""
        return sum(self.layout_op_counts.values())

    @property
    def last_axis_layout_ops(self) -> list[Op]:
        """The transposes and reshapes that rewrite the last axis (rule ``last-axis-layout``)."""
        return self._ops_of("last-axis-layout")

    @property
    def max_rank(self) -> int:
        return max((op.rank for op in self.graph.ops), default=0)

    @property
    def activation_real_bytes(self) -> int:
        return sum(op.real_bytes for op in self.graph.ops)

    @property
    def activation_padded_bytes(self) -> int:
        return sum(op.padded_bytes for op in self.graph.ops)

    @property
    def padding_overhead(self) -> float:
        """Total padded over total real activation bytes (1.0 for an empty program)."""
        real = self.activation_real_bytes
        return self.activation_padded_bytes / real if real else 1.0

    def worst_padding(self, k: int = 10) -> list[Op]:
        """The ``k`` ops that lose most bytes to last-axis padding, worst first."""
        check_positive_int("k", k)
        wasteful = [op for op in self.graph.ops if op.wasted_bytes > 0]
        return sorted(wasteful, key=lambda op: op.wasted_bytes, reverse=True)[:k]

    def padding_by_stage(
        self, key: Callable[[Op], str] = default_stage_key
    ) -> dict[str, StagePadding]:
        """Activation bytes grouped by ``key(op)`` (default: the stage of its module path).

        Groups appear in program order of their first op.
        """
        if not callable(key):
            raise TypeError(f"key must be a callable Op -> str, got {key!r}")
        totals: dict[str, list[int]] = {}
        for op in self.graph.ops:
            t = totals.setdefault(str(key(op)), [0, 0, 0])
            t[0] += op.real_bytes
            t[1] += op.padded_bytes
            t[2] += 1
        return {s: StagePadding(*t) for s, t in totals.items()}

    def padding_by_op_type(self) -> dict[str, StagePadding]:
        """Activation bytes per op type, the type losing most bytes first."""
        groups = self.padding_by_stage(lambda op: op.op_type)
        return dict(sorted(groups.items(), key=lambda kv: kv[1].wasted_bytes, reverse=True))

    # ----------------------------------------------------------------- output

    def to_dict(self, *, top: int = 10) -> dict[str, Any]:
        """Everything as JSON-able builtins (``json.dumps`` works on the result)."""
        check_positive_int("top", top)
        known, total = self.module_coverage
        return {
            "source": self.source,
            "backend": self.graph.backend,
            "ok": self.ok,
            "problems": self.problems(),
            "inputs": {n: {"shape": list(s), "dtype": d} for n, (s, d) in self.inputs.items()},
            "outputs": {n: {"shape": list(s), "dtype": d} for n, (s, d) in self.outputs.items()},
            "module_paths": {
                "recorded": self.graph.module_paths,
                "ops_with_module": known,
                "ops": total,
            },
            "unanalysed": [
                {"name": n, "op_type": t, "reason": why} for n, t, why in self.graph.unanalysed
            ],
            "rules": [_rule_dict(r, self.findings.get(r.id, ())) for r in self.rules],
            "ops": total,
            "const_ops": self.const_count,
            "op_histogram": self.op_histogram,
            "layout_ops": self.layout_ops,
            "layout_op_counts": self.layout_op_counts,
            "last_axis_layout_ops": len(self.last_axis_layout_ops),
            "max_rank": self.max_rank,
            "activation_real_bytes": self.activation_real_bytes,
            "activation_padded_bytes": self.activation_padded_bytes,
            "padding_overhead": self.padding_overhead,
            "padding_by_stage": _groups_dict(self.padding_by_stage()),
            "padding_by_op_type": _groups_dict(self.padding_by_op_type()),
            "worst_padding": [op_dict(op) for op in self.worst_padding(top)],
            "weight_bytes": self.weight_bytes,
            "weight_tensors": self.weight_tensors,
            "other_const_bytes": self.other_const_bytes,
            "op_records": [op_dict(op) for op in self.graph.ops],
        }

    def format(self, *, top: int = 10, per_rule: int = 5, width: int = 79) -> str:
        """The text table; ``top`` rows of the worst ops, ``per_rule`` findings per rule."""
        from ane_lib.ane_rules.text import format_report

        return format_report(self, top=top, per_rule=per_rule, width=width)

    def __str__(self) -> str:
        return self.format()


def op_dict(op: Op) -> dict[str, Any]:
    """One op as JSON-able builtins."""
    return {
        "name": op.name,
        "op_type": op.op_type,
        "module": op.module,
        "module_type": op.module_type,
        "stage": op.stage,
        "shapes": [list(s) for s in op.shapes],
        "dtypes": list(op.dtypes),
        "real_bytes": op.real_bytes,
        "padded_bytes": op.padded_bytes,
    }


def _rule_dict(r: Rule, findings: Sequence[Finding]) -> dict[str, Any]:
    return {
        "id": r.id,
        "title": r.title,
        "severity": r.severity,
        "sources": [
            {
                "title": s.title,
                "short": s.short,
                "url": s.url,
                "cite": s.cite,
                "official": s.official,
            }
            for s in r.sources
        ],
        "advice": r.advice,
        "fired": len(findings),
        "bytes_lost": sum(f.bytes_lost for f in findings),
        "findings": [
            {
                "op": f.op.name if f.op is not None else None,
                "op_type": f.op.op_type if f.op is not None else None,
                "module": f.op.module if f.op is not None else None,
                "message": f.message,
                "bytes_lost": f.bytes_lost,
            }
            for f in findings
        ],
    }


def _groups_dict(groups: Mapping[str, StagePadding]) -> dict[str, dict[str, int]]:
    return {
        k: {"real_bytes": g.real_bytes, "padded_bytes": g.padded_bytes, "ops": g.ops}
        for k, g in groups.items()
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"

"""The report as text: a summary, the rule table with its sources, findings, and byte tables.

Lines are kept within ``width`` columns (79 by default, what the book's code column holds): long
module paths are shortened in the middle, long sentences are wrapped.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ane_lib.ane_rules.rules import fmt_shape

if TYPE_CHECKING:
    from ane_lib.ane_rules.report import Report, StagePadding

__all__ = ["format_report", "format_bytes", "format_rules"]

_STATUS = {"error": "!! error", "warning": "!! warning", "cost": "cost"}


def format_bytes(n: float) -> str:
    """``512 B``, ``1.5 KiB``, ``93.7 MiB``, ``1.2 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _elide(text: str, limit: int) -> str:
    """``text`` shortened in the middle to at most ``limit`` characters."""
    if len(text) <= limit or limit < 5:
        return text
    head = (limit - 3) // 2
    return text[:head] + "..." + text[len(text) - (limit - 3 - head) :]


def _table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    width: int,
    right: Sequence[int] = (),
    indent: str = "  ",
) -> list[str]:
    """Columns separated by two spaces; column 0 is elided if the table is wider than width."""
    cols = len(header)
    widths = [max([len(header[i])] + [len(r[i]) for r in rows]) for i in range(cols)]
    excess = len(indent) + sum(widths) + 2 * (cols - 1) - width
    if excess > 0:
        widths[0] = max(len(header[0]), widths[0] - excess)
    rows = [[_elide(r[0], widths[0]), *r[1:]] for r in rows]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return (indent + "  ".join(parts)).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _wrap(text: str, width: int, first: str, rest: str) -> list[str]:
    return textwrap.wrap(text, width=width, initial_indent=first, subsequent_indent=rest) or [
        first.rstrip()
    ]


def _rules(n: int) -> str:
    return f"{n} rule" if n == 1 else f"{n} rules"


def format_rules(report: Report, *, width: int = 79) -> list[str]:
    """The rule table: each rule, its severity, how many findings, and its sources."""
    fired = report.fired()
    errors = sum(r.severity != "cost" for r in fired)
    costs = len(fired) - errors
    verdict = "ok" if not errors else "NOT ok"
    lines = _wrap(
        f"Rules: {verdict}. {_rules(errors)} of severity error or warning and {_rules(costs)} "
        "of severity cost fire (error: it does not convert or compile; warning: it leaves the "
        "Neural Engine or computes wrongly there; cost: it runs there, but wastes memory or "
        "time).",
        width,
        "",
        "",
    )
    rows = []
    for r in report.rules:
        found = report.findings.get(r.id, ())
        lost = sum(f.bytes_lost for f in found)
        result = "ok" if not found else _STATUS[r.severity]
        if found and lost:
            result += f", {format_bytes(lost)} lost"
        rows.append([r.id, r.severity, str(len(found)), result])
    lines += _table(["rule", "severity", "found", "result"], rows, width=width, right=(2,))
    lines += ["", "What each rule checks, and who says so"]
    for r in report.rules:
        lines += _wrap(r.title, width, f"  {r.id}: ", "      ")
        lines += _wrap(r.source_text, width, "      source: ", "        ")
    return lines


def _findings(report: Report, per_rule: int, width: int) -> list[str]:
    lines: list[str] = []
    for r in report.fired():
        found = report.findings[r.id]
        if r.id == "last-axis-padding":  # the worst first; the table below has the rest
            found = tuple(sorted(found, key=lambda f: f.bytes_lost, reverse=True))
        lines += ["", *_wrap(f"{r.id} ({r.severity}): {len(found)}", width, "", "  ")]
        lines += _wrap(f"fix: {r.advice}", width, "  ", "    ")
        for f in found[:per_rule]:
            what = f"{f.where} ({f.op.op_type})" if f.op is not None else f.where
            lines += _wrap(what, width, "    ", "      ")
            lines += _wrap(f.message, width, "      ", "        ")
        if len(found) > per_rule:
            lines.append(f"    ... and {len(found) - per_rule} more")
    return lines


def _groups(groups: Mapping[str, StagePadding], title: str, width: int) -> list[str]:
    rows = [
        [
            name,
            str(g.ops),
            format_bytes(g.real_bytes),
            format_bytes(g.padded_bytes),
            f"{g.overhead:.2f}",
            format_bytes(g.wasted_bytes),
        ]
        for name, g in groups.items()
    ]
    header = [title, "ops", "real", "padded", "x", "lost"]
    return _table(header, rows, width=width, right=(1, 2, 3, 4, 5))


def format_report(report: Report, *, top: int = 10, per_rule: int = 5, width: int = 79) -> str:
    """The whole report as text (what ``str(report)`` and ``ane-lib report`` print)."""
    g = report.graph
    known, total = report.module_coverage
    lines = [f"ANE report: {g.source}"]
    if g.module_paths:
        paths = f"PyTorch module paths recorded at export ({known} of {total} ops)"
    else:
        paths = "PyTorch module paths unknown (not recorded when this program was exported)"
    lines += _wrap(f"{g.backend + '; ' if g.backend else ''}{paths}", width, "", "  ")
    for kind, values in (("input", g.inputs), ("output", g.outputs)):
        for v in values:
            lines += _wrap(f"{kind} {v.name}: {fmt_shape(v.shape)} {v.dtype}", width, "  ", "    ")
    counts = ", ".join(f"{t} {n}" for t, n in report.layout_op_counts.items())
    summary = [
        f"ops: {total} (+ {report.const_count} const); max rank {report.max_rank}",
        f"layout ops: {report.layout_ops} ({counts}); "
        f"{len(report.last_axis_layout_ops)} rewrite the last axis",
        f"activations: {format_bytes(report.activation_real_bytes)} real, "
        f"{format_bytes(report.activation_padded_bytes)} in 64-byte rows "
        f"({report.padding_overhead:.3f}x)",
        f"weights: {format_bytes(report.weight_bytes)} in {report.weight_tensors} tensors "
        f"(+ {format_bytes(report.other_const_bytes)} other constants)",
    ]
    for item in summary:
        lines += _wrap(item, width, "  ", "    ")
    if not g.ops:
        lines.append("  the program has no ops to analyse")
    for note in g.notes:
        lines += _wrap(note, width, "  ", "    ")
    for name, op_type, why in g.unanalysed:
        lines += _wrap(f"not analysed: {name} ({op_type}): {why}", width, "  ", "    ")
    lines += ["", *format_rules(report, width=width)]
    findings = _findings(report, per_rule, width)
    if findings:
        lines += ["", f"Findings (at most {per_rule} per rule)", *findings]
    if g.ops:
        lines += ["", "Activation bytes by stage (from the module paths)"]
        lines += _groups(report.padding_by_stage(), "stage", width)
        lines += ["", "Activation bytes by op type, most lost first"]
        lines += _groups(report.padding_by_op_type(), "op type", width)
        worst = report.worst_padding(top)
        if worst:
            lines += ["", f"Ops losing most bytes to the 64-byte rows (top {len(worst)})"]
            rows = [
                [
                    op.where,
                    op.op_type,
                    fmt_shape(op.shapes[0]) if op.shapes else "-",
                    f"{op.overhead:.2f}",
                    format_bytes(op.wasted_bytes),
                ]
                for op in worst
            ]
            lines += _table(["module", "op", "shape", "x", "lost"], rows, width=width, right=(3, 4))
    lines += ["", "Op histogram"]
    lines += _wrap(
        ", ".join(f"{t} {n}" for t, n in report.op_histogram.items()) or "(no ops)",
        width,
        "  ",
        "  ",
    )
    return "\n".join(lines)

"""How much of Core ML's op set the executor runs, by coremltools' op families.

The op set is coremltools' registry of MIL ops (``SSAOpRegistry``): every core op that a saved
ML program may hold, with ``coreml_update_state`` (a ``coreml`` dialect op that is saved as is),
and without the internal ``_const_symbolic`` and the ``complex`` and ``torch`` dialect ops,
which coremltools lowers before it saves a program. An op's family is the coremltools module
that defines its latest version (``constexpr_ops`` counted as ``compression``,
``quantization_ops`` as ``quantization``).

``python -m ane_lib.coreml.executor --coverage [--json]`` prints these figures and the number
of conformance tests (collected from ``tests/conformance`` when run from a checkout).
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ane_lib.coreml.ops import DECLINED, REGISTRY

__all__ = [
    "Coverage",
    "FamilyCoverage",
    "conformance_test_count",
    "coremltools_families",
    "coverage",
]

_FAMILY_ALIASES = {
    "constexpr_ops": "compression",
    "quantization_ops": "quantization",
    "ops": "states",
}
_DIALECT_OPS = ("coreml_update_state",)


def coremltools_families() -> dict[str, str]:
    """``{op type: family}`` for every op a saved ML program may hold (see the module)."""
    from ane_lib.coreml.program import import_coremltools

    import_coremltools()
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    families: dict[str, str] = {}
    for name, versions in SSAOpRegistry.core_ops.items():
        if name.startswith("_"):
            continue
        latest = versions[max(versions)]
        module = latest.__module__.rsplit(".", 1)[-1]
        families[name] = _FAMILY_ALIASES.get(module, module)
    for name in _DIALECT_OPS:
        cls = SSAOpRegistry.dialect_ops[name]
        module = cls.__module__.rsplit(".", 1)[-1]
        families[name] = _FAMILY_ALIASES.get(module, module)
    return families


@dataclass(frozen=True)
class FamilyCoverage:
    """One coremltools op family: its op types and which of them the executor runs."""

    family: str
    ops: tuple[str, ...]
    implemented: tuple[str, ...]
    declined: tuple[str, ...]
    missing: tuple[str, ...]

    @property
    def share(self) -> float:
        return len(self.implemented) / len(self.ops) if self.ops else 1.0


@dataclass(frozen=True)
class Coverage:
    """The executor's op coverage: per family, and over all of Core ML's op types."""

    families: tuple[FamilyCoverage, ...]
    conformance_tests: int | None = None

    @property
    def total(self) -> int:
        return sum(len(f.ops) for f in self.families)

    @property
    def implemented(self) -> tuple[str, ...]:
        return tuple(op for f in self.families for op in f.implemented)

    @property
    def declined(self) -> tuple[str, ...]:
        return tuple(op for f in self.families for op in f.declined)

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(op for f in self.families for op in f.missing)

    def to_dict(self) -> dict[str, Any]:
        return {
            "op_types": self.total,
            "implemented": len(self.implemented),
            "declined": {op: DECLINED[op].reason for op in self.declined},
            "missing": list(self.missing),
            "conformance_tests": self.conformance_tests,
            "families": [dataclasses.asdict(f) | {"share": f.share} for f in self.families],
        }

    def __str__(self) -> str:
        lines = [
            f"Core ML op types (coremltools' registry): {self.total}; the executor runs "
            f"{len(self.implemented)} ({len(self.implemented) / self.total:.0%}), declines "
            f"{len(self.declined)}, lacks {len(self.missing)}",
            f"{'family':<24}{'ops':>5}{'run':>6}{'declined':>10}   missing",
        ]
        for f in self.families:
            missing = textwrap.wrap(", ".join(f.missing) or "-", 52)
            counts = f"{len(f.ops):>5}{len(f.implemented):>6}{len(f.declined):>10}"
            lines.append(f"{f.family:<24}{counts}   {missing[0]}")
            lines.extend(f"{'':<48}{more}" for more in missing[1:])
        for op in self.declined:
            lines.extend(textwrap.wrap(f"declined: {op}: {DECLINED[op].reason}", 79))
        tests = (
            "not found (they live in the repository's tests/conformance)"
            if self.conformance_tests is None
            else str(self.conformance_tests)
        )
        lines.append(f"conformance tests: {tests}")
        return "\n".join(lines)


def conformance_test_count(directory: Path | None = None) -> int | None:
    """The number of tests pytest collects in ``tests/conformance`` of this checkout (None when
    the directory or pytest is not there, e.g. for an installed package)."""
    directory = directory or Path(__file__).resolve().parents[3] / "tests" / "conformance"
    if not directory.is_dir():
        return None
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            str(directory),
        ],
        capture_output=True,
        text=True,
        cwd=directory.parents[1],
        check=False,
    )
    match = re.search(r"(\d+) tests? collected", done.stdout)
    return int(match.group(1)) if match else None


def coverage(*, count_tests: bool = False) -> Coverage:
    """The executor's coverage of Core ML's op types (and, with ``count_tests``, the number of
    conformance tests)."""
    by_family: dict[str, list[str]] = {}
    for op, family in coremltools_families().items():
        by_family.setdefault(family, []).append(op)
    families = []
    for family in sorted(by_family):
        ops = tuple(sorted(by_family[family]))
        families.append(
            FamilyCoverage(
                family=family,
                ops=ops,
                implemented=tuple(op for op in ops if op in REGISTRY),
                declined=tuple(op for op in ops if op in DECLINED),
                missing=tuple(op for op in ops if op not in REGISTRY and op not in DECLINED),
            )
        )
    return Coverage(tuple(families), conformance_test_count() if count_tests else None)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m ane_lib.coreml.executor",
        description="The reference executor's coverage of Core ML's op types.",
    )
    parser.add_argument("--coverage", action="store_true", help="print the op coverage")
    parser.add_argument("--json", action="store_true", help="print it as JSON")
    args = parser.parse_args(argv)
    if not args.coverage:
        parser.print_help()
        return 2
    report = coverage(count_tests=True)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    return 0

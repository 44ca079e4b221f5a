"""Chapter 5 quotes the figures of benchmarks/bench_layouts.py for the layout variants it does
not export itself (the page checks its baseline against its own export): this keeps the quote
true, variant by variant, against a fresh run of the benchmark's measurement."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from _benchmarks import load_benchmark

CHAPTER = Path(__file__).resolve().parent.parent / "chapters" / "05_alignment_padding.md"


def _quoted() -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """The chapter's MEASURED and FIRES_WARNING dictionaries, read from its source."""
    lines = CHAPTER.read_text().splitlines()
    found = {}
    for name in ("MEASURED", "FIRES_WARNING"):
        start = next(i for i, line in enumerate(lines) if line.startswith(f"{name} = {{"))
        for end in range(start + 1, len(lines) + 1):  # the shortest literal that parses
            try:
                found[name] = ast.literal_eval("\n".join(lines[start:end]).split(" = ", 1)[1])
                break
            except SyntaxError:
                continue
    return found["MEASURED"], found["FIRES_WARNING"]


@pytest.mark.parametrize("variant", ["lepe-flat", "dw-flat"])
def test_chapter_5_quotes_the_benchmark(variant: str, tmp_path: Path) -> None:
    measured, fires_warning = _quoted()
    bench = load_benchmark("bench_layouts")
    got = bench.measure(variant, 256, tmp_path)
    assert got["max |diff| vs baseline (float64)"] < 1e-12  # the same function
    assert measured[variant] == (
        got["ops"],
        got["layout ops"],
        got["touch last axis"],
        got["real bytes"],
        got["padded bytes"],
    )
    assert not got["ok"] and "reported-fallback" in got["rules fired"]
    assert fires_warning[variant].startswith("reported-fallback")

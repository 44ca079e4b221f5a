"""benchmarks/bench_zoo.py: two tiny models (one that exports, one that does not) as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _benchmarks import load_benchmark

pytest.importorskip("transformers")


def test_tiny_run_as_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bench = load_benchmark("bench_zoo")
    argv = ["--tiny", "--models", "convnext_tiny,hiera_base", "--samples", "1"]
    assert bench.main([*argv, "--json", "--keep", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in out["rows"]}
    assert rows["convnext_tiny"]["exported"] and rows["convnext_tiny"]["psnr_db"] > 50
    assert not rows["hiera_base"]["exported"] and rows["hiera_base"]["stage"] == "export"
    summary = out["summary"]
    assert (summary["models"], summary["exported"]) == (2, 1)
    assert "hiera_base" in summary["not_exported"]
    assert summary["op_types"] and summary["op_types_the_executor_lacks"] == []
    assert (tmp_path / "convnext_tiny.mlpackage").is_dir()
    empty = bench.summary([], 0.0)
    assert empty["models"] == 0 and empty["median_psnr_db"] is None


def test_unknown_model_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        load_benchmark("bench_zoo").main(["--models", "no_such_model"])
    assert "no_such_model" in capsys.readouterr().err

"""benchmarks/bench_digits.py: a short run (one epoch, three test images) prints sound JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_digits.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_digits", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_short_run_prints_the_figures_as_json(capsys: pytest.CaptureFixture) -> None:
    bench = _load()
    assert bench.main(["--json", "--epochs", "1", "--images", "3", "--no-w8a8"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["epochs"] == 1 and figures["test_images"] == 3
    assert not figures["train_from_cache"] and figures["train_seconds"] > 0
    assert 0.0 <= figures["torch_test_accuracy"] <= 1.0
    variants = figures["variants"]
    assert list(variants) == ["fp16", "int8", "palettize6", "palettize4"]
    assert variants["fp16"]["agreement_fp16"] == 1.0
    sizes = [v["weight_bytes"] for v in variants.values()]
    assert sizes == sorted(sizes, reverse=True)  # fewer bits, fewer bytes
    for v in variants.values():
        assert v["package_bytes"] > v["weight_bytes"] > 0
        assert 0.0 <= v["accuracy"] <= 1.0 and v["executor_ms_per_image"] > 0
        assert v["psnr_db_vs_torch"] > 20


def test_table_and_bad_arguments(capsys: pytest.CaptureFixture) -> None:
    bench = _load()
    figures = {
        "epochs": 1, "train_seconds": 1.0, "train_from_cache": True,
        "torch_test_accuracy": 0.5, "export_seconds": 2.0, "test_images": 3,
        "variants": {"fp16": {
            "package_bytes": 2048, "weight_bytes": 1024, "accuracy": 1.0,
            "agreement_fp16": 1.0, "agreement_torch": 1.0, "psnr_db_vs_torch": 70.0,
            "executor_ms_per_image": 10.0,
        }},
    }  # fmt: skip
    bench.print_table(figures)
    out = capsys.readouterr().out
    assert "trained 1 epochs in 1.0 s (cached)" in out and "fp16" in out and "70.0" in out
    with pytest.raises(SystemExit):
        bench.main(["--images", "0"])
    assert "--images must be >= 1" in capsys.readouterr().err

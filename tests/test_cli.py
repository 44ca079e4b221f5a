"""Tests for the ``ane-lib`` command: every subcommand's exit status 0 / 1 / 2 and its output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ane_lib.cli import main
from ane_lib.coreml import export, package_io, read_export_metadata
from ane_lib.models import list_models, option_choices

# A small registered model keeps the real export + verify round trips fast.
MODEL = ["tiny_moat_0", "--image-size", "64", "--attention", "global", "--num-classes", "10"]
# The installed console script when there is one (editable install), else the module.
_SCRIPT = Path(sys.executable).parent / "ane-lib"
CLI = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "ane_lib.cli"]


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


class Scale(nn.Module):
    """x: (1, 1, N) -> 2 x; with N > 16384 the report fails hard."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "m.mlpackage"
    assert main(["export", *MODEL, "--seed", "3", "-o", str(out), "--quiet"]) == 0
    return out


# --------------------------------------------------------------------------- usage (exit 2)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "the following arguments are required: command"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["export", "tiny_moat_0"], "the following arguments are required: -o/--output"),
        (["export", "tiny_moat_0", "-o", "x.mlpackage", "--window", "two"], "invalid int"),
        (["report"], "the following arguments are required: path"),
        (["verify", "x.mlpackage", "--precision", "int4"], "invalid choice: 'int4'"),
    ],
)
def test_bad_usage_is_one_line_exit_2(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    line = one_line_error(capsys.readouterr().err)
    assert expected in line and line.startswith("ane-lib")


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "export" in capsys.readouterr().out


def test_export_help_reads_the_registry_and_says_the_default_form(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["export", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: ane)" in text
    for name in list_models():
        assert name in text
    for choice in (*option_choices("pe"), *option_choices("attention")):
        assert choice in text


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["export", "no_such_model", "-o", "{tmp}/a.mlpackage"], "unknown model 'no_such_model'"),
        (["export", *MODEL, "-o", "{tmp}/a.onnx"], "must end in .mlpackage"),
        (["export", *MODEL, "--window", "0", "-o", "{tmp}/a.mlpackage"], "--window must be >= 1"),
        (["export", *MODEL, "--seed", "-1", "-o", "{tmp}/a.mlpackage"], "--seed must be >= 0"),
        (["export", "tiny_moat_0", "--image-size", "50", "-o", "{tmp}/a.mlpackage"], "image_size"),
        (["export", *MODEL, "--weights", "{tmp}/none.pt", "-o", "{tmp}/a.mlpackage"], "not a file"),
        (["report", "{tmp}/missing.mlpackage"], "does not exist"),
        (["report", "{tmp}/model.onnx"], "must be a Core ML package ending in .mlpackage"),
        (["verify", "{tmp}/missing.mlpackage"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    tmp_path: Path, argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    assert expected in one_line_error(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_console_script_error_has_no_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [*CLI, "report", str(tmp_path / "missing.mlpackage")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "does not exist" in one_line_error(done.stderr)
    assert done.stdout == ""


# --------------------------------------------------------------------------- export


def test_export_records_model_options_and_seed(exported: Path) -> None:
    meta = read_export_metadata(exported)
    assert meta["model"] == "tiny_moat_0"
    # the Neural Engine's form unless told otherwise, recorded with the options given
    assert meta["create_options"] == {
        "form": "ane",
        "image_size": 64,
        "attention": "global",
        "num_classes": 10,
    }
    assert meta["weights"] == {"seed": 3}
    assert meta["options"]["num_classes"] == 10  # the model's own config
    info = package_io(exported)
    assert info.inputs[0].name == "image" and info.inputs[0].shape == (1, 3, 64, 64)
    assert info.outputs[0].name == "logits" and info.outputs[0].shape == (1, 10)


# --------------------------------------------------------------------------- report


def test_report_exit_0_text_and_json(exported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(exported)]) == 0
    text = capsys.readouterr().out
    assert "rank" in text and str(exported) in text
    assert main(["report", str(exported), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert isinstance(data, dict) and data


def test_report_exit_1_on_a_dimension_above_16384(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wide = export(Scale(), (1, 1, 20000), tmp_path / "wide.mlpackage")
    assert main(["report", str(wide)]) == 1
    assert "16384" in capsys.readouterr().out


# --------------------------------------------------------------------------- verify


def test_verify_reads_the_recorded_seed(exported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(exported), "--samples", "1"]) == 0
    out = capsys.readouterr().out
    assert "seed 3" in out and "PSNR" in out and out.strip().endswith("PASS")
    assert "executor mode   declared" in out


def test_verify_other_seed_fails_exit_1(exported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(exported), "--samples", "1", "--seed", "4"]) == 1
    assert capsys.readouterr().out.strip().endswith("FAIL")


def test_verify_json_and_threshold(exported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same package, a PSNR threshold no fp16 run can reach: exit 1, figures in JSON."""
    argv = ["verify", str(exported), "--samples", "1", "--json", "--min-psnr", "300"]
    assert main(argv) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] is False and data["model"] == "tiny_moat_0"
    assert data["weights"] == {"seed": 3} and data["min_psnr"] == 300
    assert 40 < data["psnr_db"] < 300 and data["top1_agreement"] == 1.0


def test_verify_bad_options_exit_2(exported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(exported), "--model", "nope"]) == 2
    assert "unknown model 'nope'" in one_line_error(capsys.readouterr().err)
    assert main(["verify", str(exported), "--min-top1", "2"]) == 2
    assert "--min-top1 must be between 0 and 1" in one_line_error(capsys.readouterr().err)


def test_weights_file_and_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Export from a state_dict over an existing package; verify needs the same weights."""
    from ane_lib.models import create_model

    torch.manual_seed(11)
    model = create_model("tiny_moat_0", image_size=64, attention="global", num_classes=10)
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    out = export(Scale(), (1, 1, 8), tmp_path / "w.mlpackage")  # something to overwrite
    argv = ["export", *MODEL, "--weights", str(weights), "-o", str(out)]
    assert main([*argv, "--quiet"]) == 2
    assert "already exists; add --overwrite" in one_line_error(capsys.readouterr().err)
    assert package_io(out).outputs[0].shape == (1, 1, 8)  # untouched
    assert main([*argv, "--overwrite"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out)
    assert "torch.export of tiny_moat_0" in captured.err  # our progress lines...
    assert "%|" not in captured.err  # ...and no progress bars
    assert package_io(out).outputs[0].shape == (1, 10)
    recorded = read_export_metadata(out)["weights"]
    assert recorded["file"] == str(weights) and len(recorded["sha256"]) == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.mlpackage", "w.pt"]
    # verify needs the same weights: without them it says so (exit 2); with them it passes
    assert main(["verify", str(out), "--samples", "1"]) == 2
    assert "pass --weights" in one_line_error(capsys.readouterr().err)
    assert main(["verify", str(out), "--samples", "1", "--weights", str(weights)]) == 0
    capsys.readouterr()
    # a state_dict of another model is refused in one line
    other = tmp_path / "other.pt"
    torch.save({"x": torch.zeros(1)}, other)
    assert main(["verify", str(out), "--weights", str(other)]) == 2
    assert "does not fit tiny_moat_0" in one_line_error(capsys.readouterr().err)


def test_conversion_failure_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model whose graph Core ML rejects (no registered model does): exit 1, one line
    naming the op. The real export and coremltools run; only the model builder is swapped."""
    import ane_lib.cli as cli

    class Unconvertible(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.lgamma(x)

    monkeypatch.setattr(cli, "_build_model", lambda *args, **kwargs: Unconvertible())
    code = main(["export", *MODEL, "-o", str(tmp_path / "u.mlpackage"), "--quiet"])
    assert code == 1
    assert "'lgamma'" in one_line_error(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []

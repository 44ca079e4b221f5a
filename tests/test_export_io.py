"""export / run / verify / report with several named inputs, integer and bool inputs, and
tuple/dict outputs (real coremltools conversions of small models)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _toy_models import Classifier
from torch import nn

from ane_lib.cli import main as cli_main
from ane_lib.coreml import (
    TensorSpec,
    export,
    package_io,
    read_export_metadata,
    report,
    run,
    verify,
)
from ane_lib.coreml.signature import flatten_outputs, sample_inputs

VOCAB, SEQ, DIM = 40, 8, 16


class TinyText(nn.Module):
    """Token ids (B, S) and a 0/1 mask (B, S) -> a dict: logits (B, 3), states (two (B, S, D))."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        self.proj = nn.Linear(DIM, DIM)
        self.head = nn.Linear(DIM, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:  # type: ignore[type-arg]
        keep = attention_mask.to(torch.float32)[..., None]
        x = self.embed(input_ids) * keep
        y = torch.tanh(self.proj(x))
        pooled = (y * keep).sum(1) / keep.sum(1).clamp(min=1)
        return {"logits": self.head(pooled), "states": (x, y)}


class BoolAndLong(nn.Module):
    """int64 ids and a bool padding mask (True = padding) -> a tuple of two tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 4)

    def forward(
        self, ids: torch.Tensor, padding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert ids.dtype == torch.int64 and padding.dtype == torch.bool
        x = self.embed(ids).masked_fill(padding[..., None], 0.0)
        return x.sum(1), x.amax(1)


def tiny_text() -> TinyText:
    """Entry point for ``ane-lib verify --model test_export_io:tiny_text``."""
    torch.manual_seed(0)
    return TinyText().eval()


TEXT_INPUTS = {
    "input_ids": TensorSpec((1, SEQ), torch.int32, high=VOCAB),
    "attention_mask": TensorSpec((1, SEQ), torch.int32, high=2),
}


@pytest.fixture(scope="module")
def text_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(
        tiny_text(), TEXT_INPUTS, tmp_path_factory.mktemp("io") / "text.mlpackage", precision="fp32"
    )


def test_named_inputs_and_dict_outputs(text_package: Path) -> None:
    info = package_io(text_package)
    assert [(t.name, t.shape, t.dtype) for t in info.inputs] == [
        ("input_ids", (1, SEQ), "INT32"),
        ("attention_mask", (1, SEQ), "INT32"),
    ]
    assert [t.name for t in info.outputs] == ["logits", "states_0", "states_1"]
    meta = read_export_metadata(text_package)
    assert meta["inputs"][0] == {
        "name": "input_ids",
        "shape": [1, SEQ],
        "dtype": "int32",
        "low": 0.0,
        "high": VOCAB,
    }
    assert meta["outputs"] == ["logits", "states_0", "states_1"]
    assert "input_shape" not in meta
    # run: integer inputs, every output, equal to PyTorch in fp32
    model = tiny_text()
    sample = sample_inputs(TEXT_INPUTS, 3)
    got = run(text_package, {k: v.numpy() for k, v in sample.items()}, precision="fp32")
    with torch.no_grad():
        expected = flatten_outputs(model(**sample))
    assert list(got) == list(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value.numpy(), rtol=1e-5, atol=1e-5)


def test_verify_per_output_and_over_a_data_set(text_package: Path) -> None:
    model = tiny_text()
    result = verify(text_package, model, precision="fp32", samples=3)
    assert result.samples == 3 and set(result.outputs) == {"logits", "states_0", "states_1"}
    assert result.max_rel_error < 1e-5 and result.top1_agreement == 1.0
    assert result.psnr_db == min(v.psnr_db for v in result.outputs.values())
    assert "states_1:" in str(result)
    # a data set: two sentences, the second padded after 3 tokens
    ids = torch.randint(0, VOCAB, (2, 1, SEQ), dtype=torch.int32)
    masks = torch.ones(2, 1, SEQ, dtype=torch.int32)
    masks[1, 0, 3:] = 0
    data = [{"input_ids": i, "attention_mask": m} for i, m in zip(ids, masks, strict=True)]
    on_data = verify(text_package, model, inputs=data, precision="fp32")
    assert on_data.samples == 2 and on_data.max_rel_error < 1e-5
    # another model's outputs are told apart
    torch.manual_seed(5)
    assert verify(text_package, TinyText().eval(), inputs=data).psnr_db < 30
    with pytest.raises(ValueError, match="either samples .* or inputs"):
        verify(text_package, model, samples=2, inputs=data)
    with pytest.raises(ValueError, match=r"inputs\[0\] is one tensor, but the package has 2"):
        verify(text_package, model, inputs=[ids[0]])
    with pytest.raises(ValueError, match=r"inputs\[0\]\['input_ids'\] has shape \(2, 8\)"):
        verify(text_package, model, inputs=[{"input_ids": ids[:, 0], "attention_mask": masks[0]}])
    with pytest.raises(TypeError, match="iterable of samples"):
        verify(text_package, model, inputs=data[0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no sample"):
        verify(text_package, model, inputs=[])


def test_single_input_package_verified_on_a_list_of_images(tmp_path: Path) -> None:
    model = Classifier().eval()
    path = export(model, (1, 3, 8, 8), tmp_path / "c.mlpackage", precision="fp32")
    images = [torch.rand(1, 3, 8, 8) for _ in range(3)]
    result = verify(path, model, inputs=images, precision="fp32")
    assert result.samples == 3 and result.outputs == {} and result.max_rel_error < 1e-5


def test_bool_and_int64_inputs_travel_as_int32(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = BoolAndLong().eval()
    inputs = {
        "ids": TensorSpec((2, 5), torch.int64, high=VOCAB),
        "padding": TensorSpec((2, 5), torch.bool),
    }
    path = export(model, inputs, tmp_path / "b.mlpackage", output_names=["total", "peak"])
    info = package_io(path)
    assert [t.dtype for t in info.inputs] == ["INT32", "INT32"]
    assert [t.name for t in info.outputs] == ["total", "peak"]
    result = verify(path, model, samples=2)
    assert set(result.outputs) == {"total", "peak"} and result.psnr_db > 50
    ids = torch.randint(0, VOCAB, (2, 5))
    padding = torch.zeros(2, 5, dtype=torch.bool)
    padding[0, 2:] = True
    assert verify(path, model, inputs=[{"ids": ids, "padding": padding}]).psnr_db > 50


def test_example_tensors_and_bad_inputs(tmp_path: Path) -> None:
    model = tiny_text()
    examples = {
        "input_ids": torch.tensor([[1, 2, 3, 4]]),
        "attention_mask": torch.ones(1, 4, dtype=torch.int32),
    }
    spec_of_ids = read_export_metadata(export(model, examples, tmp_path / "e.mlpackage"))["inputs"][
        0
    ]
    assert spec_of_ids == {
        "name": "input_ids",
        "shape": [1, 4],
        "dtype": "int64",
        "low": 1,
        "high": 5,
    }
    with pytest.raises(
        ValueError, match=r"input_shape\['input_ids'\] has a dynamic dimension None at axis 1"
    ):
        dynamic: Any = {"input_ids": (1, None), "attention_mask": (1, 4)}  # as a user might
        export(model, dynamic, tmp_path / "d.mlpackage")
    with pytest.raises(ValueError, match=r"dynamic dimension -1 at axis 0"):
        export(model, {"input_ids": TensorSpec((-1, 4), torch.int32)}, tmp_path / "d.mlpackage")
    with pytest.raises(
        ValueError, match=r"names \['token_ids'\], which TinyText.forward does not take"
    ):
        export(model, {"token_ids": (1, 4)}, tmp_path / "d.mlpackage")
    with pytest.raises(ValueError, match="a Core ML package input can be one of"):
        export(
            model, {"input_ids": torch.zeros(1, 4, dtype=torch.float64)}, tmp_path / "d.mlpackage"
        )
    with pytest.raises(ValueError, match="output_names must be a sequence of 3 names"):
        export(model, examples, tmp_path / "d.mlpackage", output_names=["a"])
    with pytest.raises(ValueError, match="needs integer low and high"):
        TensorSpec((1, 4), torch.int32, high=2.5)
    assert not (tmp_path / "d.mlpackage").exists()


def test_report_and_cli_verify_from_an_entry_point(
    text_package: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rep = report(text_package)
    assert rep.op_histogram.get("gather", 0) == 1  # the embedding lookup
    code = cli_main(
        [
            "verify",
            str(text_package),
            "--model",
            "test_export_io:tiny_text",
            "--precision",
            "fp32",
            "--json",
        ]
    )
    figures = json.loads(capsys.readouterr().out)
    assert (
        code == 0
        and figures["passed"]
        and set(figures["outputs"]) == {"logits", "states_0", "states_1"}
    )
    code = cli_main(["verify", str(text_package), "--model", "test_export_io:missing"])
    assert code == 2 and "cannot import 'missing'" in capsys.readouterr().err

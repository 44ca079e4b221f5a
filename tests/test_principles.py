"""ane_lib.coreml.principles: the four principles' figures of a real exported program."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from ane_lib.coreml import TensorSpec, export
from ane_lib.coreml.principles import principle_figures

V, C, S = 50, 16, 32


class Probe(nn.Module):
    """Known work: a lookup, a 1x1 conv, an einsum, a Linear, and known layout ops."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(V, C)
        self.conv = nn.Conv2d(C, 2 * C, 1)
        self.linear = nn.Linear(S, S)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.table(ids)  # (1, S, C)
        x = x.transpose(1, 2).unsqueeze(2)  # (1, C, 1, S): moves the last axis
        y = self.conv(x)  # (1, 2C, 1, S)
        keys = y.permute(0, 3, 2, 1)  # (1, S, 1, 2C): moves the last axis
        logits = torch.einsum("bchq,bkhc->bkhq", y, keys)  # (1, S, 1, S)
        split = y.reshape(1, 2, C, S)  # the last axis stays S: no copy of it
        mixed = split.transpose(1, 2)  # (1, C, 2, S): moves data, not the last axis
        return self.linear(logits.softmax(dim=1)), mixed * 2


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    path = export(
        Probe().eval(),
        {"ids": TensorSpec((1, S), torch.int32, high=V)},
        tmp_path_factory.mktemp("p") / "probe.mlpackage",
    )
    return principle_figures(path)


def test_macs_and_weights(figures) -> None:  # type: ignore[no-untyped-def]
    conv = S * C * 2 * C
    einsum = S * S * 2 * C
    linear = S * S * S
    assert figures.macs == conv + einsum + linear
    stored = 2 * (V * C + 2 * C * C + 2 * C + S * S + S)  # fp16 weights and biases
    assert figures.weight_bytes == stored
    # the embedding table is read only at the S rows looked up
    assert figures.weight_bytes_read == stored - 2 * V * C + 2 * S * C
    assert figures.weight_bytes_per_mac == figures.weight_bytes_read / figures.macs


def test_layout_and_attention(figures) -> None:  # type: ignore[no-untyped-def]
    assert figures.transposes >= 2
    # the two transposes that move the last axis are counted, the (1, 2, C, S) -> (1, C, 2, S)
    # one is not, and neither is the reshape that keeps the last axis
    assert figures.last_axis_copies == 2
    assert figures.largest_attention_bytes == figures.attention_bytes == 2 * S * S
    assert figures.largest_tensor_bytes >= 2 * 2 * C * S
    assert figures.padding_overhead >= 1.0
    assert set(figures.to_dict()) >= {"macs", "weight_bytes_per_mac", "padding_overhead"}


def test_bad_argument(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        principle_figures(tmp_path / "missing.mlpackage")

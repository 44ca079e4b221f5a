"""to_ane on Hugging Face DistilBERT (random weights from a config): same call, same outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    DistilBertConfig,
    DistilBertForSequenceClassification,
    DistilBertModel,
)

from ane_lib.coreml import TensorSpec, export, report, verify  # noqa: E402
from ane_lib.models import to_ane  # noqa: E402
from ane_lib.models._encoder_weights import UnsupportedModuleError  # noqa: E402
from ane_lib.models.hf_distilbert import (  # noqa: E402
    DistilBertForSequenceClassificationANE,
    DistilBertModelANE,
)
from ane_lib.nn import EncoderLayerANE  # noqa: E402

f64 = torch.float64


def _config(**overrides: Any) -> DistilBertConfig:
    base: dict[str, Any] = dict(
        vocab_size=50,
        dim=16,
        n_heads=4,
        n_layers=2,
        hidden_dim=24,
        max_position_embeddings=24,
        attn_implementation="eager",
    )
    return DistilBertConfig(**(base | overrides))


def _model(cls: type, seed: int, **overrides: Any) -> nn.Module:
    torch.manual_seed(seed)
    model = cls(_config(**overrides)).to(f64).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=f64))
    return model


def _inputs(batch: int, seq: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    lengths = torch.randint(1, seq + 1, (batch,), generator=g)
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()  # 1 = token, 0 = padding
    return ids, mask


@settings(max_examples=25, deadline=None)
@given(
    heads=st.integers(1, 4),
    head_dim=st.integers(1, 6),
    layers=st.integers(1, 3),
    hidden=st.integers(1, 20),
    seq=st.integers(1, 12),
    batch=st.integers(1, 3),
    activation=st.sampled_from(["gelu", "relu", "gelu_new", "gelu_pytorch_tanh"]),
    classify=st.booleans(),
    use_mask=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_distilbert_equals_hugging_face(
    heads: int,
    head_dim: int,
    layers: int,
    hidden: int,
    seq: int,
    batch: int,
    activation: str,
    classify: bool,
    use_mask: bool,
    seed: int,
) -> None:
    cls = DistilBertForSequenceClassification if classify else DistilBertModel
    model = _model(
        cls,
        seed,
        dim=heads * head_dim,
        n_heads=heads,
        n_layers=layers,
        hidden_dim=hidden,
        activation=activation,
    )
    ane = to_ane(model)
    assert isinstance(
        ane, DistilBertForSequenceClassificationANE if classify else DistilBertModelANE
    )
    assert sum(isinstance(m, EncoderLayerANE) for m in ane.modules()) == layers
    assert not any(isinstance(m, (nn.Linear, nn.LayerNorm)) for m in ane.modules())
    ids, mask = _inputs(batch, seq, 50, seed)
    kwargs = {"input_ids": ids, "attention_mask": mask if use_mask else None}
    with torch.no_grad():
        expected = model(**kwargs, output_hidden_states=True, output_attentions=True)
        got = ane(**kwargs, output_hidden_states=True, output_attentions=True)
    assert type(got) is type(expected) and list(got.keys()) == list(expected.keys())
    for key in expected:
        want = expected[key] if isinstance(expected[key], tuple) else (expected[key],)
        have = got[key] if isinstance(got[key], tuple) else (got[key],)
        assert len(have) == len(want)
        for w, h in zip(want, have, strict=True):
            assert h.shape == w.shape and h.dtype == w.dtype
            assert (h - w).abs().max() <= 1e-9, key


def test_call_variants_and_float32() -> None:
    model = DistilBertForSequenceClassification(_config(attn_implementation="sdpa")).eval()
    ane = to_ane(model)
    ids, mask = _inputs(2, 10, 50, 0)
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask)
        assert (ane(input_ids=ids, attention_mask=mask).logits - expected.logits).abs().max() < 1e-5
        as_tuple = ane(ids, mask, return_dict=False)
        assert isinstance(as_tuple, tuple) and len(as_tuple) == 1
        assert (as_tuple[0] - expected.logits).abs().max() < 1e-5
        embeds = model.distilbert.embeddings.word_embeddings(ids)
        by_embeds = ane(inputs_embeds=embeds, attention_mask=mask).logits
        assert (by_embeds - expected.logits).abs().max() < 1e-5
        positions = torch.arange(10).flip(0)[None]
        shifted = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        assert (
            ane(input_ids=ids, attention_mask=mask, position_ids=positions).logits - shifted
        ).abs().max() < 1e-5  # noqa: E501


def test_unsupported_sources_and_calls_are_named() -> None:
    model = DistilBertModel(_config()).eval()
    model.transformer.layer[1].attention = nn.Identity()
    with pytest.raises(UnsupportedModuleError, match=r"'model.transformer.layer.1.attention'"):
        to_ane(model)

    class MyDistilBert(DistilBertModel):
        pass

    with pytest.raises(UnsupportedModuleError, match=r"'model' is a .*MyDistilBert"):
        to_ane(MyDistilBert(_config()).eval())
    with pytest.raises(ValueError, match=r"Dropout\(p=0.1\) in training mode"):
        to_ane(DistilBertModel(_config()))  # a model built from a config is in training mode
    silu = DistilBertModel(_config(activation="silu")).eval()
    with pytest.raises(UnsupportedModuleError, match="layer.0.ffn.activation"):
        to_ane(silu)
    ane = to_ane(DistilBertForSequenceClassification(_config()).eval())
    ids, _ = _inputs(1, 4, 50, 0)
    with pytest.raises(ValueError, match="labels must be None"):
        ane(ids, labels=torch.tensor([1]))
    with pytest.raises(TypeError, match=r"unsupported keyword arguments \['head_mask'\]"):
        ane(ids, head_mask=torch.ones(4))
    with pytest.raises(TypeError, match="output_hidden_states must be True, False or None"):
        ane(ids, output_hidden_states=[0, 1])
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(B, S\) = \(1, 4\)"):
        ane(ids, torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        ane()


def test_both_forms_export_and_verify_in_fp16(tmp_path: Path) -> None:
    """The Hugging Face original and its ANE form, exported with token ids and a mask."""
    torch.manual_seed(0)
    model = DistilBertForSequenceClassification(_config(attn_implementation="sdpa")).eval()
    inputs = {
        "input_ids": TensorSpec((1, 16), torch.int32, high=50),
        "attention_mask": TensorSpec((1, 16), torch.int32, high=2),
    }
    for tag, form in (("hf", model), ("ane", to_ane(model))):
        path = export(form, inputs, tmp_path / f"{tag}.mlpackage")
        result = verify(path, form, samples=2)
        assert result.psnr_db > 40 and result.top1_agreement == 1.0, (tag, str(result))
        histogram = report(path).op_histogram
        if tag == "ane":
            assert histogram["conv"] == 2 * 6 + 2 and "linear" not in histogram
            assert histogram["einsum"] == 2 * 2 * 4  # layers x (logits, values) x heads
        else:
            assert histogram["linear"] == 2 * 6 + 2 and "conv" not in histogram

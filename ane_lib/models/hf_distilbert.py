"""Hugging Face DistilBERT in the Neural Engine's form, converted module by module.

    from transformers import DistilBertConfig, DistilBertForSequenceClassification
    model = DistilBertForSequenceClassification(DistilBertConfig(...)).eval()
    ane = to_ane(model)              # same call, same outputs; (B, C, 1, S) inside
    ane(input_ids=ids, attention_mask=mask).logits

:func:`distilbert_to_ane` reads the source by module type: each ``nn.Linear`` becomes a 1x1
``nn.Conv2d``, each ``nn.LayerNorm`` a :class:`~ane_lib.nn.LayerNormANE`, each
``TransformerBlock`` an :class:`~ane_lib.nn.EncoderLayerANE` (post-norm, per-head attention with
``einsum("bchq,bkhc->bkhq")``), and the two ``nn.Embedding`` tables are stored channels-first,
``(C, V)`` and ``(C, P)``, so that looking tokens up returns ``(C, S)`` columns and the tokens
start in ``(B, C, 1, S)`` without a transpose of the activations. Hugging Face's
``attention_mask`` (``(B, S)``, 1 = a real token) becomes the additive key-padding mask
``(B, S, 1, 1)`` with -40000 at padding (:mod:`ane_lib.functional.attention`). Apple's own port
(apple/ml-ane-transformers, ``huggingface/distilbert.py``) instead subclasses every module and
reshapes the checkpoint's weights by matching their key names; here nothing depends on names.

The result keeps the source's call (``input_ids``, ``attention_mask``, ``inputs_embeds``,
``position_ids``; ``output_hidden_states``, ``output_attentions``, ``return_dict``) and returns
the same ``BaseModelOutput`` / ``SequenceClassifierOutput`` (or tuple). It is for inference:
``labels`` and dropout in training mode are refused. Attention weights are returned as
``(B, N_h, S_q, S_k)`` whatever the source's attention implementation (Hugging Face's ``sdpa``
returns none).

``transformers`` is imported only here, and only when a DistilBERT model is converted or run
(the ``[hf]`` extra of ane-lib).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ane_lib._optional import import_optional
from ane_lib.functional.attention import ane_key_padding_mask
from ane_lib.models._encoder_weights import (
    UnsupportedModuleError,
    check_dropout,
    check_layer_norm,
    check_type,
    copy_attention,
    copy_layer_norm,
    copy_projection,
    linear_projection,
    place_like,
)
from ane_lib.nn.encoder import EncoderLayerANE
from ane_lib.nn.norm import LayerNormANE

__all__ = [
    "DistilBertEmbeddingsANE",
    "DistilBertForSequenceClassificationANE",
    "DistilBertModelANE",
    "distilbert_to_ane",
    "import_transformers",
]

_OUTPUT_OPTIONS = ("output_attentions", "output_hidden_states", "return_dict")


def import_transformers() -> ModuleType:
    """Import ``transformers``, or raise ImportError saying which extra installs it."""
    return import_optional("transformers", extra="hf", needed_for="Hugging Face models")


def _modeling() -> ModuleType:
    import_transformers()
    from transformers.models.distilbert import modeling_distilbert

    return modeling_distilbert


# --------------------------------------------------------------------------- ANE modules


class DistilBertEmbeddingsANE(nn.Module):
    """Token and position embeddings, summed and normalised, returned as ``(B, C, 1, S)``.

    Parameters: ``word_table`` ``(C, V)`` and ``position_table`` ``(C, P)`` (the transposes of
    the source's ``nn.Embedding`` weights), ``norm`` (:class:`LayerNormANE`).
    """

    def __init__(self, vocab_size: int, max_positions: int, dim: int, eps: float) -> None:
        super().__init__()
        self.word_table = nn.Parameter(torch.zeros(dim, vocab_size))
        self.position_table = nn.Parameter(torch.zeros(dim, max_positions))
        self.norm = LayerNormANE(dim, eps=eps)

    @staticmethod
    def _lookup(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Columns of ``table`` ``(C, V)`` for ``ids`` ``(B, S)`` -> ``(B, C, 1, S)``."""
        b, s = ids.shape
        columns = table.index_select(1, ids.reshape(-1))  # (C, B * S): channels first already
        if b == 1:
            return columns.reshape(1, -1, 1, s)
        return columns.reshape(-1, b, 1, s).transpose(0, 1)  # moves C and B, not the last axis

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids ``(B, S)`` or inputs_embeds ``(B, S, C)``; position_ids ``(B|1, S)``
        (default ``0 ... S-1``) -> ``(B, C, 1, S)``."""
        if input_ids is not None:
            if input_ids.ndim != 2 or input_ids.is_floating_point():
                raise ValueError(
                    f"input_ids must be integer token ids of shape (B, S), got shape "
                    f"{tuple(input_ids.shape)} and dtype {input_ids.dtype}"
                )
            words = self._lookup(self.word_table, input_ids)
        else:
            assert inputs_embeds is not None
            if inputs_embeds.ndim != 3 or inputs_embeds.shape[2] != self.word_table.shape[0]:
                raise ValueError(
                    f"inputs_embeds must have shape (B, S, {self.word_table.shape[0]}), got "
                    f"{tuple(inputs_embeds.shape)}"
                )
            words = inputs_embeds.transpose(1, 2).unsqueeze(2)
        s = words.shape[3]
        if position_ids is None:
            if s > self.position_table.shape[1]:
                raise ValueError(
                    f"the sequence has {s} tokens, more than the model's "
                    f"max_position_embeddings={self.position_table.shape[1]}"
                )
            positions = self.position_table[:, :s].reshape(1, -1, 1, s)
        else:
            positions = self._lookup(self.position_table, position_ids.reshape(-1, s))
        return self.norm(words + positions)


class DistilBertModelANE(nn.Module):
    """``DistilBertModel``'s call and outputs, computed in ``(B, C, 1, S)``.

    Built by :func:`distilbert_to_ane`; holds the source's ``config`` (a copy), ``embeddings``
    (:class:`DistilBertEmbeddingsANE`) and ``layers`` (post-norm :class:`EncoderLayerANE`).
    """

    source_dropout = 0.0  # the source's largest dropout: refused in training mode

    def __init__(
        self, config: Any, embeddings: DistilBertEmbeddingsANE, layers: Sequence[nn.Module]
    ) -> None:
        super().__init__()
        self.config = config
        self.embeddings = embeddings
        self.layers = nn.ModuleList(layers)

    def _options(self, kwargs: dict[str, Any]) -> tuple[bool, bool, bool]:
        unknown = sorted(set(kwargs) - set(_OUTPUT_OPTIONS))
        if unknown:
            raise TypeError(
                f"{type(self).__name__}.forward got unsupported keyword arguments {unknown}; it "
                f"takes input_ids, attention_mask, inputs_embeds, position_ids and "
                f"{', '.join(_OUTPUT_OPTIONS)}"
            )
        values = []
        for name, default in (
            ("output_attentions", getattr(self.config, "output_attentions", False)),
            ("output_hidden_states", getattr(self.config, "output_hidden_states", False)),
            ("return_dict", getattr(self.config, "return_dict", True)),
        ):
            value = kwargs.get(name)
            value = default if value is None else value
            if not isinstance(value, bool):
                raise TypeError(
                    f"{name} must be True, False or None in the ANE form, got {value!r} "
                    "(selecting hidden-state indices is not supported)"
                )
            values.append(value)
        return values[0], values[1], values[2]

    def encode(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        *,
        keep_hidden: bool = False,
        keep_weights: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """The encoder in the ANE layout: ``(x: (B, C, 1, S), hidden states (B, C, 1, S) of
        the embeddings and of every layer if ``keep_hidden``, attention weights
        (B, S_k, N_h, S_q) of every layer if ``keep_weights``)``."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        x = self.embeddings(input_ids, inputs_embeds, position_ids)
        mask = None
        if attention_mask is not None:
            batch, seq_len = x.shape[0], x.shape[3]
            if tuple(attention_mask.shape) != (batch, seq_len):
                raise ValueError(
                    f"attention_mask must have shape (B, S) = ({batch}, {seq_len}) with 1 for "
                    f"tokens and 0 for padding, got {tuple(attention_mask.shape)}"
                )
            mask = ane_key_padding_mask(attention_mask == 0, x.dtype)
        hidden = [x] if keep_hidden else []
        weights = []
        for layer in self.layers:
            out = layer(x, mask, return_weights=keep_weights)
            x, w = out if isinstance(out, tuple) else (out, None)
            if keep_hidden:
                hidden.append(x)
            if w is not None:
                weights.append(w)
        return x, hidden, weights

    def run(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        options: dict[str, Any],
    ) -> tuple[torch.Tensor, dict[str, Any], bool]:
        """What both models' ``forward`` share: ``(x: (B, C, 1, S), the optional outputs
        {"hidden_states": ..., "attentions": ...} in Hugging Face's layouts, return_dict)``."""
        attentions, hidden_states, return_dict = self._options(options)
        x, hidden, weights = self.encode(
            input_ids,
            attention_mask,
            inputs_embeds,
            position_ids,
            keep_hidden=hidden_states,
            keep_weights=attentions,
        )
        extra = {
            "hidden_states": tuple(_to_bsc(h) for h in hidden) if hidden_states else None,
            "attentions": tuple(w.permute(0, 2, 3, 1) for w in weights) if attentions else None,
        }
        return x, extra, return_dict

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """As ``DistilBertModel.forward``: ``last_hidden_state`` ``(B, S, C)``, and
        ``hidden_states`` / ``attentions`` when asked for."""
        check_dropout_free(self)
        x, extra, return_dict = self.run(
            input_ids, attention_mask, inputs_embeds, position_ids, kwargs
        )
        outputs = _modeling().BaseModelOutput(last_hidden_state=_to_bsc(x), **extra)
        return outputs if return_dict else outputs.to_tuple()


class DistilBertForSequenceClassificationANE(nn.Module):
    """``DistilBertForSequenceClassification``'s call and outputs, computed in ``(B, C, 1, S)``.

    The first token's column ``(B, C, 1, 1)`` goes through ``pre_classifier`` (a 1x1 conv),
    ReLU and ``classifier`` (a 1x1 conv) to the logits ``(B, num_labels)``.
    """

    source_dropout = 0.0  # the source's largest dropout: refused in training mode

    def __init__(self, distilbert: DistilBertModelANE, dim: int, num_labels: int) -> None:
        super().__init__()
        self.config = distilbert.config
        self.distilbert = distilbert
        self.pre_classifier = nn.Conv2d(dim, dim, 1)
        self.classifier = nn.Conv2d(dim, num_labels, 1)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """As ``DistilBertForSequenceClassification.forward`` without a loss: ``logits``
        ``(B, num_labels)``, and ``hidden_states`` / ``attentions`` when asked for."""
        if labels is not None:
            raise ValueError(
                "labels must be None: the ANE form is for inference and computes no loss; "
                "train with the source model"
            )
        check_dropout_free(self)
        x, extra, return_dict = self.distilbert.run(
            input_ids, attention_mask, inputs_embeds, position_ids, kwargs
        )
        pooled = torch.relu(self.pre_classifier(x[:, :, :, 0:1]))  # (B, C, 1, 1)
        logits = self.classifier(pooled).flatten(1)  # (B, num_labels)
        outputs = _modeling().SequenceClassifierOutput(logits=logits, **extra)
        return outputs if return_dict else outputs.to_tuple()


def _to_bsc(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, 1, S)`` -> ``(B, S, C)``."""
    return x.squeeze(2).transpose(1, 2)


def check_dropout_free(module: nn.Module) -> None:
    """The ANE form has no dropout: refuse to run in training mode if the source had any."""
    if module.training and getattr(module, "source_dropout", 0.0) > 0:
        raise RuntimeError(
            f"{type(module).__name__} is in training mode, but the ANE form has no dropout "
            "(the source had some); call .eval()"
        )


# --------------------------------------------------------------------------- conversion


def _activation(module: Any, path: str) -> str:
    acts = import_transformers().activations
    kind = type(module)
    if kind is nn.ReLU:
        return "relu"
    if kind is nn.GELU:
        return "gelu" if module.approximate == "none" else "gelu_tanh"
    if kind is acts.GELUActivation and getattr(module, "act", None) is nn.functional.gelu:
        return "gelu"
    if kind in (acts.NewGELUActivation, acts.GELUTanh):
        return "gelu_tanh"
    raise UnsupportedModuleError(
        f"module {path!r} is a {kind.__qualname__}; the ANE conversion supports the activations "
        "'relu', 'gelu', 'gelu_new' and 'gelu_pytorch_tanh'"
    )


def _embeddings(source: Any, path: str) -> DistilBertEmbeddingsANE:
    m = _modeling()
    check_type(source, path, m.Embeddings)
    words, positions = source.word_embeddings, source.position_embeddings
    for name, table in (("word_embeddings", words), ("position_embeddings", positions)):
        check_type(table, f"{path}.{name}", nn.Embedding)
    dim = words.embedding_dim
    eps = check_layer_norm(source.LayerNorm, f"{path}.LayerNorm", dim)
    target = DistilBertEmbeddingsANE(words.num_embeddings, positions.num_embeddings, dim, eps)
    place_like(target, source)
    with torch.no_grad():
        target.word_table.copy_(words.weight.t())
        target.position_table.copy_(positions.weight.t())
    copy_layer_norm(target.norm, source.LayerNorm)
    return target


def _block(source: Any, path: str) -> EncoderLayerANE:
    m = _modeling()
    check_type(source, path, m.TransformerBlock)
    attn, ffn = source.attention, source.ffn
    check_type(attn, f"{path}.attention", m.DistilBertSelfAttention)
    check_type(ffn, f"{path}.ffn", m.FFN)
    projections = {
        name: linear_projection(getattr(attn, name), f"{path}.attention.{name}")
        for name in ("q_lin", "k_lin", "v_lin", "out_lin")
    }
    lin1 = linear_projection(ffn.lin1, f"{path}.ffn.lin1")
    lin2 = linear_projection(ffn.lin2, f"{path}.ffn.lin2")
    dim = attn.dim
    eps1 = check_layer_norm(source.sa_layer_norm, f"{path}.sa_layer_norm", dim)
    eps2 = check_layer_norm(source.output_layer_norm, f"{path}.output_layer_norm", dim)
    if eps1 != eps2 or any(b is None for _, b in (*projections.values(), lin1, lin2)):
        raise UnsupportedModuleError(
            f"module {path!r} has norms with different eps or projections without bias; "
            "DistilBERT's blocks have neither"
        )
    target = EncoderLayerANE(
        dim,
        attn.n_heads,
        ffn.lin1.out_features,
        activation=_activation(ffn.activation, f"{path}.ffn.activation"),
        eps=eps1,
        norm_first=False,
    )
    place_like(target, source)
    copy_attention(target.attn, *projections.values())
    copy_projection(target.ffn.fc1, *lin1)
    copy_projection(target.ffn.fc2, *lin2)
    copy_layer_norm(target.norm1, source.sa_layer_norm)
    copy_layer_norm(target.norm2, source.output_layer_norm)
    return target


def _model(source: Any, path: str) -> DistilBertModelANE:
    m = _modeling()
    check_type(source, path, m.DistilBertModel)
    check_type(source.transformer, f"{path}.transformer", m.Transformer)
    layers = [
        _block(block, f"{path}.transformer.layer.{i}")
        for i, block in enumerate(source.transformer.layer)
    ]
    config = source.config.__class__.from_dict(source.config.to_dict())
    return DistilBertModelANE(config, _embeddings(source.embeddings, f"{path}.embeddings"), layers)


def _dropout_of(model: nn.Module) -> float:
    return max((m.p for m in model.modules() if isinstance(m, nn.Dropout)), default=0.0)


def distilbert_to_ane(model: Any) -> nn.Module:
    """A ``DistilBertModel`` or ``DistilBertForSequenceClassification`` in the ANE form.

    Returns :class:`DistilBertModelANE` or :class:`DistilBertForSequenceClassificationANE`: new
    modules with copied weights, on the source's device and dtype, with its training flag.

    Raises:
        UnsupportedModuleError (a TypeError): another class, a subclass, or a module inside
            replaced by one the conversion does not know (e.g. a custom attention), naming it.
        ValueError: the model is in training mode with dropout (the ANE form has none).
    """
    m = _modeling()
    check_type(model, "model", (m.DistilBertModel, m.DistilBertForSequenceClassification))
    check_dropout(model, "model")
    twin: DistilBertModelANE | DistilBertForSequenceClassificationANE
    if isinstance(model, m.DistilBertModel):
        twin = _model(model, "model")
    else:
        base = _model(model.distilbert, "model.distilbert")
        pre = linear_projection(model.pre_classifier, "model.pre_classifier")
        head = linear_projection(model.classifier, "model.classifier")
        twin = DistilBertForSequenceClassificationANE(base, pre[0].shape[0], head[0].shape[0])
        place_like(twin, model)
        copy_projection(twin.pre_classifier, *pre)
        copy_projection(twin.classifier, *head)
    twin.source_dropout = _dropout_of(model)
    return place_like(twin, model)

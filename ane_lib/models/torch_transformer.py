"""PyTorch's own encoder (``nn.TransformerEncoderLayer``, ``nn.TransformerEncoder``) in ANE form.

    ane = to_ane(encoder)          # same call, same outputs; (B, C, 1, S) inside
    y = ane(src, mask=causal, src_key_padding_mask=padding)

:func:`transformer_encoder_layer_to_ane` and :func:`transformer_encoder_to_ane` read each module
of the source by its type (``nn.MultiheadAttention``'s packed ``in_proj_weight`` split into
three 1x1 convolutions, ``nn.Linear`` -> 1x1 ``nn.Conv2d``, ``nn.LayerNorm`` ->
:class:`~ane_lib.nn.LayerNormANE`) and build :class:`TransformerEncoderLayerANE` /
:class:`TransformerEncoderANE`, which keep the source's call signature: ``src`` is
``(B, S, C)`` with ``batch_first=True``, else ``(S, B, C)`` (or unbatched ``(S, C)``), and the
masks are PyTorch's (``src_key_padding_mask``: ``(B, S)``, True or ``-inf`` = padding;
``mask``: ``(S, S)`` or ``(B * N_h, S, S)``, True or ``-inf`` = blocked, or any float to add).
Inside, the tokens are ``(B, C, 1, S)`` and the masks are converted once, at the top, into the
ANE layout ``(B|1, S_k, N_h|1, S_q|1)`` with -40000 for blocked positions
(:mod:`ane_lib.functional.attention`).

Outputs are equal to the source's wherever PyTorch's are defined. Two cases differ, both
documented by PyTorch as undefined or implementation-specific: a query whose keys are all
blocked (PyTorch: NaN; here: equal weights), and the padded positions of the output (PyTorch's
fast path returns zeros there, its slow path values; here values).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ane_lib.functional.attention import (
    ane_attention_mask,
    ane_causal_mask,
    ane_key_padding_mask,
    merge_ane_masks,
)
from ane_lib.models._encoder_weights import (
    UnsupportedModuleError,
    check_dropout,
    check_layer_norm,
    check_type,
    copy_attention,
    copy_layer_norm,
    copy_projection,
    layer_norm_like,
    linear_projection,
    place_like,
)
from ane_lib.nn.encoder import EncoderLayerANE
from ane_lib.nn.norm import LayerNormANE

__all__ = [
    "TransformerEncoderANE",
    "TransformerEncoderLayerANE",
    "transformer_encoder_layer_to_ane",
    "transformer_encoder_to_ane",
]


# --------------------------------------------------------------------------- layouts and masks


def _to_bc1s(src: torch.Tensor, batch_first: bool, dim: int) -> tuple[torch.Tensor, bool]:
    """``(B, S, C)`` / ``(S, B, C)`` / unbatched ``(S, C)`` -> ``((B, C, 1, S), unbatched)``."""
    if not isinstance(src, torch.Tensor):
        raise TypeError(f"src must be a torch.Tensor, got {type(src).__name__}")
    if src.is_nested:
        raise TypeError(
            "src is a nested tensor; the ANE form needs a fixed shape: pass a padded tensor and "
            "mark the padding with src_key_padding_mask"
        )
    layout = "(B, S, C)" if batch_first else "(S, B, C)"
    if src.ndim not in (2, 3) or src.shape[-1] != dim:
        raise ValueError(
            f"src must be {layout} or unbatched (S, C) with C = {dim}, got shape {tuple(src.shape)}"
        )
    if src.ndim == 2:
        return src.transpose(0, 1)[None, :, None, :], True
    if batch_first:
        return src.permute(0, 2, 1).unsqueeze(2), False
    return src.permute(1, 2, 0).unsqueeze(2), False


def _from_bc1s(x: torch.Tensor, batch_first: bool, unbatched: bool) -> torch.Tensor:
    """The inverse of :func:`_to_bc1s`."""
    x = x.squeeze(2)  # (B, C, S)
    if unbatched:
        return x[0].transpose(0, 1)
    return x.permute(0, 2, 1) if batch_first else x.permute(2, 0, 1)


def _ane_mask(
    x: torch.Tensor,
    num_heads: int,
    attn_mask: torch.Tensor | None,
    key_padding_mask: torch.Tensor | None,
    is_causal: bool | None,
    unbatched: bool,
) -> torch.Tensor | None:
    """PyTorch's masks for ``x: (B, C, 1, S)`` as one additive ANE mask (or None)."""
    batch, seq_len = x.shape[0], x.shape[3]
    padding = None
    if key_padding_mask is not None:
        if unbatched and key_padding_mask.ndim == 1:
            key_padding_mask = key_padding_mask[None]
        if tuple(key_padding_mask.shape) != (batch, seq_len):
            raise ValueError(
                f"src_key_padding_mask must have shape (B, S) = ({batch}, {seq_len}), got "
                f"{tuple(key_padding_mask.shape)}"
            )
        padding = ane_key_padding_mask(key_padding_mask, x.dtype)
    blocked = None
    if attn_mask is not None:
        wanted = [(seq_len, seq_len), (batch * num_heads, seq_len, seq_len)]
        if tuple(attn_mask.shape) not in wanted:
            raise ValueError(
                f"mask must have shape (S, S) = {wanted[0]} or (B * N_h, S, S) = {wanted[1]}, "
                f"got {tuple(attn_mask.shape)}"
            )
        blocked = ane_attention_mask(attn_mask, num_heads, x.dtype)
    elif is_causal:
        # PyTorch trusts the hint and requires the mask too; here the hint alone suffices.
        blocked = ane_causal_mask(seq_len, x.dtype).to(x.device)
    return merge_ane_masks(blocked, padding)


def _encode(
    owner: nn.Module,
    layers: list[EncoderLayerANE],
    norm: LayerNormANE | None,
    src: torch.Tensor,
    attn_mask: torch.Tensor | None,
    key_padding_mask: torch.Tensor | None,
    is_causal: bool | None,
) -> torch.Tensor:
    """Both wrappers' forward: layout in, masks converted once, the layers, layout out."""
    _check_inference(owner)
    batch_first = bool(getattr(owner, "batch_first", False))
    x, unbatched = _to_bc1s(src, batch_first, layers[0].attn.dim)
    mask = _ane_mask(x, layers[0].attn.num_heads, attn_mask, key_padding_mask, is_causal, unbatched)
    for layer in layers:
        out = layer(x, mask)
        assert isinstance(out, torch.Tensor)
        x = out
    if norm is not None:
        x = norm(x)
    return _from_bc1s(x, batch_first, unbatched)


def _check_inference(module: nn.Module) -> None:
    if module.training and getattr(module, "dropout", 0.0) > 0:
        raise RuntimeError(
            f"{type(module).__name__} is in training mode, but the ANE form has no dropout "
            f"(the source had p={module.dropout}); call .eval()"
        )


# --------------------------------------------------------------------------- modules


class TransformerEncoderLayerANE(nn.Module):
    """``nn.TransformerEncoderLayer``'s call, computed in ``(B, C, 1, S)`` by an
    :class:`~ane_lib.nn.EncoderLayerANE` (``self.layer``).

    Built by :func:`transformer_encoder_layer_to_ane` (or ``ane_lib.models.to_ane``).
    """

    def __init__(self, layer: EncoderLayerANE, *, batch_first: bool, dropout: float = 0.0) -> None:
        super().__init__()
        self.layer = layer
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)

    def forward(
        self,
        src: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        src_key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """src: ``(B, S, C)`` (``batch_first``) or ``(S, B, C)`` or ``(S, C)`` -> same shape."""
        return _encode(self, [self.layer], None, src, src_mask, src_key_padding_mask, is_causal)

    def extra_repr(self) -> str:
        return f"batch_first={self.batch_first}"


class TransformerEncoderANE(nn.Module):
    """``nn.TransformerEncoder``'s call, computed in ``(B, C, 1, S)`` by a stack of
    :class:`~ane_lib.nn.EncoderLayerANE` (``self.layers``) and an optional final
    :class:`~ane_lib.nn.LayerNormANE` (``self.norm``); the masks are converted once.
    """

    def __init__(
        self,
        layers: list[EncoderLayerANE],
        norm: LayerNormANE | None,
        *,
        batch_first: bool,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not layers:
            raise ValueError("layers must hold at least one EncoderLayerANE, got none")
        self.layers = nn.ModuleList(layers)
        self.norm = norm
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)

    def forward(
        self,
        src: torch.Tensor,
        mask: torch.Tensor | None = None,
        src_key_padding_mask: torch.Tensor | None = None,
        is_causal: bool | None = None,
    ) -> torch.Tensor:
        """src: ``(B, S, C)`` (``batch_first``) or ``(S, B, C)`` or ``(S, C)`` -> same shape."""
        layers = [cast(EncoderLayerANE, m) for m in self.layers]
        return _encode(self, layers, self.norm, src, mask, src_key_padding_mask, is_causal)

    def extra_repr(self) -> str:
        return f"batch_first={self.batch_first}"


# --------------------------------------------------------------------------- conversion


def _activation(layer: nn.TransformerEncoderLayer, path: str) -> str:
    fn = layer.activation
    if fn is F.relu or type(fn) is nn.ReLU:
        return "relu"
    if fn is F.gelu:
        return "gelu"
    if type(fn) is nn.GELU:
        return "gelu" if fn.approximate == "none" else "gelu_tanh"
    raise UnsupportedModuleError(
        f"module '{path}.activation' is {fn!r}; the ANE conversion supports F.relu, F.gelu, "
        "nn.ReLU and nn.GELU (as set by activation='relu' or 'gelu')"
    )


def _convert_layer(layer: nn.Module, path: str) -> EncoderLayerANE:
    """One ``nn.TransformerEncoderLayer`` as an :class:`EncoderLayerANE` with its weights."""
    check_type(layer, path, nn.TransformerEncoderLayer)
    assert isinstance(layer, nn.TransformerEncoderLayer)
    attn = layer.self_attn
    check_type(attn, f"{path}.self_attn", nn.MultiheadAttention)
    if not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn:
        raise UnsupportedModuleError(
            f"module '{path}.self_attn' uses kdim/vdim != embed_dim, add_bias_kv or "
            "add_zero_attn; the ANE conversion supports self-attention with none of them"
        )
    dim, heads = attn.embed_dim, attn.num_heads
    bias = attn.in_proj_bias is not None
    linear1 = linear_projection(layer.linear1, f"{path}.linear1")
    linear2 = linear_projection(layer.linear2, f"{path}.linear2")
    out = linear_projection(attn.out_proj, f"{path}.self_attn.out_proj")
    if any((b is not None) != bias for _, b in (linear1, linear2, out)):
        raise UnsupportedModuleError(
            f"module {path!r} mixes projections with and without bias; the ANE form needs all "
            "or none (nn.TransformerEncoderLayer(bias=...))"
        )
    eps1 = check_layer_norm(layer.norm1, f"{path}.norm1", dim, bias=bias)
    eps2 = check_layer_norm(layer.norm2, f"{path}.norm2", dim, bias=bias)
    if eps1 != eps2:
        raise UnsupportedModuleError(
            f"module {path!r} has norms with different eps ({eps1}, {eps2}); the ANE layer "
            "uses one eps for both"
        )
    target = EncoderLayerANE(
        dim,
        heads,
        layer.linear1.out_features,
        activation=_activation(layer, path),
        eps=eps1,
        norm_first=layer.norm_first,
        bias=bias,
    )
    place_like(target, layer)
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3, dim=0)
    b_q, b_k, b_v = attn.in_proj_bias.chunk(3, dim=0) if bias else (None, None, None)
    copy_attention(target.attn, (w_q, b_q), (w_k, b_k), (w_v, b_v), out)
    copy_projection(target.ffn.fc1, *linear1)
    copy_projection(target.ffn.fc2, *linear2)
    copy_layer_norm(target.norm1, layer.norm1)
    copy_layer_norm(target.norm2, layer.norm2)
    return target


def _largest_dropout(module: nn.Module) -> float:
    return max((m.p for m in module.modules() if isinstance(m, nn.Dropout)), default=0.0)


def transformer_encoder_layer_to_ane(
    layer: nn.TransformerEncoderLayer,
) -> TransformerEncoderLayerANE:
    """``layer`` in the ANE form: a new module with copied weights, the same call and outputs.

    Raises:
        UnsupportedModuleError (a TypeError): a custom attention module, a subclass, an
            activation other than ReLU/GELU, or settings the form does not cover, naming the
            module path.
        ValueError: ``layer`` is in training mode with dropout (the ANE form has none).
    """
    check_dropout(layer, "layer")
    target = _convert_layer(layer, "layer")
    twin = TransformerEncoderLayerANE(
        target, batch_first=layer.self_attn.batch_first, dropout=_largest_dropout(layer)
    )
    return place_like(twin, layer)


def transformer_encoder_to_ane(encoder: nn.TransformerEncoder) -> TransformerEncoderANE:
    """``encoder`` (its layers and final norm) in the ANE form; see
    :func:`transformer_encoder_layer_to_ane` for what is checked."""
    check_type(encoder, "encoder", nn.TransformerEncoder)
    check_dropout(encoder, "encoder")
    layers = [_convert_layer(m, f"encoder.layers.{i}") for i, m in enumerate(encoder.layers)]
    batch_first = {m.self_attn.batch_first for m in encoder.layers}
    if len(batch_first) != 1:
        raise UnsupportedModuleError("encoder.layers mix batch_first=True and False")
    norm = None
    if encoder.norm is not None:
        check_type(encoder.norm, "encoder.norm", nn.LayerNorm)
        norm = layer_norm_like(cast(nn.LayerNorm, encoder.norm), "encoder.norm")
    twin = TransformerEncoderANE(
        layers, norm, batch_first=batch_first.pop(), dropout=_largest_dropout(encoder)
    )
    return place_like(twin, encoder)

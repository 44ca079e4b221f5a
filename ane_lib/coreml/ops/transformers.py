"""Transformer ops (coremltools ``transformers``, iOS18): ``scaled_dot_product_attention``."""

from __future__ import annotations

import math

import torch

from ane_lib.coreml.ops._registry import OpArgs, register


@register("scaled_dot_product_attention")
def _sdpa(a: OpArgs) -> torch.Tensor:
    # query: (B, *, L, E), key: (B, *, S, E), value: (B, *, S, EV) -> (B, *, L, EV);
    # softmax(Q K^T / sqrt(E) + mask) V, a bool mask keeping the positions where it is True
    q, k, v = a.get("query"), a.get("key"), a.get("value")
    logits = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if a.has("attn_mask"):
        mask = a.get("attn_mask")
        is_bool = mask.dtype == torch.bool
        logits = logits.masked_fill(~mask, -math.inf) if is_bool else logits + mask
    return torch.matmul(torch.softmax(logits, dim=-1), v)

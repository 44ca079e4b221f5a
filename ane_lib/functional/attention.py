"""Attention in the Neural Engine's layout: one head at a time, masks laid out key-first.

Tokens are ``(B, C, 1, S)`` (channels first, a height of 1, the sequence last). For one head,
with ``d_h`` channels, the logits are computed as

    logits[b, k, 0, q] = sum_c query[b, c, 0, q] * key_t[b, k, 0, c]    einsum("bchq,bkhc->bkhq")

where ``key_t = key.transpose(1, 3)`` is ``(B, S_k, 1, C)`` (transposed once for all heads). In the
einsum's letters ``b`` is the batch, ``c`` a channel of the head, ``h`` the singleton *height*
axis (never the head), ``q`` a query position and ``k`` a key position. The logits are laid out
``(B, S_k, 1, S_q)``: the softmax runs over axis 1, the keys, and
``einsum("bkhq,bchk->bchq")`` returns the head as ``(B, d_h, 1, S_q)``. Each head is a channel
slice of the projections, so no reshape or transpose is needed to make the heads (Apple's 2022
principles 2 and 3, "split softmax" and "minimise copies").

Masks are additive and use the same key-first layout, ``(B or 1, S_k, N_h or 1, S_q or 1)``:
a key-padding mask is ``(B, S_k, 1, 1)``, a causal mask ``(1, S_k, 1, S_q)``, a per-head mask
``(B, S_k, N_h, S_q)``. Blocked positions hold :data:`MASK_VALUE` = -40000 rather than ``-inf``:
Apple's Neural Engine rules say the hardware mishandles ``-inf`` in a softmax, and -40000 is
representable in fp16 (largest finite 65504) with room left for the logits it is added to, while
``exp(-40000)`` is exactly 0 in every float type. A query whose keys are all blocked therefore
gets equal weights on every key instead of PyTorch's NaN.
"""

from __future__ import annotations

import torch

from ane_lib._checks import check_positive_int, check_rank, check_tensor

__all__ = [
    "MASK_VALUE",
    "ane_attention_mask",
    "ane_causal_mask",
    "ane_key_padding_mask",
    "merge_ane_masks",
    "split_head_attention",
]

#: The additive value of a blocked position in an ANE mask (Apple: -40000, not ``-inf``).
MASK_VALUE = -40000.0


def split_head_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    num_heads: int,
    *,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Multi-head scaled dot-product attention computed head by head in ``(B, C, 1, S)``.

    Args:
        query: ``(B, C, 1, S_q)``, projected queries; head ``n`` is channels
            ``n * d_h ... (n + 1) * d_h - 1`` with ``d_h = C / num_heads``.
        key: ``(B, C, 1, S_k)``, projected keys, same channel layout.
        value: ``(B, C_v, 1, S_k)``, projected values (``num_heads`` must divide ``C_v``).
        num_heads: ``N_h``.
        mask: additive, broadcastable to ``(B, S_k, N_h, S_q)``: axis 2 is per head (size 1 or
            ``N_h``); see :func:`ane_key_padding_mask`, :func:`ane_attention_mask`.
        scale: multiplies the logits (default ``d_h ** -0.5``); applied to the queries.
        return_weights: also return the softmax weights of all heads.

    Returns:
        ``(B, C_v, 1, S_q)``; with ``return_weights``, also the weights ``(B, S_k, N_h, S_q)``.
        Equal to ``torch.nn.functional.scaled_dot_product_attention`` on the heads in the
        standard ``(B, N_h, S, d_h)`` layout with the mask transposed to ``(B, N_h, S_q, S_k)``.
    """
    check_rank("query", query, (4,), "(B, C, 1, S_q)")
    check_rank("key", key, (4,), "(B, C, 1, S_k)")
    check_rank("value", value, (4,), "(B, C_v, 1, S_k)")
    check_positive_int("num_heads", num_heads)
    b, c, one, s_q = query.shape
    if one != 1 or key.shape[2] != 1 or value.shape[2] != 1:
        raise ValueError(
            "query, key and value must have a height of 1 (axis 2), got shapes "
            f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
        )
    if key.shape[:2] != (b, c) or value.shape[0] != b or value.shape[3] != key.shape[3]:
        raise ValueError(
            f"key must be (B, C, 1, S_k) = ({b}, {c}, 1, S_k) and value (B, C_v, 1, S_k) with "
            f"the key's S_k, got key {tuple(key.shape)} and value {tuple(value.shape)}"
        )
    for name, channels in (("C", c), ("C_v", value.shape[1])):
        if channels % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide {name}={channels}")
    s_k = key.shape[3]
    if mask is not None:
        check_tensor("mask", mask)
        wanted = (b, s_k, num_heads, s_q)
        if mask.ndim != 4 or any(m not in (1, w) for m, w in zip(mask.shape, wanted, strict=True)):
            raise ValueError(
                f"mask must broadcast to (B, S_k, N_h, S_q) = {wanted} (each axis its size or "
                f"1), got shape {tuple(mask.shape)}"
            )
    d_h = c // num_heads
    d_v = value.shape[1] // num_heads
    query = query * (d_h**-0.5 if scale is None else scale)
    key_t = key.transpose(1, 3)  # (B, S_k, 1, C): one transpose for every head
    outputs, weights = [], []
    per_head_mask = mask is not None and mask.shape[2] > 1
    for head, (q_h, k_h, v_h) in enumerate(
        zip(query.split(d_h, dim=1), key_t.split(d_h, dim=3), value.split(d_v, dim=1), strict=True)
    ):
        logits = torch.einsum("bchq,bkhc->bkhq", q_h, k_h)  # (B, S_k, 1, S_q)
        if mask is not None:
            logits = logits + (mask[:, :, head : head + 1] if per_head_mask else mask)
        probs = logits.softmax(dim=1)  # over the keys
        outputs.append(torch.einsum("bkhq,bchk->bchq", probs, v_h))  # (B, d_v, 1, S_q)
        weights.append(probs)
    out = torch.cat(outputs, dim=1)
    if return_weights:
        return out, torch.cat(weights, dim=2)
    return out


def _blocked_to_additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool (True = blocked) -> 0 / MASK_VALUE; float (additive) -> clamped at MASK_VALUE."""
    if mask.dtype == torch.bool:
        zero = torch.zeros((), dtype=dtype, device=mask.device)
        return torch.where(mask, zero + MASK_VALUE, zero)
    if not mask.is_floating_point():
        raise TypeError(
            f"mask must be a bool tensor (True = blocked) or a float tensor (added to the "
            f"logits), got dtype {mask.dtype}"
        )
    # -inf (PyTorch's blocked value) and anything below become MASK_VALUE: exp() of either is 0
    return mask.to(dtype).clamp(min=MASK_VALUE)


def ane_key_padding_mask(padding: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A key-padding mask ``(B, S_k)`` in the ANE layout ``(B, S_k, 1, 1)``, additive.

    ``padding`` follows PyTorch's ``key_padding_mask``: bool with True where a key is padding
    (ignored), or float values added to the logits (``-inf`` blocks). For Hugging Face's
    ``attention_mask`` (1 = a real token) pass ``attention_mask == 0``.
    """
    check_rank("padding", padding, (2,), "(B, S_k)")
    return _blocked_to_additive(padding, dtype)[:, :, None, None]


def ane_attention_mask(
    mask: torch.Tensor, num_heads: int | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """PyTorch's ``attn_mask`` (query-first) in the ANE layout (key-first), additive.

    ``mask``: bool (True = blocked) or float (added to the logits), shaped as
    ``nn.MultiheadAttention`` takes it: ``(S_q, S_k)`` for every sequence and head, or
    ``(B * N_h, S_q, S_k)`` per sequence and head (then ``num_heads`` is required); also
    ``(B, N_h, S_q, S_k)`` as ``scaled_dot_product_attention`` takes it.

    Returns ``(1, S_k, 1, S_q)``, or ``(B, S_k, N_h, S_q)`` for a per-head mask: the query-key
    transpose of the standard layout, because the ANE form's logits are ``(B, S_k, 1, S_q)``.
    """
    check_rank("mask", mask, (2, 3, 4), "(S_q, S_k), (B * N_h, S_q, S_k) or (B, N_h, S_q, S_k)")
    additive = _blocked_to_additive(mask, dtype)
    if additive.ndim == 2:
        return additive.transpose(0, 1)[None, :, None, :]
    if additive.ndim == 3:
        if num_heads is None:
            raise ValueError(
                f"num_heads must be given for a mask of shape {tuple(mask.shape)} "
                "(B * N_h, S_q, S_k)"
            )
        check_positive_int("num_heads", num_heads)
        if additive.shape[0] % num_heads:
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} must have B * N_h rows in axis 0 with "
                f"N_h = num_heads = {num_heads}"
            )
        additive = additive.reshape(-1, num_heads, *additive.shape[1:])
    return additive.permute(0, 3, 1, 2)  # (B, N_h, S_q, S_k) -> (B, S_k, N_h, S_q)


def ane_causal_mask(seq_len: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The causal mask in the ANE layout ``(1, S, 1, S)``: key ``k`` is blocked for query ``q``
    when ``k > q`` (:data:`MASK_VALUE` there, 0 elsewhere)."""
    check_positive_int("seq_len", seq_len)
    positions = torch.arange(seq_len)
    blocked = positions[:, None] > positions[None, :]  # [key, query]
    return _blocked_to_additive(blocked, dtype)[None, :, None, :]


def merge_ane_masks(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """The sum of the given ANE masks (None entries skipped), clamped at :data:`MASK_VALUE`.

    The clamp keeps a position blocked by two masks at -40000 rather than -80000, which fp16
    (largest finite 65504) would turn into ``-inf``. Returns None when every mask is None.
    """
    present = [m for m in masks if m is not None]
    if not present:
        return None
    total = present[0]
    for m in present[1:]:
        total = total + m
    return total.clamp(min=MASK_VALUE) if len(present) > 1 else total

"""Gathers and scatters (coremltools ``scatter_gather``).

Indices may be negative (counted from the end) in the iOS15/16 versions; from iOS17 on they
must lie in ``[0, size)`` (the ops gained ``validate_indices``). Core ML leaves out-of-range
indices undefined (or raises, with ``validate_indices``), so the executor raises for them.
Scatters with repeated indices combine in index order for ``add``, ``sub``, ``mul``, ``div``,
``max``, ``min``; for ``update`` the last write wins here, where Core ML promises no order.
"""

from __future__ import annotations

import torch

from ane_lib.coreml.ops._common import norm_axis
from ane_lib.coreml.ops._registry import OpArgs, register


def _indices(a: OpArgs, key: str, size: int) -> torch.Tensor:
    """Input ``key`` as int64 indices into an axis of ``size``, checked against the op's rule."""
    idx = a.get(key).to(torch.int64)
    negative_allowed = "validate_indices" not in a.op.input_spec.input_types
    low = -size if negative_allowed else 0
    if idx.numel() and (int(idx.min()) < low or int(idx.max()) >= size):
        raise a.invalid(
            f"indices must lie in [{low}, {size}), got values from {int(idx.min())} to "
            f"{int(idx.max())} (Core ML leaves out-of-range indices undefined)"
        )
    return torch.where(idx < 0, idx + size, idx)


@register("gather")
def _gather(a: OpArgs) -> torch.Tensor:
    # x: (*D), indices: (*N) -> D[:axis] + N[batch_dims:] + D[axis + 1:]
    x = a.get("x")
    axis = norm_axis(a.int("axis", 0), x.ndim)
    batch_dims = a.int("batch_dims", 0)
    idx = _indices(a, "indices", x.shape[axis])
    if batch_dims == 0:
        picked = x.index_select(axis, idx.reshape(-1))
        return picked.reshape((*x.shape[:axis], *idx.shape, *x.shape[axis + 1 :]))
    batch = x.shape[:batch_dims]
    xs = x.reshape(-1, *x.shape[batch_dims:])
    ids = idx.reshape(-1, *idx.shape[batch_dims:])
    inner = axis - batch_dims
    parts = [
        xb.index_select(inner, ib.reshape(-1)).reshape(
            (*xb.shape[:inner], *ib.shape, *xb.shape[inner + 1 :])
        )
        for xb, ib in zip(xs, ids, strict=True)
    ]
    out = torch.stack(parts)
    return out.reshape(*batch, *out.shape[1:])


@register("gather_along_axis")
def _gather_along_axis(a: OpArgs) -> torch.Tensor:
    # out[..., i, ...] = x[..., indices[..., i, ...], ...] along axis
    x = a.get("x")
    axis = norm_axis(a.int("axis", 0), x.ndim)
    return torch.gather(x, axis, _indices(a, "indices", x.shape[axis]))


def _flat_nd(a: OpArgs, shape: tuple[int, ...]) -> torch.Tensor:
    """gather_nd / scatter_nd indices (*I, K) -> linear indices (*I,) into shape[:K]."""
    idx = a.get("indices").to(torch.int64)
    k = idx.shape[-1]
    linear = torch.zeros(idx.shape[:-1], dtype=torch.int64)
    negative_allowed = "validate_indices" not in a.op.input_spec.input_types
    for j in range(k):
        size = shape[j]
        column = idx[..., j]
        low = -size if negative_allowed else 0
        if column.numel() and (int(column.min()) < low or int(column.max()) >= size):
            raise a.invalid(f"indices[..., {j}] must lie in [{low}, {size})")
        linear = linear * size + torch.where(column < 0, column + size, column)
    return linear


@register("gather_nd")
def _gather_nd(a: OpArgs) -> torch.Tensor:
    # x: (*B, *D), indices: (*B, *I, K) -> (*B, *I, *D[K:]) with B = batch_dims axes
    x = a.get("x")
    batch_dims = a.int("batch_dims", 0)
    k = a.get("indices").shape[-1]
    if batch_dims == 0:
        linear = _flat_nd(a, tuple(x.shape))
        flat = x.reshape(-1, *x.shape[k:])
        return flat.index_select(0, linear.reshape(-1)).reshape(*linear.shape, *x.shape[k:])
    idx = a.get("indices").to(torch.int64)
    batch = x.shape[:batch_dims]
    xs = x.reshape(-1, *x.shape[batch_dims:])
    ids = idx.reshape(-1, *idx.shape[batch_dims:])
    out = torch.stack([xb[tuple(ib.movedim(-1, 0))] for xb, ib in zip(xs, ids, strict=True)])
    return out.reshape(*batch, *out.shape[1:])


def _scatter_axis(
    a: OpArgs, data: torch.Tensor, axis: int, index: torch.Tensor, updates: torch.Tensor
) -> torch.Tensor:
    """data with ``updates`` combined into it at ``index`` along ``axis`` by the op's mode
    (``index`` and ``updates`` have the same shape)."""
    mode = a.str("mode", "update" if a.op_type == "scatter" else "add")
    updates = updates.to(data.dtype)
    if mode == "update":
        return data.scatter(axis, index, updates)
    reduce = {
        "add": "sum",
        "sub": "sum",
        "mul": "prod",
        "div": "prod",
        "max": "amax",
        "min": "amin",
    }
    if mode not in reduce:
        raise a.invalid(f"unknown scatter mode {mode!r}")
    if mode == "sub":
        updates = -updates
    elif mode == "div":
        data = data.to(torch.float64)
        updates = 1.0 / updates.to(torch.float64)
    return data.scatter_reduce(axis, index, updates, reduce[mode], include_self=True)


@register("scatter")
def _scatter(a: OpArgs) -> torch.Tensor:
    # data: (*D), indices: (C,), updates: D[:axis] + (C,) + D[axis + 1:] -> (*D)
    data = a.get("data")
    axis = norm_axis(a.int("axis", 0), data.ndim)
    idx = _indices(a, "indices", data.shape[axis])
    updates = a.get("updates")
    shape = [1] * data.ndim
    shape[axis] = -1
    return _scatter_axis(a, data, axis, idx.reshape(shape).expand(updates.shape), updates)


@register("scatter_along_axis")
def _scatter_along_axis(a: OpArgs) -> torch.Tensor:
    # data: (*D), indices, updates: (*K) with rank(K) == rank(D) -> (*D)
    data = a.get("data")
    axis = norm_axis(a.int("axis", 0), data.ndim)
    idx = _indices(a, "indices", data.shape[axis])
    return _scatter_axis(a, data, axis, idx, a.get("updates"))


@register("scatter_nd")
def _scatter_nd(a: OpArgs) -> torch.Tensor:
    # data: (*D), indices: (*I, K), updates: (*I, *D[K:]) -> (*D)
    data = a.get("data")
    k = a.get("indices").shape[-1]
    linear = _flat_nd(a, tuple(data.shape)).reshape(-1)
    rest = data.shape[k:]
    flat = data.reshape(-1, *rest)
    updates = a.get("updates").reshape(-1, *rest)
    index = linear.reshape(-1, *([1] * len(rest))).expand(updates.shape)
    return _scatter_axis(a, flat, 0, index, updates).reshape(data.shape)

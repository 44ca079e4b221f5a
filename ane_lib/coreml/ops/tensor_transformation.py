"""Layout ops (coremltools ``tensor_transformation``): reshapes, transposes, slices, block
rearrangements."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ane_lib.coreml.ops._common import norm_axes, norm_axis
from ane_lib.coreml.ops._registry import OpArgs, register


@register("reshape")
def _reshape(a: OpArgs) -> torch.Tensor:
    x = a.get("x")
    shape = [int(v) for v in a.get("shape").reshape(-1).tolist()]
    # a 0 copies the axis of x at the same position counted from the right (iOS17's rule, the
    # iOS15 rule whenever len(shape) == rank(x)); a 0 with no such axis means 1
    for i, s in enumerate(shape):
        if s == 0:
            j = x.ndim - (len(shape) - i)
            shape[i] = x.shape[j] if j >= 0 else 1
    return x.reshape(shape)


@register("reshape_like")
def _reshape_like(a: OpArgs) -> torch.Tensor:
    # the output shape concatenates ref_tensors[i].shape[begins[i]:ends[i]] (to the end when
    # end_masks[i])
    x = a.get("x")
    refs = a.get("ref_tensors")
    begins = [int(v) for v in _each(a.get("begins"))]
    ends = [int(v) for v in _each(a.get("ends"))]
    masks = [bool(v) for v in _each(a.get("end_masks"))]
    shape: list[int] = []
    for ref, b, e, m in zip(refs, begins, ends, masks, strict=True):
        shape.extend(ref.shape[b:] if m else ref.shape[b:e])
    return x.reshape(shape)


def _each(values: Any) -> list[Any]:
    if isinstance(values, (list, tuple)):
        return [v.reshape(()).item() if isinstance(v, torch.Tensor) else v for v in values]
    return list(values.reshape(-1).tolist())


@register("transpose")
def _transpose(a: OpArgs) -> torch.Tensor:
    return a.get("x").permute(*a.ints("perm"))


@register("expand_dims")
def _expand_dims(a: OpArgs) -> torch.Tensor:
    # axes count in the output's rank
    x = a.get("x")
    axes = a.ints("axes")
    rank_out = x.ndim + len(axes)
    for axis in sorted(norm_axis(ax, rank_out) for ax in axes):
        x = x.unsqueeze(axis)
    return x


@register("squeeze")
def _squeeze(a: OpArgs) -> torch.Tensor:
    x = a.get("x")
    axes = a.ints("axes", None)
    if axes is None:
        return x.squeeze()
    # like PyTorch, axes whose size is not 1 are left alone
    keep = [d for d in range(x.ndim) if not (d in norm_axes(axes, x.ndim) and x.shape[d] == 1)]
    return x.reshape([x.shape[d] for d in keep])


@register("reverse")
def _reverse(a: OpArgs) -> torch.Tensor:
    x = a.get("x")
    axes = a.ints("axes", None)
    dims = tuple(range(x.ndim)) if axes is None else norm_axes(axes, x.ndim)
    return torch.flip(x, dims) if dims else x


@register("reverse_sequence")
def _reverse_sequence(a: OpArgs) -> torch.Tensor:
    # along batch_axis, entry b has its first lengths[b] elements along seq_axis reversed
    x = a.get("x")
    seq = norm_axis(a.int("seq_axis", 0), x.ndim)
    batch = norm_axis(a.int("batch_axis", 0), x.ndim)
    lengths = [int(v) for v in a.get("lengths").reshape(-1).tolist()]
    out = x.clone()
    for b, n in enumerate(lengths):
        index: list[Any] = [slice(None)] * x.ndim
        index[batch] = b
        index[seq] = slice(0, n)
        part = x[tuple(index)]
        # seq_axis in the slice: one fewer axis before it when batch_axis precedes it
        out[tuple(index)] = torch.flip(part, (seq - (batch < seq),))
    return out


def _slice_indices(a: OpArgs, shape: tuple[int, ...]) -> tuple[list[torch.Tensor], list[bool]]:
    """Per axis, the indices ``slice_by_index``'s arguments select, and which axes squeeze."""
    rank = len(shape)
    begin = list(a.ints("begin"))
    end = list(a.ints("end"))
    stride = list(a.ints("stride", (1,) * rank))
    begin_mask = a.bools("begin_mask", rank)
    end_mask = a.bools("end_mask", rank)
    squeeze = list(a.bools("squeeze_mask", rank))
    picks: list[torch.Tensor] = []
    for i, size in enumerate(shape):
        if squeeze[i]:  # the index begin[i] (0 under begin_mask, which applies first)
            picks.append(torch.tensor([0 if begin_mask[i] else norm_axis(begin[i], size)]))
            continue
        window = slice(
            None if begin_mask[i] else begin[i], None if end_mask[i] else end[i], stride[i]
        )
        picks.append(torch.arange(*window.indices(size)))
    return picks, squeeze


@register("slice_by_index")
def _slice_by_index(a: OpArgs) -> torch.Tensor:
    # x[begin[0]:end[0]:stride[0], ...] with NumPy's rules, masks and negative strides
    x = a.get("x")
    picks, squeeze = _slice_indices(a, tuple(x.shape))
    out = x
    for axis, idx in enumerate(picks):
        out = out.index_select(axis, idx)
    return out.reshape([n for n, s in zip(out.shape, squeeze, strict=True) if not s])


@register("slice_update")
def _slice_update(a: OpArgs) -> torch.Tensor:
    # x with x[begin:end:stride, ...] = update (the slice as slice_by_index reads it)
    x = a.get("x")
    update = a.get("update").to(x.dtype)
    picks, _ = _slice_indices(a, tuple(x.shape))
    grid = torch.meshgrid(*picks, indexing="ij")
    out = x.clone()
    out.index_put_(grid, update.reshape(grid[0].shape))
    return out


@register("slice_by_size")
def _slice_by_size(a: OpArgs) -> torch.Tensor:
    # x[begin[i] : begin[i] + size[i]] per axis, a size of -1 meaning to the end
    x = a.get("x")
    index = []
    for b, s, d in zip(a.ints("begin"), a.ints("size"), x.shape, strict=True):
        b = b + d if b < 0 else b
        index.append(slice(b, d if s == -1 else b + s))
    return x[tuple(index)]


@register("sliding_windows")
def _sliding_windows(a: OpArgs) -> torch.Tensor:
    # x: (*d0, d_axis, *dn) -> (*d0, n_windows, size, *dn)
    x = a.get("x")
    axis = norm_axis(a.int("axis"), x.ndim)
    windows = x.unfold(axis, a.int("size"), a.int("stride", 1))  # size appended last
    return windows.movedim(-1, axis + 1)


@register("pixel_shuffle")
def _pixel_shuffle(a: OpArgs) -> torch.Tensor:
    # x: (N, C * f^2, H, W) -> (N, C, H * f, W * f), as torch.nn.PixelShuffle
    return F.pixel_shuffle(a.get("x"), a.int("upscale_factor"))


@register("pixel_unshuffle")
def _pixel_unshuffle(a: OpArgs) -> torch.Tensor:
    # x: (N, C, H * f, W * f) -> (N, C * f^2, H, W), as torch.nn.PixelUnshuffle
    return F.pixel_unshuffle(a.get("x"), a.int("downscale_factor"))


@register("space_to_depth")
def _space_to_depth(a: OpArgs) -> torch.Tensor:
    # x: (N, C, H, W) -> (N, b^2 C, H / b, W / b), TensorFlow's order ("DCR"):
    # out[n, (i b + j) C + c, h, w] = x[n, c, h b + i, w b + j]
    x = a.get("x")
    b = a.int("block_size")
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
    return y.reshape(n, b * b * c, h // b, w // b)


@register("depth_to_space")
def _depth_to_space(a: OpArgs) -> torch.Tensor:
    # x: (N, b^2 C, H, W) -> (N, C, H b, W b), the inverse of space_to_depth
    x = a.get("x")
    b = a.int("block_size")
    n, cb, h, w = x.shape
    c = cb // (b * b)
    y = x.reshape(n, b, b, c, h, w).permute(0, 3, 4, 1, 5, 2)
    return y.reshape(n, c, h * b, w * b)


@register("space_to_batch")
def _space_to_batch(a: OpArgs) -> torch.Tensor:
    # x: (N, C, H, W), padded by paddings, -> (bh bw N, C, H' / bh, W' / bw):
    # out[(i bw + j) N + n, c, h, w] = padded[n, c, h bh + i, w bw + j]
    x = a.get("x")
    bh, bw = a.ints("block_shape")
    (top, bottom), (left, right) = _pairs(a.ints("paddings"))
    xp = F.pad(x, (left, right, top, bottom))
    n, c, h, w = xp.shape
    y = xp.reshape(n, c, h // bh, bh, w // bw, bw).permute(3, 5, 0, 1, 2, 4)
    return y.reshape(bh * bw * n, c, h // bh, w // bw)


@register("batch_to_space")
def _batch_to_space(a: OpArgs) -> torch.Tensor:
    # the inverse of space_to_batch, then crops: (bh bw N, C, H, W) -> (N, C, H bh, W bw)
    x = a.get("x")
    bh, bw = a.ints("block_shape")
    (top, bottom), (left, right) = _pairs(a.ints("crops"))
    nb, c, h, w = x.shape
    n = nb // (bh * bw)
    y = x.reshape(bh, bw, n, c, h, w).permute(2, 3, 4, 0, 5, 1).reshape(n, c, h * bh, w * bw)
    return y[:, :, top : h * bh - bottom, left : w * bw - right]


def _pairs(flat: tuple[int, ...]) -> tuple[tuple[int, int], tuple[int, int]]:
    return (flat[0], flat[1]), (flat[2], flat[3])

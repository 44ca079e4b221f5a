"""Tensor ops (coremltools ``tensor_operation``): joining, splitting, filling, padding,
sorting, indexing helpers and shape arithmetic."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ane_lib.coreml.ops._common import norm_axis
from ane_lib.coreml.ops._registry import OpArgs, register


@register("identity")
def _identity(a: OpArgs) -> torch.Tensor:
    return a.get("x")


@register("shape")
def _shape(a: OpArgs) -> torch.Tensor:
    return torch.tensor(tuple(a.get("x").shape), dtype=torch.int32)


@register("concat")
def _concat(a: OpArgs) -> torch.Tensor:
    values = a.get("values")
    if values[0].ndim == 0:
        # scalars join into a vector (the shape arithmetic of dynamic-shape conversions)
        return torch.stack(values)
    axis = norm_axis(a.int("axis"), values[0].ndim)
    if a.bool("interleave", False):
        # out[i::n] = values[i] along axis
        stacked = torch.stack(values, dim=axis + 1)
        return stacked.flatten(axis, axis + 1)
    return torch.cat(values, dim=axis)


@register("stack")
def _stack(a: OpArgs) -> torch.Tensor:
    values = a.get("values")
    return torch.stack(values, dim=norm_axis(a.int("axis"), values[0].ndim + 1))


@register("split")
def _split(a: OpArgs) -> tuple[torch.Tensor, ...]:
    x = a.get("x")
    axis = norm_axis(a.int("axis"), x.ndim)
    if a.has("split_sizes"):
        return tuple(torch.split(x, list(a.ints("split_sizes")), dim=axis))
    n = a.int("num_splits")
    return tuple(torch.split(x, x.shape[axis] // n, dim=axis))


@register("tile")
def _tile(a: OpArgs) -> torch.Tensor:
    return a.get("x").repeat(*a.ints("reps"))


@register("flatten2d")
def _flatten2d(a: OpArgs) -> torch.Tensor:
    # (d_0 ... d_{axis-1}, d_axis ... d_n) -> (prod(d_0..d_{axis-1}), prod(d_axis..d_n))
    x = a.get("x")
    axis = norm_axis(a.int("axis", 1), x.ndim)
    lead = 1
    for d in x.shape[:axis]:
        lead *= d
    return x.reshape(lead, -1)


@register("pad")
def _pad(a: OpArgs) -> torch.Tensor:
    # pad: (2N,) before/after pairs for the last N axes of x
    x = a.get("x")
    pad = [int(v) for v in a.get("pad").reshape(-1).tolist()]
    n = len(pad) // 2
    mode = a.str("mode", "constant")
    if mode == "constant":
        widths = [w for i in reversed(range(n)) for w in (pad[2 * i], pad[2 * i + 1])]
        return F.pad(x, widths, value=a.float("constant_val", 0.0))
    if mode not in ("reflect", "replicate"):
        raise a.invalid(f"unknown pad mode {mode!r}")
    out = x
    for i in range(n):
        axis = x.ndim - n + i
        before, after = pad[2 * i], pad[2 * i + 1]
        size = x.shape[axis]
        positions = torch.arange(-before, size + after)
        if mode == "replicate":  # the edge value repeated
            index = positions.clamp(0, size - 1)
        else:  # mirrored about the edge, the edge not repeated
            period = 2 * (size - 1) if size > 1 else 1
            m = torch.remainder(positions.abs(), period)
            index = torch.where(m > size - 1, period - m, m)
        out = out.index_select(axis, index)
    return out


@register("fill")
def _fill(a: OpArgs) -> torch.Tensor:
    shape = [int(v) for v in a.get("shape").reshape(-1).tolist()]
    value = a.get("value", torch.tensor(0.0))
    return torch.full(shape, value.item(), dtype=value.dtype)


@register("fill_like")
def _fill_like(a: OpArgs) -> torch.Tensor:
    value = a.get("value", torch.tensor(0.0))
    return torch.full(tuple(a.get("ref_tensor").shape), value.item(), dtype=value.dtype)


@register("range_1d")
def _range_1d(a: OpArgs) -> torch.Tensor:
    start, end, step = (a.get(k) for k in ("start", "end", "step"))
    if all(not v.is_floating_point() for v in (start, end, step)):
        return torch.arange(int(start), int(end), int(step), dtype=torch.int64)
    return torch.arange(float(start), float(end), float(step), dtype=torch.float64)


@register("band_part")
def _band_part(a: OpArgs) -> torch.Tensor:
    # keep x[..., m, n] where (lower < 0 or m - n <= lower) and (upper < 0 or n - m <= upper)
    x = a.get("x")
    lower, upper = a.int("lower", -1), a.int("upper", -1)
    rows, cols = x.shape[-2:]
    m = torch.arange(rows)[:, None]
    n = torch.arange(cols)[None, :]
    keep = torch.ones(rows, cols, dtype=torch.bool)
    if lower >= 0:
        keep &= m - n <= lower
    if upper >= 0:
        keep &= n - m <= upper
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype))


@register("cumsum")
def _cumsum(a: OpArgs) -> torch.Tensor:
    x = a.get("x")
    axis = norm_axis(a.int("axis", 0), x.ndim)
    reverse = a.bool("reverse", False)
    y = torch.flip(x, (axis,)) if reverse else x
    out = torch.cumsum(y, dim=axis)
    if a.bool("exclusive", False):
        out = out - y
    return torch.flip(out, (axis,)) if reverse else out


@register("one_hot")
def _one_hot(a: OpArgs) -> torch.Tensor:
    # indices: (*D) -> (*D with a new axis of size one_hot_vector_size at axis)
    idx = a.get("indices").to(torch.int64)
    depth = a.int("one_hot_vector_size")
    axis = norm_axis(a.int("axis", -1), idx.ndim + 1)
    on = a.get("on_value", torch.tensor(1))
    off = a.get("off_value", torch.tensor(0))
    positions = torch.arange(depth).reshape([-1 if d == axis else 1 for d in range(idx.ndim + 1)])
    return torch.where(idx.unsqueeze(axis) == positions, on, off)


def _sorted_order(a: OpArgs, x: torch.Tensor, axis: int) -> torch.Tensor:
    # a stable sort: equal values keep their order of appearance
    return torch.sort(x, dim=axis, descending=not a.bool("ascending", False), stable=True).indices


@register("argsort")
def _argsort(a: OpArgs) -> torch.Tensor:
    x = a.get("x")
    return _sorted_order(a, x, norm_axis(a.int("axis", -1), x.ndim))


@register("topk")
def _topk(a: OpArgs) -> Any:
    # values (and, unless return_indices is False, indices) of the k largest (smallest when
    # ascending) entries along axis; k = -1 takes them all
    x = a.get("x")
    axis = norm_axis(a.int("axis", -1), x.ndim)
    k = a.int("k", 1)
    k = x.shape[axis] if k == -1 else k
    order = _sorted_order(a, x, axis).narrow(axis, 0, k)
    values = torch.gather(x, axis, order)
    if not a.bool("return_indices", True):
        return values
    return values, order


@register("non_zero")
def _non_zero(a: OpArgs) -> torch.Tensor:
    # x: (*D) -> (N, rank(x)): the index of each non-zero element, in row-major order
    return torch.nonzero(a.get("x") != 0)


@register("non_maximum_suppression")
def _nms(a: OpArgs) -> tuple[torch.Tensor, ...]:
    # iOS15: boxes (n, B, 4) as (x, y, w, h) centres and sizes, scores (n, B, K) ->
    #   boxes (n, M, 4), scores (n, M, K), indices (n, M) (-1 pads), counts (n,)
    # iOS17: boxes (n, 4, B), scores (n, K, B), no score_threshold, no counts; outputs
    #   (n, 4, M), (n, K, M), (n, M)
    boxes, scores = a.get("boxes"), a.get("scores")
    ios17 = not a.op.input_spec.input_types.get("score_threshold")
    if ios17:
        boxes, scores = boxes.transpose(1, 2), scores.transpose(1, 2)
    threshold = a.float("iou_threshold")
    min_score = -float("inf") if ios17 else a.float("score_threshold")
    max_boxes = a.int("max_boxes")
    per_class = a.bool("per_class_suppression", False)
    n, _, k = scores.shape
    out_boxes = torch.zeros(n, max_boxes, 4, dtype=boxes.dtype)
    out_scores = torch.zeros(n, max_boxes, k, dtype=scores.dtype)
    out_index = torch.full((n, max_boxes), -1, dtype=torch.int32)
    counts = torch.zeros(n, dtype=torch.int32)
    for b in range(n):
        kept = _nms_one(boxes[b], scores[b], threshold, min_score, per_class)[:max_boxes]
        out_boxes[b, : len(kept)] = boxes[b, kept]
        out_scores[b, : len(kept)] = scores[b, kept]
        out_index[b, : len(kept)] = torch.tensor(kept, dtype=torch.int32)
        counts[b] = len(kept)
    if ios17:
        return out_boxes.transpose(1, 2), out_scores.transpose(1, 2), out_index
    return out_boxes, out_scores, out_index, counts


def _nms_one(
    boxes: torch.Tensor, scores: torch.Tensor, threshold: float, min_score: float, per_class: bool
) -> list[int]:
    """Greedy NMS of one image: box indices kept, highest score first (a box's score is its
    best class score; with ``per_class`` only boxes of the same best class suppress each
    other). When no box passes ``min_score``, the best box is kept alone."""
    best, label = scores.max(dim=-1)
    order = torch.sort(best, descending=True, stable=True).indices.tolist()
    x, y, w, h = boxes.to(torch.float64).unbind(-1)
    x0, x1, y0, y1 = x - w / 2, x + w / 2, y - h / 2, y + h / 2
    area = w * h
    kept: list[int] = []
    for i in order:
        if float(best[i]) < min_score:
            continue
        suppressed = False
        for j in kept:
            if per_class and int(label[i]) != int(label[j]):
                continue
            inter_w = max(0.0, float(torch.minimum(x1[i], x1[j]) - torch.maximum(x0[i], x0[j])))
            inter_h = max(0.0, float(torch.minimum(y1[i], y1[j]) - torch.maximum(y0[i], y0[j])))
            inter = inter_w * inter_h
            union = float(area[i] + area[j]) - inter
            if union > 0 and inter / union > threshold:
                suppressed = True
                break
        if not suppressed:
            kept.append(i)
    if not kept:
        kept = [order[0]]
    return kept

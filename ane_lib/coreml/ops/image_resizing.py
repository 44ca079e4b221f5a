"""Resampling of images (coremltools ``image_resizing``): upsampling, resizing, cropping,
sampling at coordinates.

Where the op definitions leave a rule out, the outputs Core ML produced in coremltools' own op
tests (``coremltools/converters/mil/mil/ops/tests``) fix it: nearest-neighbour resizing reads
source pixel ``floor(i * in_size / out_size)`` (``resize`` the nearest one, ``floor(i * in_size /
out_size + 1/2)``); ``crop_resize`` samples a box like TensorFlow's
``crop_and_resize``; ``resample`` rounds to the nearest pixel half-to-even.
"""

from __future__ import annotations

import math

import torch

from ane_lib.coreml.ops._registry import OpArgs, register

_SAMPLING_MODES = ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS", "DEFAULT", "OFFSET_CORNERS",
                   "UNALIGN_CORNERS")  # fmt: skip


def _grid(mode: str, size_in: int, size_out: int) -> torch.Tensor:
    """Fractional source positions (float64) of ``size_out`` samples of ``size_in`` pixels,
    by ``resize_bilinear``'s ``sampling_mode`` rules, clamped to ``[0, size_in - 1]``."""
    i = torch.arange(size_out, dtype=torch.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if size_out == 1:
            grid = torch.full((1,), (size_in - 1) / 2 if mode == "ALIGN_CORNERS" else 0.0)
        else:
            grid = i * ((size_in - 1) / (size_out - 1))
    elif mode == "DEFAULT":
        spacing = (size_in - size_in / size_out) / (size_out - 1) if size_out > 1 else 0.0
        grid = i * spacing
    elif mode == "OFFSET_CORNERS":
        delta = max(1, size_in - 1) / size_out
        grid = 0.5 * delta + i * delta
    elif mode == "UNALIGN_CORNERS":
        spacing = size_in / size_out
        grid = i * spacing + 0.5 * spacing - 0.5
    else:
        raise ValueError(f"unknown sampling_mode {mode!r}; expected one of {_SAMPLING_MODES}")
    return grid.clamp(0, size_in - 1)


def _linear_along(x: torch.Tensor, axis: int, grid: torch.Tensor) -> torch.Tensor:
    """Sample ``x`` along ``axis`` at fractional positions ``grid`` (linear interpolation)."""
    low = torch.floor(grid).to(torch.int64)
    high = torch.clamp(low + 1, max=x.shape[axis] - 1)
    shape = [1] * x.ndim
    shape[axis] = -1
    frac = (grid - low).to(x.dtype).reshape(shape)
    return x.index_select(axis, low) * (1 - frac) + x.index_select(axis, high) * frac


def _nearest_along(
    x: torch.Tensor, axis: int, size_out: int, rounded: bool = False
) -> torch.Tensor:
    # output position i reads input floor(i * size_in / size_out) (upsample_nearest_neighbor,
    # resize_nearest_neighbor) or, for resize's NEAREST_NEIGHBOR, the input nearest to that
    # point, floor(i * size_in / size_out + 1/2) (Core ML's outputs in coremltools' tests:
    # 2 rows resized to 3 read rows 0, 1, 1)
    size_in = x.shape[axis]
    scaled = torch.arange(size_out) * size_in
    if rounded:
        scaled = scaled + size_out // 2
    src = torch.div(scaled, size_out, rounding_mode="floor")
    return x.index_select(axis, src.clamp(max=size_in - 1))


def _scaled(size: int, scale: float) -> int:
    return int(math.floor(size * scale))


@register("upsample_nearest_neighbor")
def _upsample_nearest(a: OpArgs) -> torch.Tensor:
    # x: (*D, H, W) -> (*D, floor(H * sh), floor(W * sw))
    x = a.get("x")
    out = _nearest_along(x, x.ndim - 2, _scaled(x.shape[-2], a.float("scale_factor_height", 1)))
    return _nearest_along(out, x.ndim - 1, _scaled(x.shape[-1], a.float("scale_factor_width", 1)))


@register("resize_nearest_neighbor")
def _resize_nearest(a: OpArgs) -> torch.Tensor:
    # x: (*D, H, W) -> (*D, target_size_height, target_size_width)
    x = a.get("x")
    out = _nearest_along(x, x.ndim - 2, a.int("target_size_height"))
    return _nearest_along(out, x.ndim - 1, a.int("target_size_width"))


@register("upsample_bilinear")
def _upsample_bilinear(a: OpArgs) -> torch.Tensor:
    # x: (*D, H, W) -> (*D, floor(H * sh), floor(W * sw)); the sampling grid follows from the
    # input and output sizes (the op's notes), not from the scale factors
    x = a.get("x")
    align = a.bool("align_corners", True)
    half_pixel = a.bool("half_pixel_centers", not align)
    out = x
    for axis, key in ((x.ndim - 2, "scale_factor_height"), (x.ndim - 1, "scale_factor_width")):
        size_in = x.shape[axis]
        size_out = _scaled(size_in, a.float(key, 1))
        half = "UNALIGN_CORNERS" if half_pixel else "DEFAULT"
        mode = "STRICT_ALIGN_CORNERS" if align else half
        out = _linear_along(out, axis, _grid(mode, size_in, size_out))
    return out


@register("resize_bilinear")
def _resize_bilinear(a: OpArgs) -> torch.Tensor:
    # x: (*D, H, W) -> (*D, target_size_height, target_size_width)
    x = a.get("x")
    mode = a.str("sampling_mode", "DEFAULT")
    out = x
    for axis, key in ((x.ndim - 2, "target_size_height"), (x.ndim - 1, "target_size_width")):
        out = _linear_along(out, axis, _grid(mode, x.shape[axis], a.int(key, 1)))
    return out


@register("resize")
def _resize(a: OpArgs) -> torch.Tensor:
    # x: (..., *D) -> the last resized_dims axes resized to the last entries of shape (a 0
    # keeps the corresponding axis of x)
    x = a.get("x")
    shape = [int(v) for v in a.get("shape").reshape(-1).tolist()]
    dims = a.int("resized_dims")
    interpolation = a.str("interpolation_mode", "LINEAR")
    mode = a.str("sampling_mode", "DEFAULT")
    if interpolation == "NEAREST_NEIGHBOR" and mode != "DEFAULT":
        raise a.unsupported(
            f"nearest-neighbour resizing with sampling_mode {mode!r}: the op's definition does "
            "not say which source pixel such a mode reads (DEFAULT reads floor(i * in / out))"
        )
    out = x
    for j in range(dims):
        axis = x.ndim - dims + j
        size_out = shape[len(shape) - dims + j] or x.shape[axis]
        if interpolation == "NEAREST_NEIGHBOR":
            out = _nearest_along(out, axis, size_out, rounded=True)
        else:
            out = _linear_along(out, axis, _grid(mode, x.shape[axis], size_out))
    return out


@register("crop")
def _crop(a: OpArgs) -> torch.Tensor:
    # x: (*D, H, W) -> (*D, H - top - bottom, W - left - right)
    x = a.get("x")
    top, bottom = a.ints("crop_height")
    left, right = a.ints("crop_width")
    return x[..., top : x.shape[-2] - bottom, left : x.shape[-1] - right]


# ---------------------------------------------------------------------------------------------
# sampling at coordinates: resample, affine, crop_resize


def _sample_2d(
    image: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    *,
    bilinear: bool,
    padding: str,
    value: float,
) -> torch.Tensor:
    """Sample ``image: (C, H, W)`` at pixel positions ``rows, cols: (*P)`` -> ``(C, *P)``.

    ``padding`` is how positions outside the image read: "constant" (``value``, blended in
    by bilinear interpolation), "border" (the nearest edge), "reflection" (mirrored about
    the edge pixels' centres), "symmetric" (mirrored about the edges, edges repeated).
    """
    _, height, width = image.shape
    rows, cols = rows.to(torch.float64), cols.to(torch.float64)
    if padding == "border":
        rows, cols = rows.clamp(0, height - 1), cols.clamp(0, width - 1)
    elif padding in ("reflection", "symmetric"):
        rows, cols = _reflect(rows, height, padding), _reflect(cols, width, padding)
    elif padding != "constant":
        raise ValueError(f"unknown padding_mode {padding!r}")

    def read(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        flat = (r.clamp(0, height - 1) * width + c.clamp(0, width - 1)).reshape(-1)
        got = image.reshape(image.shape[0], -1)[:, flat].reshape(image.shape[0], *r.shape)
        if padding != "constant":  # positions already folded into the image: edges repeat
            return got
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        return torch.where(inside, got, torch.full((), value, dtype=image.dtype))

    if not bilinear:
        # the nearest pixel, halves to even; outside positions (constant) read the value
        return read(torch.round(rows).to(torch.int64), torch.round(cols).to(torch.int64))
    r0, c0 = torch.floor(rows), torch.floor(cols)
    fr, fc = (rows - r0).to(image.dtype), (cols - c0).to(image.dtype)
    r0, c0 = r0.to(torch.int64), c0.to(torch.int64)
    top = read(r0, c0) * (1 - fc) + read(r0, c0 + 1) * fc
    bottom = read(r0 + 1, c0) * (1 - fc) + read(r0 + 1, c0 + 1) * fc
    return top * (1 - fr) + bottom * fr


def _reflect(pos: torch.Tensor, size: int, padding: str) -> torch.Tensor:
    if padding == "reflection":  # |1 2 3| -> 2 3 2 |1 2 3| 2 1: mirror about 0 and size - 1
        if size == 1:
            return torch.zeros_like(pos)
        period = 2 * (size - 1)
        m = torch.remainder(pos.abs(), period)
        return torch.where(m > size - 1, period - m, m)
    # symmetric: |1 2 3| -> 3 2 1 |1 2 3| 3 2 1: mirror about -0.5 and size - 0.5
    m = torch.remainder(pos + 0.5, 2 * size)
    return torch.where(m >= size, 2 * size - m, m) - 0.5


def _to_pixels(coord: torch.Tensor, size: int, mode: str, align: bool) -> torch.Tensor:
    """Coordinates of one axis in ``coordinates_mode`` -> pixel positions."""
    coord = coord.to(torch.float64)
    if mode == "unnormalized":
        return coord
    if mode == "normalized_minus_one_to_one":
        return (coord + 1) / 2 * (size - 1) if align else ((coord + 1) * size - 1) / 2
    if mode == "normalized_zero_to_one":
        return coord * (size - 1) if align else coord * size - 0.5
    raise ValueError(f"unknown coordinates_mode {mode!r}")


def _sampling(a: OpArgs) -> bool:
    mode = a.str("sampling_mode").lower()
    if mode not in ("bilinear", "nearest"):
        raise a.invalid(f"unknown sampling_mode {mode!r}")
    return mode == "bilinear"


@register("resample")
def _resample(a: OpArgs) -> torch.Tensor:
    # x: (B, C, H, W), coordinates: (B, H2, W2, 2) as (w, h) -> (B, C, H2, W2)
    x = a.get("x")
    coords = a.get("coordinates")
    mode, align = a.str("coordinates_mode"), a.bool("align_corners")
    bilinear = _sampling(a)
    padding, value = a.str("padding_mode").lower(), a.float("padding_value")
    out = []
    for b in range(x.shape[0]):
        cols = _to_pixels(coords[b, ..., 0], x.shape[3], mode, align)
        rows = _to_pixels(coords[b, ..., 1], x.shape[2], mode, align)
        out.append(_sample_2d(x[b], rows, cols, bilinear=bilinear, padding=padding, value=value))
    return torch.stack(out)


@register("affine")
def _affine(a: OpArgs) -> torch.Tensor:
    # x: (B, C, H, W), transform_matrix: (B or 1, 6) -> (B, C, output_height, output_width):
    # output point (x, y) in [-1, 1] reads x' = a0 x + a1 y + a2, y' = b0 x + b1 y + b2
    x = a.get("x")
    matrix = a.get("transform_matrix").to(torch.float64)
    height, width = a.int("output_height"), a.int("output_width")
    if a.str("coordinates_mode").lower() != "normalized_minus_one_to_one":
        raise a.unsupported("coordinates_mode other than 'normalized_minus_one_to_one'")
    align = a.bool("align_corners")
    ys = _normalized_axis(height, align)[:, None].expand(height, width)
    xs = _normalized_axis(width, align)[None, :].expand(height, width)
    padding, value = a.str("padding_mode").lower(), a.float("padding_value")
    bilinear = _sampling(a)
    out = []
    for b in range(x.shape[0]):
        m = matrix[b if matrix.shape[0] > 1 else 0]
        src_x = m[0] * xs + m[1] * ys + m[2]
        src_y = m[3] * xs + m[4] * ys + m[5]
        cols = _to_pixels(src_x, x.shape[3], "normalized_minus_one_to_one", align)
        rows = _to_pixels(src_y, x.shape[2], "normalized_minus_one_to_one", align)
        out.append(_sample_2d(x[b], rows, cols, bilinear=bilinear, padding=padding, value=value))
    return torch.stack(out)


def _normalized_axis(n: int, align: bool) -> torch.Tensor:
    """The [-1, 1] coordinates of ``n`` output positions (pixel centres unless ``align``)."""
    i = torch.arange(n, dtype=torch.float64)
    if align:
        return i * (2 / (n - 1)) - 1 if n > 1 else torch.zeros(1, dtype=torch.float64)
    return (2 * i + 1) / n - 1


_BOX_ORDER = {  # box_coordinate_mode -> (order of the 4 values as h0, w0, h1, w1), centre form
    "CORNERS_HEIGHT_FIRST": ((0, 1, 2, 3), False),
    "CORNERS_WIDTH_FIRST": ((1, 0, 3, 2), False),
    "CENTER_SIZE_HEIGHT_FIRST": ((0, 1, 2, 3), True),
    "CENTER_SIZE_WIDTH_FIRST": ((1, 0, 3, 2), True),
}


def _box_grid(start: float, end: float, n: int, mode: str) -> torch.Tensor:
    # TensorFlow's crop_and_resize: n points from start to end; one point: the centre
    # (ALIGN_CORNERS) or the start (STRICT_ALIGN_CORNERS)
    if n == 1:
        return torch.tensor([(start + end) / 2 if mode == "ALIGN_CORNERS" else start])
    return start + torch.arange(n, dtype=torch.float64) * ((end - start) / (n - 1))


@register("crop_resize")
def _crop_resize(a: OpArgs) -> torch.Tensor:
    # iOS15/16: x: (B, C, H, W), roi: (N, 1, 4 or 5, 1, 1) -> (N, B, C, th, tw) (4 values:
    # every image) or (N, 1, C, th, tw) (5 values: the first is the image index);
    # iOS17: boxes: (N, 4), box_indices: (N,) -> (N, C, th, tw)
    x = a.get("x")
    height, width = x.shape[2:]
    mode = a.str("sampling_mode", "DEFAULT")
    if mode not in ("ALIGN_CORNERS", "STRICT_ALIGN_CORNERS"):
        raise a.unsupported(
            f"crop_resize with sampling_mode {mode!r}: the op's definition does not say how "
            "such a mode maps a box to sample positions (ALIGN_CORNERS and "
            "STRICT_ALIGN_CORNERS sample it as TensorFlow's crop_and_resize)"
        )
    th, tw = a.int("target_height", 1), a.int("target_width", 1)
    order, centre = _BOX_ORDER[a.str("box_coordinate_mode", "CORNERS_HEIGHT_FIRST")]
    scale = a.float("spatial_scale", 1.0)
    normalized = a.bool("normalized_coordinates", False)
    value = a.float("pad_value", 0.0)
    if a.has("boxes"):
        boxes = a.get("boxes").to(torch.float64)
        n = boxes.shape[0]
        index = a.get("box_indices") if a.has("box_indices") else torch.arange(n)
        jobs = [(int(index[i]), boxes[i]) for i in range(n)]
    else:
        roi = a.get("roi").to(torch.float64).reshape(a.get("roi").shape[0], -1)
        jobs = [(-1 if roi.shape[1] == 4 else int(r[0]), r[-4:]) for r in roi]
    crops = []
    for image_index, box in jobs:
        h0, w0, h1, w1 = (float(box[k]) for k in order)
        if centre:  # (centre, size) -> corners
            h0, w0, h1, w1 = h0 - h1 / 2, w0 - w1 / 2, h0 + h1 / 2, w0 + w1 / 2
        h0, w0, h1, w1 = (v * scale for v in (h0, w0, h1, w1))
        if normalized:
            h0, h1 = h0 * (height - 1), h1 * (height - 1)
            w0, w1 = w0 * (width - 1), w1 * (width - 1)
        rows = _box_grid(h0, h1, th, mode)[:, None].expand(th, tw)
        cols = _box_grid(w0, w1, tw, mode)[None, :].expand(th, tw)
        # a sample outside the image reads pad_value (crop_and_resize's extrapolation value)
        outside = (rows < 0) | (rows > height - 1) | (cols < 0) | (cols > width - 1)
        images = range(x.shape[0]) if image_index < 0 else [image_index]
        samples = [
            _sample_2d(x[i], rows, cols, bilinear=True, padding="constant", value=value)
            for i in images
        ]
        crops.append(torch.where(outside, torch.tensor(value, dtype=x.dtype), torch.stack(samples)))
    out = torch.stack(crops)  # (N, B or 1, C, th, tw)
    return out[:, 0] if a.has("boxes") else out

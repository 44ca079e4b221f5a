"""Conformance of the resampling ops (coremltools ``image_resizing``).

References from the definitions, and Core ML's own outputs where the definitions leave a rule
out: coremltools' op tests (``coremltools/converters/mil/mil/ops/tests/iOS1*/
test_image_resizing.py``) record what Core ML returned on a Mac for small cases, and those
values are asserted here. They fix that nearest-neighbour resampling reads source pixel
``floor(i * in / out)`` (the symptom of issue 15: reading ``floor(i / scale)`` was off by 6 on a
3-wide input scaled by 1.12), that ``resize``'s nearest neighbour is the nearest input to
``i * in / out`` (2 rows to 3 read rows 0, 1, 1), how ``crop_resize`` samples a box, and how
``resample`` pads.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conformance._harness import IOS15, IOS16, IOS17, assert_fp32, build, check, mb, run_built

_R = np.random.default_rng(21)


def _nearest(x: Any, axis: int, out: int, rounded: bool = False) -> Any:
    # floor(i * in / out), or the nearest input to i * in / out (resize, see below)
    size = x.shape[axis]
    point = np.arange(out) * size / out
    src = np.floor(point + 0.5) if rounded else np.floor(point)
    return np.take(x, np.minimum(src.astype(int), size - 1), axis=axis)


def _grid(mode: str, xin: int, xout: int) -> Any:
    """resize_bilinear's sampling_mode rules, as its docstring states them."""
    i = np.arange(xout, dtype=np.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if xout == 1:
            g = np.array([(xin - 1) / 2 if mode == "ALIGN_CORNERS" else 0.0])
        else:
            g = i * (xin - 1) / (xout - 1)
    elif mode == "DEFAULT":
        g = i * ((xin - xin / xout) / (xout - 1) if xout > 1 else 0.0)
    elif mode == "OFFSET_CORNERS":
        delta = max(1, xin - 1) / xout
        g = 0.5 * delta + i * delta
    else:  # UNALIGN_CORNERS
        spacing = xin / xout
        g = i * spacing + 0.5 * spacing - 0.5
    return np.clip(g, 0, xin - 1)


def _linear(x: Any, axis: int, grid: Any) -> Any:
    low = np.floor(grid).astype(int)
    high = np.minimum(low + 1, x.shape[axis] - 1)
    shape = [1] * x.ndim
    shape[axis] = -1
    frac = (grid - low).reshape(shape)
    return np.take(x, low, axis=axis) * (1 - frac) + np.take(x, high, axis=axis) * frac


@pytest.mark.parametrize(("sh", "sw"), [(1, 2), (2, 3), (3.17, 0.67), (2.0, 1.12), (0.5, 1.5)])
def test_upsample_nearest_neighbor(sh: float, sw: float) -> None:
    x = _R.normal(size=(2, 3, 4, 5)).astype(np.float32)
    hout, wout = math.floor(4 * sh), math.floor(5 * sw)
    check(
        "upsample_nearest_neighbor",
        lambda x: mb.upsample_nearest_neighbor(x=x, scale_factor_height=sh, scale_factor_width=sw),
        {"x": x},
        lambda x: _nearest(_nearest(x, 2, hout), 3, wout),
        what=f"{sh} {sw}",
    )


def test_upsample_nearest_neighbor_matches_core_ml_outputs() -> None:
    # coremltools' iOS15 TestUpsampleNearestNeighborFractionalScales (Core ML, CPU)
    x = np.array([1.5, -2.5, 3.5], dtype=np.float32).reshape([1, 1, 1, 3])
    program = build(
        lambda x: (
            mb.upsample_nearest_neighbor(x=x, scale_factor_height=1.0, scale_factor_width=1.0),
            mb.upsample_nearest_neighbor(x=x, scale_factor_height=3.17, scale_factor_width=0.67),
            mb.upsample_nearest_neighbor(x=x, scale_factor_height=2.0, scale_factor_width=1.12),
        ),
        {"x": x},
        IOS15,
    )
    same, shrunk, widened = run_built(program, {"x": x})
    np.testing.assert_array_equal(same, x)
    np.testing.assert_array_equal(shrunk, np.array([1.5, -2.5] * 3, np.float32).reshape(1, 1, 3, 2))
    np.testing.assert_array_equal(
        widened, np.array([1.5, -2.5, 3.5] * 2, np.float32).reshape(1, 1, 2, 3)
    )


@pytest.mark.parametrize(("th", "tw"), [(1, 1), (3, 7), (8, 2)])
def test_resize_nearest_neighbor(th: int, tw: int) -> None:
    x = _R.normal(size=(3, 4, 5)).astype(np.float32)
    check(
        "resize_nearest_neighbor",
        lambda x: mb.resize_nearest_neighbor(x=x, target_size_height=th, target_size_width=tw),
        {"x": x},
        lambda x: _nearest(_nearest(x, 1, th), 2, tw),
    )


@pytest.mark.parametrize("scales", [(1.0, 3.0), (2.0, 2.0), (2.6, 1.0), (0.5, 0.75), (1.5, 2.25)])
# half-pixel centres with aligned corners is not a documented combination
@pytest.mark.parametrize(
    ("align", "half_pixel"),
    [(True, None), (True, False), (False, None), (False, False), (False, True)],
)
def test_upsample_bilinear(scales: Any, align: bool, half_pixel: Any) -> None:
    sh, sw = scales
    x = _R.normal(size=(1, 2, 4, 5)).astype(np.float32)
    hout, wout = math.floor(4 * sh), math.floor(5 * sw)
    half = (not align) if half_pixel is None else half_pixel
    mode = "STRICT_ALIGN_CORNERS" if align else ("UNALIGN_CORNERS" if half else "DEFAULT")
    kwargs: dict[str, Any] = {
        "scale_factor_height": sh,
        "scale_factor_width": sw,
        "align_corners": align,
    }
    if half_pixel is not None:
        kwargs["half_pixel_centers"] = half_pixel
    check(
        "upsample_bilinear",
        lambda x: mb.upsample_bilinear(x=x, **kwargs),
        {"x": x},
        lambda x: _linear(_linear(x, 2, _grid(mode, 4, hout)), 3, _grid(mode, 5, wout)),
        opset=IOS16,
        what=str(kwargs),
    )
    if half_pixel is None:  # PyTorch's bilinear interpolation, recompute_scale_factor=True
        ref = F.interpolate(
            torch.from_numpy(x), size=(hout, wout), mode="bilinear", align_corners=align
        )
        (got,) = run_built(
            build(lambda x: mb.upsample_bilinear(x=x, **kwargs), {"x": x}, IOS15), {"x": x}
        )
        assert_fp32(got, ref.numpy(), "upsample_bilinear vs torch")


def test_upsample_bilinear_matches_core_ml_outputs() -> None:
    # coremltools' iOS14 TestUpsampleBilinear smoke test (Core ML's outputs)
    x = np.array([0, 1], dtype=np.float32).reshape(1, 1, 2)
    program = build(
        lambda x: (
            mb.upsample_bilinear(
                x=x, scale_factor_height=1, scale_factor_width=3, align_corners=True
            ),
            mb.upsample_bilinear(
                x=x, scale_factor_height=1.0, scale_factor_width=2.6, align_corners=False
            ),
        ),
        {"x": x},
        IOS15,
    )
    aligned, fractional = run_built(program, {"x": x})
    np.testing.assert_allclose(aligned.ravel(), [0, 0.2, 0.4, 0.6, 0.8, 1], atol=1e-6)
    np.testing.assert_allclose(fractional.ravel(), [0, 0.1, 0.5, 0.9, 1], atol=1e-6)


# resize_bilinear's docstring: the grid points for an input of 2 ([0, 1]) are its outputs
DOC_GRIDS = {
    ("UNALIGN_CORNERS", 5): [0.0, 0.1, 0.5, 0.9, 1.0],
    ("STRICT_ALIGN_CORNERS", 5): [0.0, 0.25, 0.5, 0.75, 1.0],
    ("ALIGN_CORNERS", 5): [0.0, 0.25, 0.5, 0.75, 1.0],
    ("DEFAULT", 5): [0.0, 0.4, 0.8, 1.0, 1.0],
    ("OFFSET_CORNERS", 5): [0.1, 0.3, 0.5, 0.7, 0.9],
    ("UNALIGN_CORNERS", 6): [0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1.0],
    ("STRICT_ALIGN_CORNERS", 6): [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
    ("DEFAULT", 6): [0.0, 1 / 3, 2 / 3, 1.0, 1.0, 1.0],
    ("OFFSET_CORNERS", 6): [1 / 12, 0.25, 5 / 12, 7 / 12, 0.75, 11 / 12],
}


@pytest.mark.parametrize(("mode", "n"), list(DOC_GRIDS))
def test_resize_bilinear_grid_of_the_definition(mode: str, n: int) -> None:
    x = np.array([0, 1], dtype=np.float32).reshape(1, 1, 2)
    program = build(
        lambda x: mb.resize_bilinear(
            x=x, target_size_height=1, target_size_width=n, sampling_mode=mode
        ),
        {"x": x},
    )
    (got,) = run_built(program, {"x": x})
    np.testing.assert_allclose(got.ravel(), DOC_GRIDS[(mode, n)], atol=2e-3)  # the doc rounds


@pytest.mark.parametrize(
    "mode",
    ["STRICT_ALIGN_CORNERS", "ALIGN_CORNERS", "DEFAULT", "OFFSET_CORNERS", "UNALIGN_CORNERS"],
)
@pytest.mark.parametrize(("th", "tw"), [(1, 1), (3, 8), (6, 2)])
def test_resize_bilinear(mode: str, th: int, tw: int) -> None:
    x = _R.normal(size=(2, 4, 5)).astype(np.float32)
    check(
        "resize_bilinear",
        lambda x: mb.resize_bilinear(
            x=x, target_size_height=th, target_size_width=tw, sampling_mode=mode
        ),
        {"x": x},
        lambda x: _linear(_linear(x, 1, _grid(mode, 4, th)), 2, _grid(mode, 5, tw)),
        what=mode,
    )


@pytest.mark.parametrize("mode", ["LINEAR", "NEAREST_NEIGHBOR"])
@pytest.mark.parametrize(("shape", "dims"), [([1, 6, 8], 2), ([7], 1), ([0, 3], 2), ([5, 0, 2], 3)])
def test_resize(mode: str, shape: list[int], dims: int) -> None:
    x = _R.normal(size=(1, 2, 3, 4)).astype(np.float32)

    def reference(x: Any) -> Any:
        out = x
        for j in range(dims):
            axis = x.ndim - dims + j
            n = shape[len(shape) - dims + j] or x.shape[axis]
            out = (
                _nearest(out, axis, n, True)
                if mode == "NEAREST_NEIGHBOR"
                else _linear(out, axis, _grid("DEFAULT", x.shape[axis], n))
            )
        return out

    check(
        "resize",
        lambda x: mb.resize(
            x=x,
            shape=np.array(shape, np.int32),
            resized_dims=np.uint32(dims),
            interpolation_mode=mode,
            sampling_mode="DEFAULT",
        ),
        {"x": x},
        reference,
        what=f"{shape} {dims}",
    )


def test_resize_matches_core_ml_outputs() -> None:
    # coremltools' iOS17 TestResize (Core ML's outputs)
    x = np.array([-6.174, 9.371], dtype=np.float32).reshape([1, 1, 1, 2, 1])
    program = build(
        lambda x: mb.resize(
            x=x,
            shape=[1, 1, 3, 2],
            resized_dims=np.uint32(2),
            interpolation_mode="NEAREST_NEIGHBOR",
        ),
        {"x": x},
    )
    (got,) = run_built(program, {"x": x})
    np.testing.assert_array_equal(
        got.ravel(), np.float32([-6.174, -6.174, 9.371, 9.371, 9.371, 9.371])
    )
    y = np.array([0, 1], dtype=np.float32).reshape([1, 1, 2])
    program = build(lambda x: mb.resize(x=x, shape=[1, 1, 5], resized_dims=np.uint32(2)), {"x": y})
    (got,) = run_built(program, {"x": y})
    np.testing.assert_allclose(got.ravel(), [0, 0.4, 0.8, 1, 1], atol=1e-6)


def test_crop() -> None:
    x = _R.normal(size=(2, 3, 6, 7)).astype(np.float32)
    check(
        "crop",
        lambda x: mb.crop(x=x, crop_height=[1, 2], crop_width=[0, 3]),
        {"x": x},
        lambda x: x[..., 1:4, 0:4],
    )


def test_crop_resize_matches_core_ml_outputs() -> None:
    # coremltools' iOS14 TestCropResize (Core ML's outputs, iOS15 form with a roi tensor)
    x = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)
    roi = np.array([[1, 1, 2, 2]], dtype=np.float32).reshape(1, 1, 4, 1, 1)
    roi_normalized = np.array([[0, 0.0, 0.0, 1.0 / 3, 1.0 / 3]], dtype=np.float32).reshape(
        1, 1, 5, 1, 1
    )
    roi_invert = np.array([[2, 2, 1, 1]], dtype=np.float32).reshape(1, 1, 4, 1, 1)

    def crop(roi: Any, size: int, normalized: bool = False) -> Any:
        return lambda x: mb.crop_resize(
            x=x,
            roi=roi,
            target_width=size,
            target_height=size,
            normalized_coordinates=normalized,
            sampling_mode="ALIGN_CORNERS",
        )

    expected = [
        (crop(roi, 2), [6, 7, 10, 11]),
        (
            crop(roi, 4),
            [
                6,
                6.333333,
                6.66666,
                7,
                7.333333,
                7.666666,
                8,
                8.333333,
                8.666666,
                9,
                9.3333333,
                9.666666,
                10,
                10.333333,
                10.666666,
                11,
            ],
        ),
        (crop(roi, 1), [8.5]),
        (crop(roi_normalized, 2, True), [1, 2, 5, 6]),
        (crop(roi_invert, 2), [11, 10, 7, 6]),
    ]
    for fn, values in expected:
        (got,) = run_built(build(fn, {"x": x}, IOS15), {"x": x})
        np.testing.assert_allclose(got.ravel(), values, rtol=1e-5)


@pytest.mark.parametrize(
    "mode",
    [
        "CORNERS_HEIGHT_FIRST",
        "CORNERS_WIDTH_FIRST",
        "CENTER_SIZE_HEIGHT_FIRST",
        "CENTER_SIZE_WIDTH_FIRST",
    ],
)
def test_crop_resize_boxes(mode: str) -> None:
    # iOS17's form: boxes (N, 4) and box indices; a box beyond the image reads pad_value
    x = _R.normal(size=(2, 3, 5, 6)).astype(np.float32)
    boxes = np.array(
        [[0.5, 1.0, 3.5, 4.0], [1.0, 0.0, 4.0, 5.0], [-1.0, 2.0, 2.0, 7.0]], np.float32
    )
    index = np.array([1, 0, 1], np.int32)

    def corners(b: Any) -> tuple[float, float, float, float]:
        a0, a1, a2, a3 = (float(v) for v in b)
        if mode.startswith("CORNERS"):
            h0, w0, h1, w1 = (a0, a1, a2, a3) if "HEIGHT" in mode else (a1, a0, a3, a2)
        else:
            hc, wc, hs, ws = (a0, a1, a2, a3) if "HEIGHT" in mode else (a1, a0, a3, a2)
            h0, w0, h1, w1 = hc - hs / 2, wc - ws / 2, hc + hs / 2, wc + ws / 2
        return h0, w0, h1, w1

    def reference(x: Any) -> Any:
        out = np.zeros((3, 3, 3, 4))
        for n, b in enumerate(boxes):
            h0, w0, h1, w1 = corners(b)
            rows = h0 + np.arange(3) * (h1 - h0) / 2
            cols = w0 + np.arange(4) * (w1 - w0) / 3
            for i, r in enumerate(rows):
                for j, c in enumerate(cols):
                    if not (0 <= r <= 4 and 0 <= c <= 5):
                        out[n, :, i, j] = -2.0  # pad_value
                        continue
                    r0, c0 = int(np.floor(r)), int(np.floor(c))
                    r1, c1 = min(r0 + 1, 4), min(c0 + 1, 5)
                    fr, fc = r - r0, c - c0
                    img = x[index[n]]
                    top = img[:, r0, c0] * (1 - fc) + img[:, r0, c1] * fc
                    bottom = img[:, r1, c0] * (1 - fc) + img[:, r1, c1] * fc
                    out[n, :, i, j] = top * (1 - fr) + bottom * fr
        return out

    check(
        "crop_resize",
        lambda x: mb.crop_resize(
            x=x,
            boxes=boxes,
            box_indices=index,
            target_height=3,
            target_width=4,
            box_coordinate_mode=mode,
            sampling_mode="STRICT_ALIGN_CORNERS",
            pad_value=np.float32(-2.0) if x.dtype != 1 else np.float16(-2.0),
        ),
        {"x": x},
        reference,
        opset=IOS17,
        fp16=False,
        what=mode,
    )


def test_resample_matches_core_ml_outputs() -> None:
    # coremltools' iOS15 TestResample (Core ML's outputs): the four padding modes, both
    # samplings, the three coordinate modes
    x = np.array([11.0, 22.0, 33.0, 44.0], dtype=np.float32).reshape([1, 1, 2, 2])
    coords = np.array([-1.0, -2.0, -3.7, -1.0, 0.0, 0.0, 3.5, 1.2], np.float32).reshape(
        [1, 2, 2, 2]
    )
    cases = [
        (
            "bilinear",
            "constant",
            6.17,
            "normalized_minus_one_to_one",
            True,
            [8.585, 6.17, 27.5, 6.17],
        ),
        ("nearest", "border", -1.0, "unnormalized", False, [11.0, 11.0, 11.0, 44.0]),
        ("bilinear", "reflection", -1.0, "normalized_zero_to_one", True, [22.0, 36.3, 11.0, 34.1]),
        ("nearest", "symmetric", -1.0, "normalized_zero_to_one", False, [22.0, 33.0, 11.0, 33.0]),
    ]
    for sampling, padding, value, coordinates_mode, align, expected in cases:
        program = build(
            lambda x, c, s=sampling, p=padding, v=value, m=coordinates_mode, a=align: mb.resample(
                x=x,
                coordinates=c,
                sampling_mode=s,
                padding_mode=p,
                padding_value=np.float32(v),
                coordinates_mode=m,
                align_corners=a,
            ),
            {"x": x, "c": coords},
            IOS16,
        )
        (got,) = run_built(program, {"x": x, "c": coords})
        np.testing.assert_allclose(
            got.ravel(), expected, rtol=1e-5, err_msg=f"{sampling} {padding}"
        )


@pytest.mark.parametrize("sampling", ["bilinear", "nearest"])
@pytest.mark.parametrize(
    ("padding", "align"), [("border", True), ("border", False), ("reflection", True)]
)
def test_resample_agrees_with_torch_grid_sample(sampling: str, padding: str, align: bool) -> None:
    # torch's grid_sample with coordinates in [-1, 1]: the same definition for these modes
    # (not drawn: reflection without aligned corners, where torch mirrors about the edges
    # and the definition's example (|1, 2, 3| -> 2, 3, 2, 1, 2, 3, 2, 1, 2) about the edge
    # pixels; Core ML's outputs in coremltools' tests cover only aligned corners)
    x = _R.normal(size=(2, 3, 5, 6)).astype(np.float32)
    coords = _R.uniform(-1.4, 1.4, (2, 4, 3, 2)).astype(np.float32)
    program = build(
        lambda x, c: mb.resample(
            x=x,
            coordinates=c,
            sampling_mode=sampling,
            padding_mode=padding,
            padding_value=np.float32(0.0),
            coordinates_mode="normalized_minus_one_to_one",
            align_corners=align,
        ),
        {"x": x, "c": coords},
        IOS16,
    )
    (got,) = run_built(program, {"x": x, "c": coords})
    ref = F.grid_sample(
        torch.from_numpy(x).double(),
        torch.from_numpy(coords).double(),
        mode=sampling,
        padding_mode=padding,
        align_corners=align,
    )
    assert_fp32(got, ref.numpy(), f"resample {sampling} {padding} {align}")


@pytest.mark.parametrize("per_batch", [False, True])
def test_affine_agrees_with_torch_affine_grid(per_batch: bool) -> None:
    # output (x, y) in [-1, 1] reads (a0 x + a1 y + a2, b0 x + b1 y + b2): torch's affine_grid
    # (align_corners=True) then grid_sample (bilinear, zeros)
    x = _R.normal(size=(2, 3, 5, 6)).astype(np.float32)
    matrix = np.array(
        [[0.9, 0.2, 0.1, -0.3, 1.1, 0.05], [1.2, -0.1, -0.2, 0.1, 0.8, 0.3]], np.float32
    )
    matrix = matrix if per_batch else matrix[:1]
    program = build(
        lambda x: mb.affine(
            x=x,
            transform_matrix=matrix,
            output_height=4,
            output_width=7,
            sampling_mode="bilinear",
            padding_mode="constant",
            padding_value=np.float32(0.0),
            coordinates_mode="normalized_minus_one_to_one",
            align_corners=True,
        ),
        {"x": x},
        IOS15,
    )
    (got,) = run_built(program, {"x": x})
    theta = torch.from_numpy(np.broadcast_to(matrix, (2, 6)).reshape(2, 2, 3).copy()).double()
    grid = F.affine_grid(theta, [2, 3, 4, 7], align_corners=True)
    ref = F.grid_sample(
        torch.from_numpy(x).double(),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )
    assert_fp32(got, ref.numpy(), "affine")


def test_every_resampling_op_is_covered() -> None:
    from ane_lib.coreml.ops import REGISTRY

    covered = {
        "upsample_nearest_neighbor",
        "resize_nearest_neighbor",
        "upsample_bilinear",
        "resize_bilinear",
        "resize",
        "crop",
        "crop_resize",
        "resample",
        "affine",
    }
    assert {n for n, d in REGISTRY.items() if d.family == "image_resizing"} == covered

"""conv_einsum, patch_conv_einsum and their helpers against torch.nn.functional.conv{1,2,3}d."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ane_lib.functional.conv import (
    conv_einsum,
    conv_einsum_equation,
    conv_output_size,
    patch_conv_einsum,
    resolve_conv_padding,
    sliding_windows,
)

TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
# Small sizes per spatial rank keep 3D cases cheap.
MAX_SIZE = {1: 16, 2: 9, 3: 6}
MAX_KERNEL = {1: 5, 2: 4, 3: 3}


def torch_conv(x: torch.Tensor, weight: torch.Tensor, *args: object, **kwargs: object):
    """F.convNd chosen by weight.ndim; silences torch's 'same'-with-even-kernel perf warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return TORCH_CONV[weight.ndim - 2](x, weight, *args, **kwargs)


@st.composite
def conv_cases(draw: st.DrawFn, dtype: torch.dtype = torch.float64) -> dict:
    """A valid argument set for F.convNd: tensors plus stride/padding/dilation/groups."""
    n = draw(st.sampled_from([1, 2, 3]))
    groups = draw(st.integers(1, 3))
    c_in = groups * draw(st.integers(1, 3))
    c_out = groups * draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, MAX_KERNEL[n])) for _ in range(n))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(n))
    padding_kind = draw(st.sampled_from(["int", "tuple", "valid", "same"]))
    if padding_kind == "same":
        stride: int | tuple[int, ...] = 1
    else:
        stride = draw(st.one_of(st.integers(1, 3), st.tuples(*[st.integers(1, 3)] * n)))
    if padding_kind == "int":
        padding: object = draw(st.integers(0, 3))
    elif padding_kind == "tuple":
        padding = tuple(draw(st.integers(0, 3)) for _ in range(n))
    else:
        padding = padding_kind
    pads = resolve_conv_padding(padding, kernel, stride, dilation)  # type: ignore[arg-type]
    sizes = []
    for k, d, (left, right) in zip(kernel, dilation, pads, strict=True):
        smallest = max(1, d * (k - 1) + 1 - left - right)
        sizes.append(draw(st.integers(smallest, max(smallest, MAX_SIZE[n]))))
    batched = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    x_shape = ((draw(st.integers(1, 2)),) if batched else ()) + (c_in, *sizes)
    x = torch.randn(x_shape, generator=gen, dtype=dtype)
    weight = torch.randn((c_out, c_in // groups, *kernel), generator=gen, dtype=dtype)
    bias = torch.randn(c_out, generator=gen, dtype=dtype) if draw(st.booleans()) else None
    return dict(
        x=x,
        weight=weight,
        bias=bias,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
    )


# --------------------------------------------------------------------------- equality with torch


@settings(max_examples=200, deadline=None)
@given(conv_cases(torch.float64))
def test_conv_einsum_equals_torch_float64(case: dict) -> None:
    got = conv_einsum(**case)
    want = torch_conv(**case)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


@settings(max_examples=80, deadline=None)
@given(conv_cases(torch.float32))
def test_conv_einsum_equals_torch_float32(case: dict) -> None:
    got = conv_einsum(**case)
    want = torch_conv(**case)
    assert got.dtype == torch.float32
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@settings(max_examples=30, deadline=None)
@given(conv_cases(torch.float64))
def test_conv_einsum_gradients_equal_torch(case: dict) -> None:
    leaves = {k: v.clone().requires_grad_(True) for k, v in case.items() if k in ("x", "weight")}
    if case["bias"] is not None:
        leaves["bias"] = case["bias"].clone().requires_grad_(True)
    args = {**case, **leaves}
    grads_einsum = torch.autograd.grad(conv_einsum(**args).square().sum(), list(leaves.values()))
    grads_torch = torch.autograd.grad(torch_conv(**args).square().sum(), list(leaves.values()))
    for a, b in zip(grads_einsum, grads_torch, strict=True):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=0)


# Cases a random draw may miss: every feature at once, in 1D, 2D and 3D.
HARD_CASES = [
    # (x shape, weight shape, stride, padding, dilation, groups, bias)
    ((2, 6, 11), (4, 3, 4), 1, "same", 3, 2, True),  # even kernel, odd total padding 9
    ((6, 13), (9, 2, 2), 1, "same", 2, 3, False),  # unbatched, even kernel
    ((1, 4, 9, 10), (6, 2, 2, 4), 1, "same", (2, 1), 2, True),  # even kernels, 'same'
    ((2, 6, 9, 8), (6, 1, 3, 2), (2, 3), (1, 2), (2, 3), 6, True),  # depthwise, dilated, strided
    ((2, 4, 6, 7, 5), (4, 2, 2, 3, 2), 1, "same", (2, 1, 3), 2, True),  # 3D, 'same', even
    ((4, 5, 6, 7), (6, 2, 2, 1, 3), (1, 2, 3), (0, 1, 2), (1, 2, 1), 2, False),  # 3D unbatched
    ((1, 3, 7, 7, 7), (3, 1, 3, 3, 3), 2, 1, 2, 3, True),  # 3D depthwise
]


@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups,with_bias", HARD_CASES)
def test_conv_einsum_hard_cases_equal_torch(
    xs: tuple, ws: tuple, stride, padding, dilation, groups: int, with_bias: bool
) -> None:
    gen = torch.Generator().manual_seed(sum(xs) + sum(ws))
    x = torch.randn(xs, generator=gen, dtype=torch.float64)
    weight = torch.randn(ws, generator=gen, dtype=torch.float64)
    bias = torch.randn(ws[0], generator=gen, dtype=torch.float64) if with_bias else None
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    want = torch_conv(x, weight, bias, **kwargs)
    got = conv_einsum(x, weight, bias, **kwargs)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    if padding == "same":
        assert got.shape[-(weight.ndim - 2) :] == x.shape[-(weight.ndim - 2) :]
    # a non-contiguous input (a transposed copy, transposed back) gives the same numbers
    x_strided = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not x_strided.is_contiguous()
    torch.testing.assert_close(
        conv_einsum(x_strided, weight, bias, **kwargs), want, atol=1e-10, rtol=0
    )


@pytest.mark.parametrize("kernel,dilation", [(2, 1), (4, 1), (4, 3), (3, 2), (1, 5)])
def test_same_padding_puts_the_odd_element_on_the_right_like_torch(kernel: int, dilation: int):
    total = dilation * (kernel - 1)
    assert resolve_conv_padding("same", (kernel,), 1, dilation) == (
        (total // 2, total - total // 2),
    )
    x = torch.randn(1, 1, 11, dtype=torch.float64)
    w = torch.randn(1, 1, kernel, dtype=torch.float64)
    got = conv_einsum(x, w, padding="same", dilation=dilation)
    want = torch_conv(x, w, padding="same", dilation=dilation)
    assert got.shape[-1] == 11
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    # Padding by hand with the larger half on the right gives the same; on the left it differs.
    left, right = total // 2, total - total // 2
    by_hand = torch_conv(F.pad(x, (left, right)), w, dilation=dilation)
    torch.testing.assert_close(by_hand, want, atol=1e-12, rtol=0)
    if left != right:
        assert not torch.allclose(torch_conv(F.pad(x, (right, left)), w, dilation=dilation), want)


def test_conv_einsum_is_cross_correlation_not_flipped_convolution() -> None:
    x = torch.arange(6, dtype=torch.float64).reshape(1, 1, 6)
    w = torch.tensor([[[1.0, 2.0, 0.0]]], dtype=torch.float64)
    y = conv_einsum(x, w)[0, 0]
    # y[i] = sum_j x[i + j] w[j]: no flip.
    torch.testing.assert_close(y, x[0, 0, :4] * 1 + x[0, 0, 1:5] * 2)
    assert not torch.allclose(y, conv_einsum(x, w.flip(-1))[0, 0])


@pytest.mark.parametrize("n", [1, 2, 3])
def test_equation_names_every_axis_once(n: int) -> None:
    equation = conv_einsum_equation(n)
    inputs, output = equation.split("->")
    windows, weight = inputs.split(",")
    assert len(windows) == 3 + 2 * n and len(weight) == 3 + n and len(output) == 3 + n
    assert len(set(windows)) == len(windows)
    assert set(windows) - set(output) == set(weight) - set("go")  # contracted: c and the kernel


# --------------------------------------------------------------------------- sliding windows


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 3),
    st.lists(st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 3)), min_size=3),
    st.data(),
)
def test_sliding_windows_index_formula_and_view(n: int, per_axis: list, data: st.DataObject):
    kernel, stride, dilation = (tuple(v[i] for v in per_axis[:n]) for i in range(3))
    sizes = [
        data.draw(st.integers(d * (k - 1) + 1, d * (k - 1) + 6))
        for k, d in zip(kernel, dilation, strict=True)
    ]
    x = torch.randn(2, 3, *sizes, dtype=torch.float64)
    windows = sliding_windows(x, kernel, stride, dilation)
    out = [
        conv_output_size(s, k, st_, 0, d)
        for s, k, st_, d in zip(sizes, kernel, stride, dilation, strict=True)
    ]
    assert windows.shape == (2, 3, *out, *kernel)
    assert windows.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()  # a view
    # Reference: explicit indexing x[..., o * stride + i * dilation] for a few drawn positions.
    for _ in range(5):
        o = [data.draw(st.integers(0, m - 1)) for m in out]
        i = [data.draw(st.integers(0, k - 1)) for k in kernel]
        src = [oo * s + ii * d for oo, ii, s, d in zip(o, i, stride, dilation, strict=True)]
        torch.testing.assert_close(windows[(..., *o, *i)], x[(..., *src)], atol=0, rtol=0)


@settings(max_examples=40, deadline=None)
@given(
    st.tuples(st.integers(1, 4), st.integers(1, 4)),
    st.tuples(st.integers(1, 3), st.integers(1, 3)),
    st.tuples(st.integers(1, 3), st.integers(1, 3)),
    st.tuples(st.integers(0, 5), st.integers(0, 5)),
)
def test_sliding_windows_2d_matches_torch_unfold(kernel, stride, dilation, extra) -> None:
    sizes = [d * (k - 1) + 1 + e for k, d, e in zip(kernel, dilation, extra, strict=True)]
    x = torch.randn(2, 3, *sizes, dtype=torch.float64)
    windows = sliding_windows(x, kernel, stride, dilation)  # (B, C, Ho, Wo, kh, kw)
    b, c, ho, wo, kh, kw = windows.shape
    as_columns = windows.permute(0, 1, 4, 5, 2, 3).reshape(b, c * kh * kw, ho * wo)
    want = F.unfold(x, kernel, dilation=dilation, stride=stride)  # torch's im2col
    torch.testing.assert_close(as_columns, want, atol=0, rtol=0)


# --------------------------------------------------------------------------- output size


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 40),
    st.integers(1, 7),
    st.integers(1, 4),
    st.one_of(st.integers(0, 4), st.sampled_from(["valid", "same"])),
    st.integers(1, 4),
)
def test_conv_output_size_matches_torch(size, kernel, stride, padding, dilation) -> None:
    if padding == "same":
        stride = 1
    ((left, right),) = resolve_conv_padding(padding, kernel, stride, dilation)
    if size + left + right < dilation * (kernel - 1) + 1:
        with pytest.raises(ValueError, match=r"size=.*span"):
            conv_output_size(size, kernel, stride, padding, dilation)
        return
    x = torch.zeros(1, 1, size)
    w = torch.zeros(1, 1, kernel)
    want = torch_conv(x, w, stride=stride, padding=padding, dilation=dilation).shape[-1]
    assert conv_output_size(size, kernel, stride, padding, dilation) == want
    if padding == "same":
        assert want == size


# --------------------------------------------------------------------------- patch convolution


@st.composite
def patch_cases(draw: st.DrawFn) -> dict:
    n = draw(st.sampled_from([1, 2, 3]))
    groups = draw(st.integers(1, 3))
    c_in = groups * draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, MAX_KERNEL[n])) for _ in range(n))
    # Sizes both divisible and not divisible by the kernel.
    sizes = [draw(st.integers(k, k * (MAX_SIZE[n] // k + 1))) for k in kernel]
    batched = draw(st.booleans())
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x_shape = ((2,) if batched else ()) + (c_in, *sizes)
    x = torch.randn(x_shape, generator=gen, dtype=torch.float64)
    weight = torch.randn((c_out, c_in // groups, *kernel), generator=gen, dtype=torch.float64)
    bias = torch.randn(c_out, generator=gen, dtype=torch.float64) if draw(st.booleans()) else None
    return dict(x=x, weight=weight, bias=bias, groups=groups)


@settings(max_examples=120, deadline=None)
@given(patch_cases())
def test_patch_conv_equals_stride_kernel_conv(case: dict) -> None:
    kernel = tuple(case["weight"].shape[2:])
    got = patch_conv_einsum(**case)
    torch.testing.assert_close(got, torch_conv(**case, stride=kernel), atol=1e-10, rtol=0)
    torch.testing.assert_close(got, conv_einsum(**case, stride=kernel), atol=1e-10, rtol=0)
    spatial = case["x"].shape[-len(kernel) :]
    assert tuple(got.shape[-len(kernel) :]) == tuple(
        s // k for s, k in zip(spatial, kernel, strict=True)
    )


@settings(max_examples=60, deadline=None)
@given(patch_cases())
def test_patch_conv_differs_from_stride_one_conv(case: dict) -> None:
    kernel = tuple(case["weight"].shape[2:])
    spatial = tuple(case["x"].shape[-len(kernel) :])
    stride_one = torch_conv(**case)
    patches = patch_conv_einsum(**case)
    if any(k > 1 and s > k for k, s in zip(kernel, spatial, strict=True)):
        # More than one window along an axis with k > 1: stride 1 gives s - k + 1 > s // k outputs.
        assert patches.shape != stride_one.shape
    else:
        # Every axis has k == 1 or a single window: then the two coincide.
        assert patches.shape == stride_one.shape
    # The patch convolution is the stride-1 output sampled at every k-th position.
    subsampled = stride_one[(..., *(slice(None, None, k) for k in kernel))]
    subsampled = subsampled[
        (..., *(slice(0, s // k) for s, k in zip(spatial, kernel, strict=True)))
    ]
    torch.testing.assert_close(patches, subsampled, atol=1e-10, rtol=0)


# --------------------------------------------------------------------------- argument errors


def _x(*shape: int) -> torch.Tensor:
    return torch.zeros(shape)


ERROR_CASES = [
    # (kwargs, exception, message regex)
    (dict(x=_x(1, 2, 5), weight=_x(2, 2)), ValueError, r"weight must have rank 3 or 4 or 5"),
    (dict(x=_x(1, 1, 2, 5, 5), weight=_x(2, 2, 3)), ValueError, r"x must have rank 2 or 3"),
    (dict(x=[1.0, 2.0], weight=_x(2, 2, 3)), TypeError, r"x.*torch\.Tensor.*list"),
    (
        dict(x=_x(1, 3, 8), weight=_x(2, 2, 3)),
        ValueError,
        r"x.*\b3\b.*weight\.shape\[1\].*\b2\b",
    ),
    (
        dict(x=_x(1, 5, 8), weight=_x(4, 2, 3), groups=2),
        ValueError,
        r"groups=2.*in_channels.*=5",
    ),
    (
        dict(x=_x(1, 4, 8), weight=_x(5, 2, 3), groups=2),
        ValueError,
        r"groups=2.*out_channels.*=5",
    ),
    (dict(x=_x(1, 4, 8), weight=_x(4, 2, 3), groups=0), ValueError, r"groups.*\b0\b"),
    (dict(x=_x(1, 4, 8), weight=_x(4, 2, 3), groups=2.0), TypeError, r"groups must be an int"),
    (
        dict(x=_x(1, 2, 8), weight=_x(4, 2, 3), bias=_x(3)),
        ValueError,
        r"bias.*\(4,\).*\(3,\)",
    ),
    (
        dict(x=_x(1, 2, 4, 4), weight=_x(4, 2, 5, 3)),
        ValueError,
        r"x\.shape\[2\]=4.*span",
    ),
    (
        dict(x=_x(1, 2, 4), weight=_x(4, 2, 3), dilation=2),
        ValueError,
        r"x\.shape\[2\]=4.*\b5\b",
    ),
    (dict(x=_x(1, 2, 8), weight=_x(4, 2, 3), stride=0), ValueError, r"stride must be >= 1"),
    (dict(x=_x(1, 2, 8, 8), weight=_x(4, 2, 3, 3), stride=(1, -1)), ValueError, r"stride must"),
    (dict(x=_x(1, 2, 8), weight=_x(4, 2, 3), dilation=0), ValueError, r"dilation must be >= 1"),
    (dict(x=_x(1, 2, 8), weight=_x(4, 2, 3), padding=-1), ValueError, r"padding must be >= 0"),
    (
        dict(x=_x(1, 2, 8, 8), weight=_x(4, 2, 3, 3), padding=(1, 1, 1)),
        ValueError,
        r"padding.*2 ints.*\(1, 1, 1\)",
    ),
    (
        dict(x=_x(1, 2, 8), weight=_x(4, 2, 3), padding="full"),
        ValueError,
        r"padding.*'same'.*'full'",
    ),
    (
        dict(x=_x(1, 2, 8), weight=_x(4, 2, 3), padding="same", stride=2),
        ValueError,
        r"padding='same'.*stride=2",
    ),
    (
        dict(x=_x(1, 2, 8), weight=_x(4, 2, 3).double()),
        TypeError,
        r"x.*weight.*dtype.*float32.*float64",
    ),
]


@pytest.mark.parametrize("kwargs,error,match", ERROR_CASES)
def test_conv_einsum_rejects_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        conv_einsum(**kwargs)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(x=_x(1, 2, 5), weight=_x(2, 2)), ValueError, r"weight must have rank 3 or 4 or 5"),
        (dict(x=_x(1, 2, 5, 5), weight=_x(2, 2, 3)), ValueError, r"x must have rank 2 or 3"),
        (
            dict(x=_x(1, 3, 8), weight=_x(2, 2, 3)),
            ValueError,
            r"x has 3 channels but weight\.shape\[1\] \* groups",
        ),
        (
            dict(x=_x(1, 4, 8), weight=_x(5, 2, 3), groups=2),
            ValueError,
            r"groups=2.*out_channels.*=5",
        ),
        (
            dict(x=_x(1, 2, 8), weight=_x(4, 2, 3), bias=_x(4, 1)),
            ValueError,
            r"bias must have shape",
        ),
        (
            dict(x=_x(1, 2, 2, 8), weight=_x(4, 2, 3, 3)),
            ValueError,
            r"x\.shape\[2\]=2.*span",
        ),
    ],
)
def test_patch_conv_einsum_rejects_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        patch_conv_einsum(**kwargs)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: sliding_windows(_x(2, 5), 3), ValueError, r"x must have rank 3 or 4 or 5"),
        (
            lambda: sliding_windows(_x(1, 1, 5), (3, 3)),
            ValueError,
            r"kernel_size must be an int or a sequence of 1",
        ),
        (lambda: sliding_windows(_x(1, 1, 5), 0), ValueError, r"kernel_size must be >= 1"),
        (lambda: sliding_windows(_x(1, 1, 5), 3, stride=0), ValueError, r"stride must be >= 1"),
        (lambda: sliding_windows(_x(1, 1, 5), 3, dilation=3), ValueError, r"x\.shape\[2\]=5"),
        (lambda: conv_output_size(0, 3), ValueError, r"size.*\b0\b"),
        (lambda: conv_output_size(5, 3, 0), ValueError, r"stride.*\b0\b"),
        (lambda: conv_output_size(5, 3, 1, -2), ValueError, r"padding must be >= 0"),
        (lambda: conv_output_size(5, 3, 1, "full"), ValueError, r"padding must be one of"),
        (lambda: conv_output_size(5, 3, 2, "same"), ValueError, r"requires stride 1"),
        (lambda: conv_output_size(2, 3, dilation=1), ValueError, r"size=2 .*span"),
        (lambda: conv_output_size(5, 2.0), TypeError, r"kernel must be an int"),
        (
            lambda: resolve_conv_padding(1, "3"),
            TypeError,
            r"kernel_size must be an int or a sequence",
        ),
        (
            lambda: conv_einsum_equation(4),
            ValueError,
            r"spatial_dims.*\b4\b",
        ),
    ],
)
def test_helpers_reject_bad_arguments(call, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        call()

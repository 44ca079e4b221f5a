"""Conformance of the convolutions (coremltools ``conv``): ``conv`` and ``conv_transpose``.

Definitions: ``conv`` correlates ``x: (N, C_in, *D)`` with ``weight: (C_out, C_in / groups, *K)``
over 1 to 3 spatial axes, input channels split into ``groups``; ``d_out = floor((d_in + pads -
(K - 1) * dilation - 1) / stride) + 1``. Padding by ``pad_type``: ``valid`` none, ``custom``
from ``pad``, ``same`` a total of ``max(0, s * ceil(d / s) - d + (K - 1) * dilation + 1 - s)``
(coremltools' ``aggregated_pad``) with the odd element after, ``same_lower`` with it before.
(The docstring's parity formula for ``same`` contradicts both this total for strides above 1 and
its own description of ``same_lower``; the executor follows coremltools' code.)
``conv_transpose`` scatters each input position through the kernel to ``i * stride + k *
dilation`` of a full output of ``(d_in - 1) * stride + (K - 1) * dilation + 1``, cropped by
``pad`` (``custom``), to ``d_in * stride`` (``same``) or to ``output_shape``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conformance._harness import check, mb


def _pads(
    pad_type: str, pad: Any, sizes: Any, kernel: Any, strides: Any, dilations: Any
) -> list[tuple[int, int]]:
    if pad_type == "valid":
        return [(0, 0)] * len(sizes)
    if pad_type == "custom":
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(len(sizes))]
    out = []
    for d, k, s, dil in zip(sizes, kernel, strides, dilations, strict=True):
        total = max(0, s * math.ceil(d / s) - d + (k - 1) * dil + 1 - s)
        small, large = total // 2, total - total // 2
        out.append((small, large) if pad_type == "same" else (large, small))
    return out


def conv_reference(
    x: Any, w: Any, b: Any, strides: Any, dilations: Any, pads: Any, groups: int
) -> Any:
    """The definition, summed tap by tap in float64."""
    xp = np.pad(x, [(0, 0), (0, 0), *pads])
    kernel = w.shape[2:]
    outs = [
        (xp.shape[2 + i] - (k - 1) * d - 1) // s + 1
        for i, (k, d, s) in enumerate(zip(kernel, dilations, strides, strict=True))
    ]
    c_out = w.shape[0]
    cin_g, cout_g = x.shape[1] // groups, c_out // groups
    out = np.zeros((x.shape[0], c_out, *outs))
    for g in range(groups):
        xs = xp[:, g * cin_g : (g + 1) * cin_g]
        for tap in itertools.product(*(range(k) for k in kernel)):
            window = tuple(
                slice(t * d, t * d + s * (o - 1) + 1, s)
                for t, d, s, o in zip(tap, dilations, strides, outs, strict=True)
            )
            patch = xs[(slice(None), slice(None), *window)]
            weights = w[(slice(g * cout_g, (g + 1) * cout_g), slice(None), *tap)]
            out[:, g * cout_g : (g + 1) * cout_g] += np.einsum("oc,nc...->no...", weights, patch)
    if b is not None:
        out += b.reshape((1, -1) + (1,) * len(kernel))
    return out


@st.composite
def _conv_case(draw: Any) -> dict[str, Any]:
    n_sp = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 2, 4]))
    cin_g, cout_g = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kernel = [draw(st.integers(1, 3)) for _ in range(n_sp)]
    strides = [draw(st.integers(1, 3)) for _ in range(n_sp)]
    dilations = [draw(st.integers(1, 2)) for _ in range(n_sp)]
    pad_type = draw(st.sampled_from(["valid", "same", "same_lower", "custom"]))
    pad = [draw(st.integers(0, 2)) for _ in range(2 * n_sp)]
    sizes = [
        max((k - 1) * d + 1, draw(st.integers(2, 6 if n_sp < 3 else 4)))
        for k, d in zip(kernel, dilations, strict=True)
    ]
    return {
        "x": (1 + draw(st.integers(0, 1)), groups * cin_g, *sizes),
        "w": (groups * cout_g, cin_g, *kernel),
        "bias": draw(st.booleans()),
        "groups": groups,
        "strides": strides,
        "dilations": dilations,
        "pad_type": pad_type,
        "pad": pad,
    }


@settings(max_examples=150, deadline=None)
@given(case=_conv_case(), seed=st.integers(0, 999))
def test_conv(case: dict[str, Any], seed: int) -> None:
    r = np.random.default_rng(seed)
    x = r.normal(size=case["x"]).astype(np.float32)
    params: dict[str, Any] = {"weight": r.normal(size=case["w"])}
    if case["bias"]:
        params["bias"] = r.normal(size=case["w"][0])
    pad_type, pad = case["pad_type"], case["pad"]
    attrs = {
        "strides": case["strides"],
        "dilations": case["dilations"],
        "groups": case["groups"],
        "pad_type": pad_type,
    }
    if pad_type == "custom":
        attrs["pad"] = pad
    pads = _pads(pad_type, pad, case["x"][2:], case["w"][2:], case["strides"], case["dilations"])

    def reference(x: Any, weight: Any, bias: Any = None) -> Any:
        return conv_reference(
            x, weight, bias, case["strides"], case["dilations"], pads, case["groups"]
        )

    check(
        "conv",
        lambda x, **p: mb.conv(x=x, **p, **attrs),
        {"x": x},
        reference,
        params=params,
        fp16_extra=1e-4,
        what=str(case),
    )


def conv_transpose_reference(
    x: Any, w: Any, b: Any, strides: Any, dilations: Any, groups: int, crops: Any, sizes: Any
) -> Any:
    """The definition: every input value scattered through the kernel, then cropped."""
    n_sp = x.ndim - 2
    kernel = w.shape[2:]
    cin_g, cout_g = x.shape[1] // groups, w.shape[1]
    full = [
        (x.shape[2 + i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 for i in range(n_sp)
    ]
    room = [max(f, c0 + s) for f, (c0, _), s in zip(full, crops, sizes, strict=True)]
    out = np.zeros((x.shape[0], groups * cout_g, *room))
    for g in range(groups):
        xs = x[:, g * cin_g : (g + 1) * cin_g]
        for tap in itertools.product(*(range(k) for k in kernel)):
            target = tuple(
                slice(t * d, t * d + s * (n - 1) + 1, s)
                for t, d, s, n in zip(tap, dilations, strides, x.shape[2:], strict=True)
            )
            weights = w[(slice(g * cin_g, (g + 1) * cin_g), slice(None), *tap)]  # (cin_g, cout_g)
            out[(slice(None), slice(g * cout_g, (g + 1) * cout_g), *target)] += np.einsum(
                "co,nc...->no...", weights, xs
            )
    window = tuple(slice(c0, c0 + s) for (c0, _), s in zip(crops, sizes, strict=True))
    out = out[(slice(None), slice(None), *window)]
    if b is not None:
        out = out + b.reshape((1, -1) + (1,) * n_sp)
    return out


@st.composite
def _conv_transpose_case(draw: Any) -> dict[str, Any]:
    n_sp = draw(st.integers(1, 2))
    groups = draw(st.sampled_from([1, 2]))
    kernel = [draw(st.integers(1, 4)) for _ in range(n_sp)]
    strides = [draw(st.integers(1, 3)) for _ in range(n_sp)]
    dilations = [draw(st.integers(1, 2)) for _ in range(n_sp)]
    pad_type = draw(st.sampled_from(["valid", "same", "custom", "output_shape"]))
    pad = [draw(st.integers(0, 1)) for _ in range(2 * n_sp)]
    sizes = [draw(st.integers(1, 5)) for _ in range(n_sp)]
    return {
        "x": (1, groups * draw(st.integers(1, 2)), *sizes),
        "cout_g": draw(st.integers(1, 2)),
        "kernel": kernel,
        "strides": strides,
        "dilations": dilations,
        "groups": groups,
        "pad_type": pad_type,
        "pad": pad,
        "extra": [draw(st.integers(0, 1)) for _ in range(n_sp)],
        "bias": draw(st.booleans()),
    }


@settings(max_examples=100, deadline=None)
@given(case=_conv_transpose_case(), seed=st.integers(0, 999))
def test_conv_transpose(case: dict[str, Any], seed: int) -> None:
    r = np.random.default_rng(seed)
    x = r.normal(size=case["x"]).astype(np.float32)
    groups, kernel, strides, dilations = (
        case["groups"],
        case["kernel"],
        case["strides"],
        case["dilations"],
    )
    cin = case["x"][1]
    params: dict[str, Any] = {"weight": r.normal(size=(cin, case["cout_g"], *kernel))}
    if case["bias"]:
        params["bias"] = r.normal(size=groups * case["cout_g"])
    n_sp = len(kernel)
    full = [
        (case["x"][2 + i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1
        for i in range(n_sp)
    ]
    attrs: dict[str, Any] = {"strides": strides, "dilations": dilations, "groups": groups}
    kind = case["pad_type"]
    if kind == "valid":
        crops, sizes = [(0, 0)] * n_sp, full
        attrs["pad_type"] = "valid"
    elif kind == "same":
        sizes = [case["x"][2 + i] * strides[i] for i in range(n_sp)]
        crops = [((f - s) // 2, 0) for f, s in zip(full, sizes, strict=True)]
        # "same" needs the full output to be at least d_in * stride
        assume(all(f >= s for f, s in zip(full, sizes, strict=True)))
        attrs["pad_type"] = "same"
    else:
        pad = case["pad"]
        crops = [(pad[2 * i], pad[2 * i + 1]) for i in range(n_sp)]
        sizes = [f - a - b for f, (a, b) in zip(full, crops, strict=True)]
        assume(min(sizes) >= 1)
        attrs |= {"pad_type": "custom", "pad": pad}
        if kind == "output_shape":  # PyTorch's output_padding: more than the crop leaves
            sizes = [s + e for s, e in zip(sizes, case["extra"], strict=True)]
            attrs["output_shape"] = [1, groups * case["cout_g"], *sizes]

    def reference(x: Any, weight: Any, bias: Any = None) -> Any:
        return conv_transpose_reference(x, weight, bias, strides, dilations, groups, crops, sizes)

    check(
        "conv_transpose",
        lambda x, **p: mb.conv_transpose(x=x, **p, **attrs),
        {"x": x},
        reference,
        params=params,
        fp16_extra=1e-4,
        what=str(case),
    )


def test_every_conv_op_is_covered_or_declined() -> None:
    from ane_lib.coreml.ops import DECLINED, REGISTRY

    assert {n for n, d in REGISTRY.items() if d.family == "conv"} == {"conv", "conv_transpose"}
    assert "conv_quantized" in DECLINED

"""Tests for ane_lib.coreml.executor: the reference executor of ML programs.

The executor is proved against PyTorch: small modules exercising each op family, and whole
models, are converted for real with coremltools (``torch.export`` -> ``ct.convert``) and the
resulting programs run in the fp32 reference mode (``precision="fp32"``, the earlier name kept
here on purpose) must reproduce PyTorch's float32 forward to 1e-5 of the output's scale. Ops
that PyTorch's converter never emits (or emits only in one parameterisation) are built directly
with the MIL builder and compared with torch's own functions, many of them over
hypothesis-drawn shapes. The Neural Engine mode (``precision="fp16"``) is checked against the
deployment bound derived in ``FP16_TOL`` and against exact fp16 rounding of a small chain.
``tests/conformance`` checks every op against its coremltools definition, one module per family;
``test_executor_regressions.py`` the modes and issue 15's symptoms.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from ane_lib.coreml.executor import (
    DECLINED_OPS,
    SUPPORTED_OPS,
    Float16OverflowError,
    NonFiniteOutputError,
    NonFiniteOutputWarning,
    UnsupportedOpError,
    run,
)
from ane_lib.coreml.executor.coverage import coremltools_families, coverage
from ane_lib.coreml.export import export
from ane_lib.coreml.ops import REGISTRY, ExecutorError, OpDef
from ane_lib.coreml.program import import_coremltools, load_program, quiet_coremltools
from ane_lib.models import create_model

ct = import_coremltools()
from coremltools.converters.mil import Builder as mb  # noqa: E402, N813
from coremltools.converters.mil.mil import types  # noqa: E402

# fp32 mode must reproduce torch's float32 forward to this fraction of the output's scale.
FP32_TOL = 1e-5
# fp16 mode: every stored value (inputs, weights, each op's output) is rounded to fp16, a
# relative error of at most 2**-11 ~ 4.9e-4 each time. The modules below chain at most ~4
# roundings per output and sum at most ~100 products whose rounding errors add up like a
# random walk (~10x one rounding), so about 5e-3 of the output's scale bounds the deployment
# error; we allow 1e-2 (measured: at most 3e-3).
FP16_TOL = 1e-2
FP16_ROUNDOFF = 2.0**-11  # unit roundoff: the largest relative error of one rounding


def _scale(ref: np.ndarray) -> float:
    # inputs are ~N(0, 1): errors are judged against max(|ref|, 1) so that reductions whose
    # result cancels to near 0 (a mean of random values) are judged at their inputs' scale
    return max(float(np.max(np.abs(ref))) if ref.size else 0.0, 1.0)


def _rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    if ref.size == 0:
        return 0.0
    return float(np.max(np.abs(got - ref))) / _scale(ref)


def _convert(
    module: nn.Module,
    args: Sequence[torch.Tensor],
    path: Path,
    *,
    precision: str = "fp32",
    target: Any = None,
) -> Any:
    """Convert ``module`` for real (torch.export -> coremltools), save, and load it back.

    The same path as :func:`ane_lib.coreml.export`, which takes one input and one output; the
    op families below have several of each, inputs named ``x0, x1, ...``.
    """
    with quiet_coremltools(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export's and coremltools' deprecation notes
        ep = torch.export.export(module.eval(), tuple(args)).run_decompositions({})
        mlmodel = ct.convert(
            ep,
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
            minimum_deployment_target=target or ct.target.iOS17,
            inputs=[ct.TensorType(name=f"x{i}", shape=tuple(a.shape)) for i, a in enumerate(args)],
            skip_model_load=True,
        )
        mlmodel.save(str(path))
    return load_program(path)


def _feed(args: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
    return {f"x{i}": a.numpy() for i, a in enumerate(args)}


def _ops_of(program: Any) -> set[str]:
    return {op.op_type for op in program.functions["main"].operations} - {"const"}


# ---------------------------------------------------------------------------------------------
# op families, converted from PyTorch


class Convs(nn.Module):
    """x: (1, 4, 6, 8): conv with stride, groups, depthwise, dilation, "same", 1x1, 1D, 3D;
    transposed conv with output_padding (conv_transpose + crop) and groups."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False)
        self.c3 = nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=4)
        self.c4 = nn.Conv2d(4, 8, (3, 1), padding="same")
        self.c5 = nn.Conv2d(4, 5, 1)
        self.c6 = nn.Conv2d(4, 8, 5, stride=(2, 1), padding=(2, 0), groups=4)
        self.c7 = nn.Conv2d(4, 6, 2, stride=2)
        self.d1 = nn.Conv1d(4, 6, 3, padding=1)
        self.d3 = nn.Conv3d(4, 3, 3, padding=1)
        self.t1 = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1)
        self.t2 = nn.ConvTranspose2d(4, 6, 2, stride=2, groups=2)
        self.t3 = nn.ConvTranspose1d(4, 3, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (
            self.c1(x), self.c2(x), self.c3(x), self.c4(x), self.c5(x), self.c6(x), self.c7(x),
            self.d1(x.flatten(2)), self.d3(x.unsqueeze(2).repeat(1, 1, 3, 1, 1)),
            self.t1(x), self.t2(x), self.t3(x.flatten(2)),
        )  # fmt: skip


class Pools(nn.Module):
    """x: (1, 4, 7, 9): avg/max pooling with padding, ceil_mode, count_include_pad; global
    and adaptive mean; L2 pooling; nearest and bilinear resampling (with and without aligned
    corners) by integer and fractional factors."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (
            F.avg_pool2d(x, 2), F.avg_pool2d(x, 3, 2, 1),
            F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
            F.avg_pool2d(x, 3, 2, ceil_mode=True), F.avg_pool2d(x, 3, 2, 1, ceil_mode=True),
            F.max_pool2d(x, 3, 2, 1), F.max_pool2d(x, 2, ceil_mode=True), F.max_pool2d(x, 3, 1, 1),
            F.adaptive_avg_pool2d(x, 1), F.avg_pool1d(x.flatten(2), 4),
            F.max_pool1d(x.flatten(2), 3, 2), F.lp_pool2d(x, 2, 2),
            F.interpolate(x, scale_factor=2, mode="nearest"),
            F.interpolate(x, size=(7, 11), mode="nearest"), F.adaptive_avg_pool2d(x, (3, 3)),
            F.interpolate(x, scale_factor=2, mode="bilinear"),
            F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True),
            F.interpolate(x, size=(10, 5), mode="bilinear"),
            F.interpolate(x, size=(10, 5), mode="bilinear", align_corners=True),
            F.interpolate(x, size=(3, 4), mode="bilinear"),
        )  # fmt: skip


class Activations(nn.Module):
    """x: (1, 4, 5, 6): every activation the converter maps to a MIL activation op."""

    def __init__(self) -> None:
        super().__init__()
        self.prelu = nn.PReLU(4)
        nn.init.uniform_(self.prelu.weight, 0.05, 0.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (
            F.gelu(x), F.relu(x), F.relu6(x * 4), F.leaky_relu(x, 0.1), F.elu(x, 0.7), F.silu(x),
            torch.sigmoid(x), torch.tanh(x), F.hardsigmoid(x * 4), F.hardswish(x * 4),
            F.softplus(x), F.softsign(x), self.prelu(x), F.hardtanh(x, -0.5, 0.7), F.mish(x),
            F.selu(x), F.threshold(x, 0.2, 0.0),
        )  # fmt: skip


class Elementwise(nn.Module):
    """x, y: (2, 3, 5): arithmetic, transcendental, rounding, comparison, logical and cast ops."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        p = y.abs() + 0.5
        return (
            x + y, x - y, x * y, x / p, p.pow(x), p**2.5, p.sqrt(), torch.rsqrt(p), x.exp(),
            p.log(), x.abs(), -x, x.sin(), x.cos(), torch.erf(x), torch.maximum(x, y),
            torch.minimum(x, y), torch.where(x > y, x, y), x.clamp(-0.5, 0.3), x.square(),
            x.tan(), torch.atan(x), torch.asin(x.clamp(-0.9, 0.9)),
            torch.acos(x.clamp(-0.9, 0.9)), torch.sinh(x), torch.cosh(x),
            torch.atanh(x.clamp(-0.9, 0.9)), torch.exp2(x), torch.log1p(p), torch.expm1(x),
            torch.masked_fill(x, y > 0.5, -3.0),
            # outputs that jump (a value next to a step may land on the other side in fp16)
            (x * 3).floor(), (x * 3).ceil(), (x * 3).round(), x.sign(), (x > 0).float(),
            (x >= y).float(), (x < y).float(), (x <= 0).float(), (x == x.round()).float(),
            (x != y).float(), torch.logical_and(x > 0, y > 0).float(),
            torch.logical_or(x > 0, y > 0).float(), torch.logical_not(x > 0).float(),
            torch.floor_divide(x * 5, p), torch.remainder(x * 5, p), x.int().float(),
            (x * 3).to(torch.int32).float() * 0.5,
        )  # fmt: skip


ELEMENTWISE_STEPS = 17  # the last 17 outputs of Elementwise are step functions of the input


class Reductions(nn.Module):
    """x: (2, 3, 5, 6): reductions over one, several or all axes, arg-reductions, softmax."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (
            x.mean(-1), x.mean((1, 2), keepdim=True), x.sum(1), x.amax(-1), x.amin((0, 2)),
            torch.logsumexp(x, -1), x.norm(dim=-1), x.var(-1), x.std(1), x.softmax(-1),
            x.softmax(1), x.softmax(2), F.log_softmax(x, -1), x.abs().sum(-1), (x * x).sum(-1),
            x.max(), x.mean(), x.argmax(1).float(), x.argmin(-1, keepdim=True).float(),
        )  # fmt: skip


class NormsA(nn.Module):
    """x: (2, 4, 5, 6): LayerNorm (1 and 2 axes), BatchNorm (eval), InstanceNorm, GroupNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(6)
        self.ln2 = nn.LayerNorm((5, 6))
        self.bn = nn.BatchNorm2d(4)
        self.inorm = nn.InstanceNorm2d(4, affine=True)
        self.gn = nn.GroupNorm(2, 4)
        for p in self.parameters():
            nn.init.normal_(p, 0.5, 0.3)
        self.bn.running_mean.normal_()
        self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.ln(x), self.ln2(x), self.bn(x), self.inorm(x), self.gn(x)


class NormsB(nn.Module):
    """x: (2, 4, 5, 6): F.normalize, BatchNorm1d, and LayerNorm over channels of (B, C, H, W)
    written out as the ANE form does (mean, centre, variance, rsqrt)."""

    def __init__(self) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm1d(4)
        self.bn1.running_mean.normal_()
        self.bn1.running_var.uniform_(0.5, 2.0)
        self.gamma = nn.Parameter(torch.randn(4))
        self.beta = nn.Parameter(torch.randn(4))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mean = x.mean(1, keepdim=True)
        centred = x - mean
        var = (centred * centred).mean(1, keepdim=True)
        ane = centred * torch.rsqrt(var + 1e-5) * self.gamma.view(1, 4, 1, 1)
        ane = ane + self.beta.view(1, 4, 1, 1)
        return F.normalize(x, dim=1), self.bn1(x.flatten(2)), ane, F.normalize(x.flatten(1))


class LinAlg(nn.Module):
    """q: (1, 4, 2, 6), k: (1, 6, 2, 4): linear, matmul with transposes and broadcasting, bmm,
    einsum (the ANE attention's "bchq,bkhc->bkhq" among them), attention."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 7)
        self.lin2 = nn.Linear(6, 3, bias=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = torch.einsum("bhqd,bhkd->bhqk", q, q)
        return (
            self.lin(q), self.lin2(q[0, 0]), torch.einsum("bchq,bkhc->bkhq", q, k), logits,
            torch.einsum("nchw,nwhu->nchu", q, k), torch.einsum("ij,jk->ik", q[0, 0], k[0, :, 0]),
            q @ q.transpose(-1, -2), torch.matmul(q.transpose(1, 2), k.permute(0, 2, 1, 3)),
            q @ k[0, :, 0], torch.bmm(q[0], q[0].transpose(1, 2)),
            torch.matmul(q[0, 0, 0], k[0, :, 0]), logits.softmax(-1) @ q,
        )  # fmt: skip


class Shapes(nn.Module):
    """x, y: (1, 4, 5, 6): reshape, permute, squeeze/unsqueeze, cat, stack, chunk, split,
    slicing, index_select, gather, repeat, expand, pad (3 modes), flip, roll, cumsum, topk,
    sort, tril/triu, pixel (un)shuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("idx", torch.tensor([2, 0, 1, 1]))
        self.register_buffer("take", torch.randint(0, 6, (1, 4, 5, 3)))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        B, C, H, W = x.shape
        a, b = x.chunk(2, dim=1)
        p1, p2, p3 = x.split([1, 2, 3], dim=-1)
        return (
            x.reshape(B, C, H * W), x.view(B, 2, 2, H, W).flatten(1, 2), x.permute(0, 2, 3, 1),
            x.permute(3, 1, 0, 2), x.transpose(1, 2), x[0].unsqueeze(1).unsqueeze(-1),
            x[:, :1].squeeze(1), torch.cat([x, y], 1), torch.cat([x, y], -1),
            torch.stack([x, y], 2), a * b, p1 + 0, p2 * 2, p3 - 1, x.narrow(2, 1, 3),
            x[:, :, 1:4:2, ::3], x[..., -2:], x[:, 1], x[:, :, 2, 3:], x.index_select(1, self.idx),
            x[:, self.idx], torch.gather(x, -1, self.take), x.repeat(1, 2, 1, 3),
            x[:, :1].expand(1, 4, 5, 6) + 0, F.pad(x, (1, 2, 0, 1)),
            F.pad(x, (2, 1, 1, 1), mode="reflect"), F.pad(x, (1, 1, 2, 0), mode="replicate"),
            F.pad(x, (1, 1), value=0.5), x.flip(-1), x.flip((1, 2)), torch.roll(x, 2, -1),
            x.cumsum(-1), torch.topk(x, 3, dim=-1)[0], torch.sort(x, -1)[0], torch.tril(x),
            torch.triu(x, 1), F.pixel_shuffle(torch.cat([x, x], 1)[:, :, :4, :4], 2),
            F.pixel_unshuffle(x[:, :, :4, :], 2), x.flatten(), x.reshape(-1, 6).t(),
            torch.argsort(x, -1).float(),
        )  # fmt: skip


class Attention18(nn.Module):
    """q, k: (1, 2, 5, 4): F.scaled_dot_product_attention (its own MIL op from iOS18 on),
    with no mask, a float mask and a boolean mask."""

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, ...]:
        bias = torch.linspace(-1.0, 1.0, 25).reshape(5, 5)
        keep = torch.ones(5, 5, dtype=torch.bool).tril()
        return (
            F.scaled_dot_product_attention(q, k, k),
            F.scaled_dot_product_attention(q, k, q, attn_mask=bias),
            F.scaled_dot_product_attention(q, q, k, attn_mask=keep),
        )


# name -> (module class, input shapes, number of trailing step-function outputs, target)
FAMILIES: dict[str, tuple[type[nn.Module], list[tuple[int, ...]], int, Any]] = {
    "convs": (Convs, [(1, 4, 6, 8)], 0, None),
    "pools": (Pools, [(1, 4, 7, 9)], 0, None),
    "activations": (Activations, [(1, 4, 5, 6)], 0, None),
    "elementwise": (Elementwise, [(2, 3, 5), (2, 3, 5)], ELEMENTWISE_STEPS, None),
    "reductions": (Reductions, [(2, 3, 5, 6)], 2, None),
    "norms_a": (NormsA, [(2, 4, 5, 6)], 0, None),
    "norms_b": (NormsB, [(2, 4, 5, 6)], 0, None),
    "linalg": (LinAlg, [(1, 4, 2, 6), (1, 6, 2, 4)], 0, None),
    "shapes": (Shapes, [(1, 4, 5, 6), (1, 4, 5, 6)], 1, None),
    "attention_ios18": (Attention18, [(1, 2, 5, 4), (1, 2, 5, 4)], 0, ct.target.iOS18),
}


def _names(text: str) -> set[str]:
    return set(text.split())


# The ops each family must make the converter emit: guards against a converter change making
# a test silently stop covering an op.
FAMILY_OPS: dict[str, set[str]] = {
    "convs": _names("conv conv_transpose crop tile expand_dims"),
    "pools": _names("avg_pool max_pool reduce_mean upsample_nearest_neighbor upsample_bilinear"),
    "activations": _names(
        "gelu relu relu6 leaky_relu elu silu sigmoid tanh sigmoid_hard softplus thresholded_relu "
        "clip threshold linear_activation"
    ),
    "elementwise": _names(
        "add sub mul real_div pow sqrt rsqrt exp log abs sin cos erf floor ceil round sign "
        "maximum minimum greater greater_equal less less_equal equal not_equal logical_and "
        "logical_or logical_not select clip floor_div tan atan asin acos sinh cosh atanh exp2 "
        "cast"
    ),
    "reductions": _names(
        "reduce_mean reduce_sum reduce_max reduce_min reduce_argmax reduce_argmin "
        "reduce_log_sum_exp reduce_l2_norm softmax"
    ),
    "norms_a": _names("layer_norm batch_norm instance_norm"),
    "norms_b": _names("layer_norm batch_norm reduce_l2_norm maximum"),
    "linalg": _names("linear matmul einsum transpose slice_by_index softmax"),
    "shapes": _names(
        "reshape transpose expand_dims squeeze concat stack split slice_by_index gather "
        "gather_along_axis tile pad reverse cumsum topk argsort band_part pixel_shuffle "
        "pixel_unshuffle"
    ),
    "attention_ios18": {"scaled_dot_product_attention"},
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(name, program, inputs, torch outputs, number of step outputs) for one op family."""
    name = request.param
    cls, shapes, steps, target = FAMILIES[name]
    torch.manual_seed(sum(map(ord, name)))
    module = cls().eval()
    args = [torch.randn(*s) for s in shapes]
    if name == "elementwise":
        # keep x * 3 away from integers and x * 5 / p away from multiples of p, so that the
        # step functions are not decided by the last float32 bit (torch vs numpy libm)
        args[0] = torch.round(args[0] * 30) / 30 + 1 / 180
    with torch.no_grad():
        refs = [r.numpy() for r in module(*args)]
    path = tmp_path_factory.mktemp("families") / f"{name}.mlpackage"
    program = _convert(module, args, path, target=target)
    return name, program, _feed(args), refs, steps


def test_family_emits_the_ops_it_is_meant_to_cover(family: Any) -> None:
    name, program, *_ = family
    emitted = _ops_of(program)
    assert FAMILY_OPS[name] <= emitted, f"{name}: not emitted {FAMILY_OPS[name] - emitted}"
    assert emitted <= SUPPORTED_OPS


def test_family_fp32_matches_torch(family: Any) -> None:
    name, program, feed, refs, _ = family
    out = run(program, feed, precision="fp32")
    assert len(out) == len(refs)
    errors = {k: _rel_err(v, r) for (k, v), r in zip(out.items(), refs, strict=True)}
    bad = {k: e for k, e in errors.items() if e > FP32_TOL}
    assert not bad, f"{name}: fp32 errors above {FP32_TOL}: {bad}"
    assert all(v.dtype in (np.float32, np.int32, np.bool_) for v in out.values())


def test_family_fp16_within_deployment_bound(family: Any) -> None:
    name, program, feed, refs, steps = family
    out = run(program, feed, precision="fp16")
    items = list(out.items())
    # step functions (floor, comparisons, argmax...) may legitimately flip next to a step
    continuous = range(len(refs) - steps)
    errors = {items[i][0]: _rel_err(items[i][1], refs[i]) for i in continuous}
    bad = {k: e for k, e in errors.items() if e > FP16_TOL}
    assert not bad, f"{name}: fp16 errors above {FP16_TOL}: {bad}"
    # and fp16 really changes the values: the run is not secretly in fp32
    assert max(errors.values()) > 1e-5


# ---------------------------------------------------------------------------------------------
# ops and parameterisations built directly with the MIL builder


def _program(
    fn: Callable[..., Any], *shapes: tuple[int, ...], opset: Any = None, dtype: Any = None
) -> Any:
    specs = [mb.TensorSpec(shape=s, dtype=dtype or types.fp32) for s in shapes]
    return mb.program(input_specs=specs, opset_version=opset or ct.target.iOS17)(fn)


def _run1(program: Any, *arrays: np.ndarray, precision: str = "fp32") -> np.ndarray:
    names = list(program.functions["main"].inputs)
    out = run(program, dict(zip(names, arrays, strict=True)), precision=precision)
    assert len(out) == 1
    return next(iter(out.values()))


def _randn(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _assert_fp32(got: np.ndarray, ref: torch.Tensor | np.ndarray) -> None:
    ref_np = ref.numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    assert _rel_err(got, ref_np) <= FP32_TOL


@settings(max_examples=25, deadline=None)
@given(
    rank=st.sampled_from([1, 2]),
    batch=st.integers(1, 2),
    groups=st.sampled_from([1, 2, 4]),
    cout_per_group=st.integers(1, 3),
    kernel=st.integers(1, 4),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 2),
    pads=st.lists(st.integers(0, 2), min_size=4, max_size=4),
    size=st.integers(6, 9),
    bias=st.booleans(),
)
def test_conv_matches_torch(
    rank: int,
    batch: int,
    groups: int,
    cout_per_group: int,
    kernel: int,
    stride: int,
    dilation: int,
    pads: list[int],
    size: int,
    bias: bool,
) -> None:
    c_in, c_out = 4, groups * cout_per_group
    spatial = (size,) * rank
    assume((kernel - 1) * dilation + 1 <= size + min(pads[0] + pads[1], pads[2] + pads[3]))
    w = _randn(c_out, c_in // groups, *([kernel] * rank), seed=1)
    b = _randn(c_out, seed=2)
    pad = pads[: 2 * rank]
    x = _randn(batch, c_in, *spatial, seed=3)

    def fn(x: Any) -> Any:
        return mb.conv(
            x=x,
            weight=w,
            bias=b if bias else None,
            strides=[stride] * rank,
            pad_type="custom",
            pad=pad,
            dilations=[dilation] * rank,
            groups=groups,
        )

    got = _run1(_program(fn, x.shape), x)
    # torch: pad explicitly (F.pad lists the last axis first), then an unpadded conv
    torch_pad = [p for i in reversed(range(rank)) for p in (pad[2 * i], pad[2 * i + 1])]
    xt = F.pad(torch.from_numpy(x), torch_pad)
    conv = F.conv1d if rank == 1 else F.conv2d
    ref = conv(
        xt, torch.from_numpy(w), torch.from_numpy(b) if bias else None, stride, 0, dilation, groups
    )
    _assert_fp32(got, ref)


@pytest.mark.parametrize("pad_type", ["same", "same_lower"])
@pytest.mark.parametrize(("size", "kernel", "stride"), [(7, 3, 1), (8, 4, 2), (9, 2, 3), (6, 5, 2)])
def test_conv_same_padding(pad_type: str, size: int, kernel: int, stride: int) -> None:
    # "same": out = ceil(in / stride); the odd pad element goes after ("same") or before
    # ("same_lower"), which is TensorFlow's SAME and its mirror image
    x = _randn(1, 2, size, size)
    w = _randn(3, 2, kernel, kernel, seed=1)
    got = _run1(
        _program(
            lambda x: mb.conv(x=x, weight=w, strides=[stride] * 2, pad_type=pad_type), x.shape
        ),
        x,
    )
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    before = total // 2 if pad_type == "same" else total - total // 2
    xt = F.pad(torch.from_numpy(x), [before, total - before] * 2)
    ref = F.conv2d(xt, torch.from_numpy(w), stride=stride)
    assert got.shape == (1, 3, out, out)
    _assert_fp32(got, ref)


@pytest.mark.parametrize(
    ("kernel", "stride", "pad", "extra"), [(3, 2, 1, 1), (4, 2, 1, 0), (5, 3, 2, 2)]
)
def test_conv_transpose_output_shape_matches_output_padding(
    kernel: int, stride: int, pad: int, extra: int
) -> None:
    # output_shape asking for `extra` more than the crop leaves = torch's output_padding
    x = _randn(1, 4, 5, 6)
    w = _randn(4, 3, kernel, kernel, seed=1)
    b = _randn(3, seed=2)
    out_hw = [(d - 1) * stride - 2 * pad + kernel + extra for d in x.shape[2:]]
    got = _run1(
        _program(
            lambda x: mb.conv_transpose(
                x=x,
                weight=w,
                bias=b,
                strides=[stride] * 2,
                pad_type="custom",
                pad=[pad] * 4,
                output_shape=[1, 3, *out_hw],
            ),
            x.shape,
        ),
        x,
    )
    ref = F.conv_transpose2d(
        torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride, pad, extra
    )
    _assert_fp32(got, ref)


@pytest.mark.parametrize(("kernel", "stride"), [(4, 2), (3, 1), (5, 3)])
def test_conv_transpose_same_padding(kernel: int, stride: int) -> None:
    # "same" gives in * stride outputs; with kernel - stride even it is torch's padding
    # (kernel - stride) / 2
    x = _randn(1, 2, 4, 5)
    w = _randn(2, 3, kernel, kernel, seed=1)
    got = _run1(
        _program(
            lambda x: mb.conv_transpose(x=x, weight=w, strides=[stride] * 2, pad_type="same"),
            x.shape,
        ),
        x,
    )
    ref = F.conv_transpose2d(
        torch.from_numpy(x), torch.from_numpy(w), stride=stride, padding=(kernel - stride) // 2
    )
    assert got.shape == (1, 3, 4 * stride, 5 * stride)
    _assert_fp32(got, ref)


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(["avg", "max"]),
    kernel=st.integers(1, 4),
    stride=st.integers(1, 3),
    pad=st.integers(0, 2),
    ceil_mode=st.booleans(),
    include_pad=st.booleans(),
    size=st.integers(5, 9),
)
def test_pool_matches_torch(
    kind: str, kernel: int, stride: int, pad: int, ceil_mode: bool, include_pad: bool, size: int
) -> None:
    pad = min(pad, kernel // 2)  # torch's limit
    stride = min(stride, kernel)  # windows that start past the input have no torch meaning
    x = _randn(2, 3, size, size + 1)
    kw: dict[str, Any] = dict(
        kernel_sizes=[kernel, kernel],
        strides=[stride, stride],
        pad_type="custom",
        pad=[pad] * 4,
        ceil_mode=ceil_mode,
    )
    if kind == "avg":
        got = _run1(
            _program(
                lambda x: mb.avg_pool(x=x, exclude_padding_from_average=not include_pad, **kw),
                x.shape,
            ),
            x,
        )
        ref = F.avg_pool2d(torch.from_numpy(x), kernel, stride, pad, ceil_mode, include_pad)
    else:
        got = _run1(_program(lambda x: mb.max_pool(x=x, **kw), x.shape), x)
        ref = F.max_pool2d(torch.from_numpy(x), kernel, stride, pad, ceil_mode=ceil_mode)
    _assert_fp32(got, ref)


def test_l2_pool_matches_torch_lp_pool() -> None:
    x = _randn(1, 3, 6, 8)
    got = _run1(
        _program(
            lambda x: mb.l2_pool(x=x, kernel_sizes=[2, 3], strides=[2, 1], pad_type="valid"),
            x.shape,
        ),
        x,
    )
    _assert_fp32(got, F.lp_pool2d(torch.from_numpy(x), 2, (2, 3), (2, 1)))


@settings(max_examples=20, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    data=st.data(),
)
def test_slice_by_index_matches_numpy(shape: list[int], data: st.DataObject) -> None:
    rank = len(shape)
    # indices within [-d, d - 1]: the MIL builder clamps others into range, which for negative
    # strides is not Python's rule
    begin = [data.draw(st.integers(-d, d - 1)) for d in shape]
    end = [data.draw(st.integers(-d, d - 1)) for d in shape]
    stride = data.draw(st.lists(st.sampled_from([-2, -1, 1, 2, 3]), min_size=rank, max_size=rank))
    begin_mask = data.draw(st.lists(st.booleans(), min_size=rank, max_size=rank))
    end_mask = data.draw(st.lists(st.booleans(), min_size=rank, max_size=rank))
    index = tuple(
        slice(None if bm else b, None if em else e, s)
        for b, e, s, bm, em in zip(begin, end, stride, begin_mask, end_mask, strict=True)
    )
    x = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    expected = x[index]
    if 0 in expected.shape:
        return  # MIL has no empty tensors
    got = _run1(
        _program(
            lambda x: mb.slice_by_index(
                x=x,
                begin=np.array(begin, np.int32),
                end=np.array(end, np.int32),
                stride=np.array(stride, np.int32),
                begin_mask=begin_mask,
                end_mask=end_mask,
            ),
            x.shape,
        ),
        x,
    )
    np.testing.assert_array_equal(got, expected)


def test_slice_by_index_squeeze_mask_and_slice_by_size() -> None:
    x = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    got = _run1(
        _program(
            lambda x: mb.slice_by_index(
                x=x,
                begin=[1, 0, -2],
                end=[0, 3, 0],
                squeeze_mask=[True, False, False],
                end_mask=[False, False, True],
            ),
            x.shape,
        ),
        x,
    )
    np.testing.assert_array_equal(got, x[1, 0:3, -2:])
    got = _run1(
        _program(lambda x: mb.slice_by_size(x=x, begin=[1, 1, 2], size=[2, -1, 2]), x.shape), x
    )
    np.testing.assert_array_equal(got, x[1:3, 1:, 2:4])


@pytest.mark.parametrize(
    ("opset", "in_shape", "shape", "expected"),
    [
        (ct.target.iOS15, (2, 3, 4), [0, -1], None),  # len(shape) != rank: iOS15 refuses
        (ct.target.iOS15, (2, 3, 4), [0, -1, 2], (2, 6, 2)),  # 0 copies x's axis
        (ct.target.iOS17, (2, 50), [1, 0, -1, 0], (1, 1, 2, 50)),  # the op doc's example
        (ct.target.iOS17, (2, 3, 4), [0, -1], (3, 8)),  # 0s match x's axes from the right
    ],
)
def test_reshape_zero_and_minus_one(
    opset: Any, in_shape: tuple[int, ...], shape: list[int], expected: tuple[int, ...] | None
) -> None:
    x = np.arange(int(np.prod(in_shape)), dtype=np.float32).reshape(in_shape)
    if expected is None:
        # coremltools' own check (not ours): with a 0 in shape, iOS15 wants len(shape) == rank
        with pytest.raises(ValueError, match=r"rank of x \(3\) must equal to the target shape len"):
            _program(lambda x: mb.reshape(x=x, shape=shape), in_shape, opset=opset)
        return
    got = _run1(_program(lambda x: mb.reshape(x=x, shape=shape), in_shape, opset=opset), x)
    np.testing.assert_array_equal(got, x.reshape(expected))


@settings(max_examples=20, deadline=None)
@given(perm=st.permutations(range(4)), axis=st.integers(-4, 3), keep=st.booleans())
def test_transpose_softmax_reduce_over_axes(perm: list[int], axis: int, keep: bool) -> None:
    x = _randn(2, 3, 4, 5)

    def fn(x: Any) -> Any:
        t = mb.transpose(x=x, perm=perm)
        s = mb.softmax(x=t, axis=axis)
        return mb.reduce_sum(x=s, axes=[axis, (axis + 2) % 4], keep_dims=keep)

    got = _run1(_program(fn, x.shape), x)
    t = torch.from_numpy(x).permute(*perm).softmax(axis)
    ref = t.sum(dim=sorted({axis % 4, (axis + 2) % 4}), keepdim=keep)
    _assert_fp32(got, ref)


def _prod(t: torch.Tensor, dims: tuple[int, ...], keep: bool) -> torch.Tensor:
    # torch.prod reduces one axis at a time
    for d in dims:
        t = t.prod(d, keepdim=True)
    return t if keep else t.squeeze(dims)


@pytest.mark.parametrize(
    ("op", "reference"),
    [
        ("reduce_prod", lambda t, d, k: _prod(t, d, k)),
        ("reduce_l1_norm", lambda t, d, k: t.abs().sum(d, keepdim=k)),
        ("reduce_l2_norm", lambda t, d, k: t.norm(dim=d, keepdim=k)),
        ("reduce_sum_square", lambda t, d, k: (t * t).sum(d, keepdim=k)),
        ("reduce_log_sum", lambda t, d, k: t.abs().sum(d, keepdim=k).log()),
        ("reduce_log_sum_exp", lambda t, d, k: torch.logsumexp(t, d, keepdim=k)),
        ("reduce_min", lambda t, d, k: t.amin(d, keepdim=k)),
    ],
)
@pytest.mark.parametrize("keep", [False, True])
def test_reductions_built_directly(op: str, reference: Any, keep: bool) -> None:
    x = _randn(2, 3, 4)
    if op == "reduce_log_sum":
        x = np.abs(x)
    got = _run1(_program(lambda x: getattr(mb, op)(x=x, axes=[0, 2], keep_dims=keep), x.shape), x)
    _assert_fp32(got, reference(torch.from_numpy(x), (0, 2), keep))


@pytest.mark.parametrize(
    ("mode", "reference"),
    [
        ("EXACT", lambda t: F.gelu(t)),
        ("TANH_APPROXIMATION", lambda t: F.gelu(t, approximate="tanh")),
        ("SIGMOID_APPROXIMATION", lambda t: t * torch.sigmoid(1.702 * t)),
    ],
)
def test_gelu_modes(mode: str, reference: Any) -> None:
    # the converter maps gelu(approximate="tanh") to EXACT, so TANH_APPROXIMATION and
    # SIGMOID_APPROXIMATION are only reachable by building the op directly
    x = np.linspace(-6, 6, 241, dtype=np.float32).reshape(1, 241)
    got = _run1(_program(lambda x: mb.gelu(x=x, mode=mode), x.shape), x)
    _assert_fp32(got, reference(torch.from_numpy(x)))


def test_erf_matches_torch_over_its_range() -> None:
    x = np.concatenate([np.linspace(-7, 7, 4001), np.geomspace(1e-6, 3, 200)]).astype(np.float32)
    got = _run1(_program(lambda x: mb.erf(x=x), x.shape), x)
    ref = torch.erf(torch.from_numpy(x).double()).numpy()
    np.testing.assert_allclose(got, ref, rtol=3e-7, atol=1e-7)


@pytest.mark.parametrize(
    ("build", "reference"),
    [
        (lambda x: mb.scaled_tanh(x=x, alpha=1.5, beta=0.7), lambda t: 1.5 * torch.tanh(0.7 * t)),
        (
            lambda x: mb.clamped_relu(x=x, alpha=0.2, beta=0.9),
            lambda t: torch.clamp(F.leaky_relu(t, 0.2), max=0.9),
        ),
        (
            lambda x: mb.softplus_parametric(
                x=x,
                alpha=np.array([1.0, 2.0, 0.5], np.float32),
                beta=np.array([1.0, 0.5, 3.0], np.float32),
            ),
            lambda t: (
                torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1)
                * F.softplus(t * torch.tensor([1.0, 0.5, 3.0]).view(1, 3, 1))
            ),
        ),
        (lambda x: mb.softsign(x=x), F.softsign),
        (lambda x: mb.inverse(x=x, epsilon=1e-4), lambda t: 1 / (t + 1e-4)),
        (lambda x: mb.log(x=mb.abs(x=x), epsilon=1e-3), lambda t: torch.log(t.abs() + 1e-3)),
        (lambda x: mb.rsqrt(x=mb.abs(x=x), epsilon=0.5), lambda t: torch.rsqrt(t.abs() + 0.5)),
        (
            lambda x: mb.l2_norm(x=x, epsilon=1e-6),
            lambda t: t / torch.sqrt((t * t).sum((-3, -2, -1), keepdim=True) + 1e-6),
        ),
        (lambda x: mb.instance_norm(x=x, epsilon=1e-3), lambda t: F.instance_norm(t, eps=1e-3)),
        (
            lambda x: mb.layer_norm(
                # gamma follows x's axis order (0, 2), whatever the order of `axes`
                x=x,
                axes=[2, 0],
                gamma=np.arange(8, dtype=np.float32).reshape(2, 4),
                epsilon=1e-5,
            ),
            lambda t: (
                F.layer_norm(t.permute(1, 0, 2), (2, 4)).permute(1, 0, 2)
                * torch.arange(8.0).reshape(2, 1, 4)
            ),
        ),
        (
            lambda x: mb.cumsum(x=x, axis=1, exclusive=True, reverse=True),
            lambda t: t.flip(1).cumsum(1).flip(1) - t,
        ),
        (
            lambda x: mb.concat(values=[x, mb.mul(x=x, y=2.0)], axis=1, interleave=True),
            lambda t: torch.stack([t, 2 * t], 2).reshape(2, 6, 4),
        ),
        (
            lambda x: mb.squeeze(x=mb.expand_dims(x=x, axes=[-1, 0]), axes=[0, 1, 4]),
            lambda t: t,
        ),  # squeeze leaves non-unit axes alone (PyTorch's rule)
        (lambda x: mb.sliding_windows(x=x, axis=2, size=2, stride=2), lambda t: t.unfold(2, 2, 2)),
        (lambda x: mb.flatten2d(x=x, axis=-1), lambda t: t.reshape(6, 4)),
        (
            lambda x: mb.band_part(x=x, lower=1, upper=0),
            lambda t: torch.tril(t) - torch.tril(t, -2),
        ),
        (lambda x: mb.stack(values=[x, x], axis=-1), lambda t: torch.stack([t, t], -1)),
        (lambda x: mb.reverse(x=x, axes=[0, -1]), lambda t: t.flip((0, -1))),
        (lambda x: mb.identity(x=x), lambda t: t),
        (lambda x: mb.mod(x=x, y=np.float32(0.7)), lambda t: torch.remainder(t, 0.7)),
        (
            lambda x: mb.cast(
                x=mb.logical_xor(x=mb.greater(x=x, y=0.0), y=mb.less(x=x, y=0.5)), dtype="fp32"
            ),
            lambda t: ((t > 0) ^ (t < 0.5)).float(),
        ),
        (lambda x: mb.squeeze(x=mb.expand_dims(x=x, axes=[0, 2])), lambda t: t),
    ],
    ids=[
        "scaled_tanh",
        "clamped_relu",
        "softplus_parametric",
        "softsign",
        "inverse",
        "log",
        "rsqrt",
        "l2_norm",
        "instance_norm",
        "layer_norm_unsorted_axes",
        "cumsum_exclusive_reverse",
        "concat_interleave",
        "squeeze_non_unit_axis",
        "sliding_windows",
        "flatten2d",
        "band_part",
        "stack",
        "reverse",
        "identity",
        "mod",
        "logical_xor",
        "squeeze_all_unit_axes",
    ],
)
def test_builder_ops_match_torch(build: Any, reference: Any) -> None:
    x = _randn(2, 3, 4, seed=5)
    got = _run1(_program(build, x.shape), x)
    _assert_fp32(got, reference(torch.from_numpy(x)))


@settings(max_examples=20, deadline=None)
@given(
    batch_x=st.lists(st.sampled_from([1, 2]), min_size=0, max_size=2),
    batch_y=st.lists(st.sampled_from([1, 2]), min_size=0, max_size=2),
    m=st.integers(1, 4),
    k=st.integers(1, 4),
    n=st.integers(1, 4),
    transpose_x=st.booleans(),
    transpose_y=st.booleans(),
)
def test_matmul_broadcasting_and_transposes(
    batch_x: list[int],
    batch_y: list[int],
    m: int,
    k: int,
    n: int,
    transpose_x: bool,
    transpose_y: bool,
) -> None:
    # batch axes aligned from the right, a missing or size-1 axis broadcasts (NumPy's rule)
    length = min(len(batch_x), len(batch_y))
    if length:
        batch_y[-length:] = [
            bx if by == 1 or bx == 1 else by
            for bx, by in zip(batch_x[-length:], batch_y[-length:], strict=True)
        ]
    x = _randn(*batch_x, *((k, m) if transpose_x else (m, k)), seed=1)
    y = _randn(*batch_y, *((n, k) if transpose_y else (k, n)), seed=2)
    got = _run1(
        _program(
            lambda x, y: mb.matmul(x=x, y=y, transpose_x=transpose_x, transpose_y=transpose_y),
            x.shape,
            y.shape,
        ),
        x,
        y,
    )
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    ref = torch.matmul(
        tx.transpose(-1, -2) if transpose_x else tx, ty.transpose(-1, -2) if transpose_y else ty
    )
    _assert_fp32(got, ref)


@settings(max_examples=20, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=2, max_size=4),
    data=st.data(),
    affine=st.booleans(),
)
def test_layer_norm_over_any_axes(shape: list[int], data: st.DataObject, affine: bool) -> None:
    rank = len(shape)
    axes = data.draw(
        st.lists(
            st.integers(-rank, rank - 1), min_size=1, max_size=rank, unique_by=lambda a: a % rank
        )
    )
    x = _randn(*shape, seed=3)
    kept = sorted(a % rank for a in axes)
    normalised = [shape[a] for a in kept]
    gamma = _randn(*normalised, seed=4) if affine else None
    beta = _randn(*normalised, seed=5) if affine else None
    got = _run1(
        _program(
            lambda x: mb.layer_norm(x=x, axes=axes, gamma=gamma, beta=beta, epsilon=1e-3), x.shape
        ),
        x,
    )
    # torch normalises trailing axes: move the normalised axes to the end first
    order = [a for a in range(rank) if a not in kept] + kept
    moved = torch.from_numpy(x).permute(*order)
    ref = F.layer_norm(
        moved,
        normalised,
        torch.from_numpy(gamma) if affine else None,
        torch.from_numpy(beta) if affine else None,
        eps=1e-3,
    )
    _assert_fp32(got, ref.permute(*np.argsort(order).tolist()))


def test_gather_variants() -> None:
    x = _randn(3, 4, 5)
    idx = np.array([[0, 3, -1], [2, 2, 0], [1, 0, 4]], np.int32)
    # negative indices count from the end up to iOS16; iOS17 rules them out of range
    gather16 = _program(
        lambda x: mb.gather(x=x, indices=idx, axis=-1, batch_dims=1), x.shape, opset=ct.target.iOS16
    )
    ref = np.stack([np.take(x[b], idx[b] % 5, axis=-1) for b in range(3)])
    np.testing.assert_array_equal(_run1(gather16, x), ref)
    gather17 = _program(lambda x: mb.gather(x=x, indices=idx, axis=-1, batch_dims=1), x.shape)
    with pytest.raises(ExecutorError, match=r"indices must lie in \[0, 5\)"):
        _run1(gather17, x)
    got = _run1(_program(lambda x: mb.gather(x=x, indices=idx % 4, axis=1), x.shape), x)
    np.testing.assert_array_equal(got, np.take(x, idx % 4, axis=1))
    nd = np.array([[0, 1], [2, 3], [1, 0]], np.int32)
    got = _run1(_program(lambda x: mb.gather_nd(x=x, indices=nd), x.shape), x)
    np.testing.assert_array_equal(got, x[nd[:, 0], nd[:, 1]])
    per_batch = np.array([[[1], [3]], [[0], [0]], [[2], [1]]], np.int32)  # (3, 2, 1)
    got = _run1(_program(lambda x: mb.gather_nd(x=x, indices=per_batch, batch_dims=1), x.shape), x)
    np.testing.assert_array_equal(got, np.stack([x[b, per_batch[b, :, 0]] for b in range(3)]))
    along = np.array([[[1, 0, 2, 4, 3]]], np.int32).repeat(3, 0).repeat(4, 1)
    got = _run1(_program(lambda x: mb.gather_along_axis(x=x, indices=along, axis=2), x.shape), x)
    np.testing.assert_array_equal(got, np.take_along_axis(x, along, 2))


def test_integer_and_shape_ops() -> None:
    x = _randn(2, 3, 4)

    def fn(x: Any) -> Any:
        shape = mb.shape(x=x)
        ones = mb.fill(shape=shape, value=1.5)
        like = mb.fill_like(ref_tensor=x, value=2.0)
        steps = mb.range_1d(start=0.0, end=4.0, step=1.0)
        hot = mb.one_hot(indices=np.array([0, 2, 1], np.int32), one_hot_vector_size=4)
        values, indices = mb.topk(x=x, k=2, axis=1, ascending=True)
        order = mb.argsort(x=x, axis=-1, ascending=True)
        total = mb.add(x=mb.add(x=ones, y=like), y=steps)
        return shape, total, hot, values, indices, order

    out = list(run(_program(fn, x.shape), {"x": x}, precision="fp32").values())
    np.testing.assert_array_equal(out[0], [2, 3, 4])
    assert out[0].dtype == np.int32
    np.testing.assert_array_equal(out[1], 3.5 + np.arange(4.0) + np.zeros((2, 3, 4)))
    np.testing.assert_array_equal(out[2], F.one_hot(torch.tensor([0, 2, 1]), 4).numpy())
    ref_values, ref_indices = torch.topk(torch.from_numpy(x), 2, dim=1, largest=False)
    np.testing.assert_array_equal(out[3], ref_values.numpy())
    np.testing.assert_array_equal(out[4], ref_indices.numpy())
    np.testing.assert_array_equal(out[5], np.argsort(x, -1, kind="stable"))


def test_cast_to_int_truncates_toward_zero_and_bool_is_nonzero() -> None:
    x = np.array([[-2.7, -0.5, 0.0, 0.5, 2.7]], np.float32)

    def fn(x: Any) -> Any:
        return mb.cast(x=x, dtype="int32"), mb.cast(x=x, dtype="bool")

    as_int, as_bool = run(_program(fn, x.shape), {"x": x}, precision="fp16").values()
    assert as_int.dtype == np.int32 and as_bool.dtype == np.bool_
    np.testing.assert_array_equal(as_int, torch.from_numpy(x).to(torch.int32).numpy())
    np.testing.assert_array_equal(as_bool, x != 0)


def test_cond_and_while_loop() -> None:
    x = _randn(2, 3)

    def fn(x: Any) -> Any:
        positive = mb.greater(x=mb.reduce_sum(x=x), y=0.0)
        branch = mb.cond(
            pred=positive, _true_fn=lambda: mb.mul(x=x, y=2.0), _false_fn=lambda: mb.sub(x=x, y=1.0)
        )

        def keep_going(i: Any, acc: Any) -> Any:
            return mb.less(x=i, y=np.int32(4))

        def body(i: Any, acc: Any) -> Any:
            return mb.add(x=i, y=np.int32(1)), mb.add(x=acc, y=x)

        _, looped = mb.while_loop(_cond=keep_going, _body=body, loop_vars=(np.int32(0), x))
        return branch, looped

    branch, looped = run(_program(fn, x.shape), {"x": x}, precision="fp32").values()
    expected = x * 2 if x.sum() > 0 else x - 1
    np.testing.assert_allclose(branch, expected, rtol=1e-6)
    np.testing.assert_allclose(looped, 5 * x, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# precision semantics


def _fp16(a: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(a)
    return t.to(torch.float16).to(torch.float32)


def test_fp16_mode_rounds_every_stored_value() -> None:
    # y = exp(x) * w + 0.1: x, w, 0.1, exp's and mul's and add's outputs are each rounded to
    # fp16, and each op computes in float32 from fp16 values
    x = _randn(3, 7) * 2
    w = np.float32(1.2345678)

    def fn(x: Any) -> Any:
        return mb.add(x=mb.mul(x=mb.exp(x=x), y=w), y=np.float32(0.1))

    program = _program(fn, x.shape)
    got16 = _run1(program, x, precision="fp16")
    got32 = _run1(program, x, precision="fp32")
    ref16 = _fp16(_fp16(_fp16(torch.exp(_fp16(x))) * _fp16(w)) + _fp16(0.1)).numpy()
    ref32 = np.exp(x) * w + np.float32(0.1)
    # one fp16 ulp of slack: torch's and numpy's float32 exp may differ in the last bit
    np.testing.assert_allclose(got16, ref16, rtol=2 * FP16_ROUNDOFF, atol=0)
    np.testing.assert_allclose(got32, ref32, rtol=1e-6)
    assert np.all(got16.astype(np.float16).astype(np.float32) == got16)  # fp16 values
    assert np.any(got16 != got32)
    assert got16.dtype == np.float32  # declared output type, holding fp16 values


def test_fp32_mode_ignores_casts_to_fp16(tmp_path: Path) -> None:
    # an fp16 program casts its input to fp16; the fp32 run keeps float32 throughout
    module = nn.Sequential(nn.Linear(5, 3))
    x = torch.randn(2, 5)
    program = _convert(
        module, [x], tmp_path / "lin16.mlpackage", precision="fp16", target=ct.target.iOS15
    )
    assert "cast" in _ops_of(program)
    w = module[0].weight.detach()
    b = module[0].bias.detach()
    got = run(program, {"x0": x.numpy()}, precision="fp32")
    (value,) = got.values()
    # weights were stored in fp16 by the conversion; the input was not rounded
    _assert_fp32(value, (x @ _fp16(w).T + _fp16(b)))
    assert value.dtype == np.float32


# ---------------------------------------------------------------------------------------------
# whole models


MODEL_CASES = {
    "tiny_moat_0-standard-rpe-global": (
        "tiny_moat_0",
        dict(form="standard", pe="rpe", attention="global", image_size=64, num_classes=10),
    ),
    "tiny_moat_0-ane-lepe-local": (
        "tiny_moat_0",
        dict(form="ane", pe="lepe", attention="local", window=2, image_size=64, num_classes=10),
    ),
    "deit_tiny-standard": ("deit_tiny", dict(form="standard", image_size=32, num_classes=10)),
}


@pytest.fixture(scope="module", params=sorted(MODEL_CASES))
def model_case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    name, options = MODEL_CASES[request.param]
    torch.manual_seed(0)
    model = create_model(name, **options).eval()
    size = options["image_size"]
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        ref = model(x).numpy()
    folder = tmp_path_factory.mktemp("models")
    # the library's own export, in fp32: the package holds float32 weights
    path = export(model, tuple(x.shape), folder / f"{request.param}.mlpackage", precision="fp32")
    return request.param, x, ref, load_program(path)


def test_model_fp32_matches_torch(model_case: Any) -> None:
    case, x, ref, program = model_case
    (got,) = run(program, {"image": x.numpy()}, precision="fp32").values()
    err = _rel_err(got.reshape(ref.shape), ref)
    assert err <= FP32_TOL, f"{case}: fp32 error {err:.2e}"  # measured 3e-7 .. 1.1e-6


def test_model_fp16_within_deployment_bound(model_case: Any) -> None:
    case, x, ref, program = model_case
    (got,) = run(program, {"image": x.numpy()}, precision="fp16").values()
    err = _rel_err(got.reshape(ref.shape), ref)
    # hundreds of ops, but normalisation after each block keeps errors from compounding:
    # measured 5e-4 .. 2e-3 of the logits' scale
    assert 1e-5 < err <= FP16_TOL, f"{case}: fp16 error {err:.2e}"


class SmallNet(nn.Module):
    """x: (1, 3, 16, 16) -> logits (1, 5): conv, BN, GELU, single-head attention over the 64
    positions of a stride-2 map written as the ANE form does (einsum, softmax), LayerNorm,
    mean, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.qkv = nn.Conv2d(8, 24, 1)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.bn(self.stem(x)))
        B, C, H, W = y.shape
        q, k, v = self.qkv(y).reshape(B, 3 * C, 1, H * W).split(C, dim=1)
        attn = torch.einsum("bchq,bchk->bkhq", q * C**-0.5, k).softmax(dim=1)
        y = y + torch.einsum("bkhq,bchk->bchq", attn, v).reshape(B, C, H, W)
        return self.head(self.norm(y.mean((2, 3))))


def test_exported_fp16_package_runs_like_the_fp32_program_in_fp16(tmp_path: Path) -> None:
    # the package ane_lib.coreml.export writes (fp16 weights, fp16 input and output, iOS17)
    # gives the same fp16 run as the float32 program whose values the executor rounds
    torch.manual_seed(0)
    model = SmallNet().eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        ref = model(x).numpy()
    path = export(model, tuple(x.shape), tmp_path / "small.mlpackage")
    exported = load_program(path)
    assert "cast" not in _ops_of(exported)  # fp16 at the edges
    assert {"conv", "einsum", "softmax", "layer_norm", "linear"} <= _ops_of(exported)
    (got,) = run(path, {"image": x.numpy()}, precision="fp16").values()
    assert got.dtype == np.float16
    path32 = export(model, tuple(x.shape), tmp_path / "small32.mlpackage", precision="fp32")
    (same,) = run(path32, {"image": x.numpy()}, precision="fp16").values()
    np.testing.assert_allclose(
        got.astype(np.float32), same, rtol=0, atol=2 * FP16_ROUNDOFF * _scale(ref)
    )
    assert 1e-5 < _rel_err(got, ref) <= FP16_TOL
    # the same package in fp32 mode: only the fp16 weights remain as error
    (got32,) = run(exported, {"image": x.numpy()}, precision="fp32").values()
    assert got32.dtype == np.float32
    assert _rel_err(got32, ref) < _rel_err(got, ref)


# ---------------------------------------------------------------------------------------------
# errors and reports


def test_an_op_missing_from_the_registry_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    program = _program(
        lambda x: mb.space_to_depth(x=mb.relu(x=x), block_size=2, name="s2d"), (1, 2, 4, 4)
    )
    monkeypatch.delitem(REGISTRY, "space_to_depth")
    with pytest.raises(UnsupportedOpError, match="space_to_depth") as err:
        run(program, {"x": _randn(1, 2, 4, 4)})
    assert err.value.op_type == "space_to_depth" and err.value.op_name == "s2d"
    assert isinstance(err.value, NotImplementedError)
    assert "not implemented" in err.value.reason and "abs, acos" in str(err.value)


def test_a_declined_op_says_why() -> None:
    assert "conv_quantized" not in SUPPORTED_OPS and "conv_quantized" in DECLINED_OPS
    weight = np.ones((2, 2, 1, 1), np.uint8)
    program = _program(
        lambda x: mb.conv_quantized(
            x=x,
            weight=weight,
            quantization_type="linear",
            nbits=8,
            quant_scale=np.float32(0.5),
            quant_bias=np.float32(0.0),
            name="cq",
        ),
        (1, 2, 3, 3),
        opset=ct.target.iOS15,
    )
    with pytest.raises(UnsupportedOpError, match="neuralnetwork backend") as err:
        run(program, {"x": _randn(1, 2, 3, 3)})
    assert err.value.op_name == "cq" and err.value.reason.startswith("declined")


def test_wrong_output_shape_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # the executor checks each result against the program's declared shape
    program = _program(lambda x: mb.relu(x=x, name="r"), (2, 3))
    broken = OpDef("relu", "activation", lambda a: a.get("x")[:, :1])
    monkeypatch.setitem(REGISTRY, "relu", broken)
    with pytest.raises(ExecutorError, match=r"produced shape \(2, 1\)") as err:
        run(program, {"x": _randn(2, 3)})
    assert "'r'" in str(err.value) and "relu" in str(err.value)


class Overflow(nn.Module):
    """x: (1, 8) -> layer_norm(x * 1000 + 1): for x = 100 the product exceeds fp16's 65504."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x * 1000.0 + 1.0, (8,))


@pytest.fixture(scope="module")
def overflow_program(tmp_path_factory: pytest.TempPathFactory) -> Any:
    x = torch.ones(1, 8)
    return _convert(
        Overflow(), [x], tmp_path_factory.mktemp("ovf") / "o.mlpackage", precision="fp16"
    )


def _first_op(program: Any, op_type: str) -> Any:
    return next(op for op in program.functions["main"].operations if op.op_type == op_type)


def test_fp16_overflow_is_reported_by_op_name(overflow_program: Any) -> None:
    x = np.full((1, 8), 100.0, np.float32)  # 100 * 1000 = 1e5 > 65504
    mul = _first_op(overflow_program, "mul")
    with pytest.raises(Float16OverflowError) as err:
        run(overflow_program, {"x0": x}, precision="fp16")
    assert err.value.op_name == mul.name and err.value.op_type == "mul"
    assert err.value.count == 8 and err.value.size == 8
    assert err.value.max_abs == pytest.approx(1e5, rel=1e-3)
    assert re.search(rf"op '{re.escape(mul.name)}' \(type 'mul'\) is the first op", str(err.value))
    assert "65504" in str(err.value)
    # fp32 holds 1e5: no report, and the values are right
    (out,) = run(overflow_program, {"x0": x}, precision="fp32").values()
    np.testing.assert_allclose(out, np.zeros((1, 8)), atol=1e-3)
    # small inputs stay in range
    run(overflow_program, {"x0": np.full((1, 8), 60.0, np.float32)}, precision="fp16")


def test_fp16_overflow_warn_reports_only_the_first_op(overflow_program: Any) -> None:
    x = np.full((1, 8), 100.0, np.float32)
    mul = _first_op(overflow_program, "mul")
    with pytest.warns(NonFiniteOutputWarning) as record:
        (out,) = run(overflow_program, {"x0": x}, precision="fp16", on_overflow="warn").values()
    assert len(record) == 1 and mul.name in str(record[0].message)
    assert not np.isfinite(out).any()  # inf - inf in layer_norm: nan, passed on silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(overflow_program, {"x0": x}, precision="fp16", on_overflow="ignore")


def test_fp16_overflowing_constant_is_named() -> None:
    # a float32 program run in fp16: the constant 1e5 becomes inf as mul reads it
    def fn(x: Any) -> Any:
        return mb.mul(x=x, y=np.float32(1e5), name="scale")

    program = _program(fn, (1, 3))
    with pytest.raises(Float16OverflowError, match="constant input .* exceeds fp16") as err:
        run(program, {"x": np.ones((1, 3), np.float32)}, precision="fp16")
    assert err.value.op_name == "scale" and err.value.constant is not None
    (out,) = run(program, {"x": np.ones((1, 3), np.float32)}, precision="fp32").values()
    np.testing.assert_array_equal(out, np.full((1, 3), 1e5, np.float32))


def test_fp32_only_parameters_are_not_rounded_in_fp16() -> None:
    # upsample_bilinear takes its scale factors in fp32 only: 7 * 0.4286 must stay >= 3
    x = _randn(1, 2, 7, 9)
    program = _program(
        lambda x: mb.upsample_bilinear(
            x=x, scale_factor_height=3.0001 / 7, scale_factor_width=1.0, align_corners=False
        ),
        x.shape,
    )
    got = _run1(program, x, precision="fp16")
    ref = F.interpolate(torch.from_numpy(x), size=(3, 9), mode="bilinear")
    assert got.shape == (1, 2, 3, 9)
    assert _rel_err(got, ref.numpy()) <= FP16_TOL


def test_fp32_non_finite_output_is_reported() -> None:
    program = _program(lambda x: mb.exp(x=x, name="e"), (1, 3))
    with pytest.raises(NonFiniteOutputError, match="op 'e'.*in fp32") as err:
        run(program, {"x": np.array([[0.0, 100.0, 1.0]], np.float32)}, precision="fp32")
    assert not isinstance(err.value, Float16OverflowError)
    assert err.value.max_abs == math.inf


def test_inputs_are_validated() -> None:
    program = _program(lambda x, y: mb.add(x=x, y=y), (2, 3), (1, 3))
    good = {"x": _randn(2, 3), "y": _randn(1, 3)}
    expects = r"expects: x: \(2, 3\) fp32; y: \(1, 3\) fp32"
    with pytest.raises(ValueError, match=r"missing \['y'\].*" + expects):
        run(program, {"x": good["x"]})
    with pytest.raises(ValueError, match=r"unexpected \['z'\]"):
        run(program, {**good, "z": good["x"]})
    with pytest.raises(ValueError, match=r"inputs\['y'\] has shape \(2, 3\).*declares \(1, 3\)"):
        run(program, {"x": good["x"], "y": good["x"]})
    with pytest.raises(TypeError, match=r"inputs\['x'\] has dtype int64.*declares fp32"):
        run(program, {"x": np.ones((2, 3), np.int64), "y": good["y"]})
    with pytest.raises(TypeError, match=r"inputs\['x'\] must be a numeric array"):
        run(program, {"x": np.array([["a"] * 3] * 2), "y": good["y"]})
    with pytest.raises(TypeError, match="inputs must be a mapping"):
        run(program, [good["x"], good["y"]])  # type: ignore[arg-type]
    # torch tensors and float64 arrays are accepted
    out = run(program, {"x": torch.from_numpy(good["x"]), "y": good["y"].astype(np.float64)})
    np.testing.assert_allclose(next(iter(out.values())), good["x"] + good["y"], rtol=1e-3)


def test_arguments_are_validated(tmp_path: Path) -> None:
    program = _program(lambda x: mb.relu(x=x, name="r"), (2, 3))
    x = {"x": _randn(2, 3)}
    with pytest.raises(
        ValueError, match=r"precision must be one of \['fp16', 'fp32'\], got 'bf16'"
    ):
        run(program, x, precision="bf16")
    with pytest.raises(ValueError, match="on_overflow must be one of"):
        run(program, x, on_overflow="explode")
    with pytest.raises(TypeError, match="path_or_program must be a path.*got int"):
        run(3, x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="does not exist"):
        run(tmp_path / "missing.mlpackage", x)
    with pytest.raises(ValueError, match=r"outputs \['nope'\] are not variables"):
        run(program, x, outputs=["nope"])
    with pytest.raises(TypeError, match="outputs must be a sequence"):
        run(program, x, outputs="r")


def test_intermediate_values_can_be_returned() -> None:
    def fn(x: Any) -> Any:
        hidden = mb.relu(x=x, name="hidden")
        return mb.mul(x=hidden, y=3.0, name="out")

    x = _randn(2, 3)
    program = _program(fn, x.shape)
    out = run(program, {"x": x}, precision="fp32", outputs=["hidden", "out", "x"])
    assert list(out) == ["hidden", "out", "x"]
    np.testing.assert_array_equal(out["hidden"], np.maximum(x, 0))
    np.testing.assert_allclose(out["out"], 3 * np.maximum(x, 0), rtol=1e-6)
    np.testing.assert_array_equal(out["x"], x)


def test_an_op_written_with_numpy_runs_like_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    # the idiom a family file uses: a function of OpArgs; numpy in, numpy out works too
    def numpy_relu(a: Any) -> np.ndarray:
        x = a.numpy("x")
        assert isinstance(x, np.ndarray) and x.dtype == np.float32
        return np.maximum(x, 0) + 1

    monkeypatch.setitem(REGISTRY, "relu", OpDef("relu", "activation", numpy_relu))
    x = _randn(2, 3)
    got = _run1(_program(lambda x: mb.relu(x=x), x.shape), x)
    np.testing.assert_array_equal(got, np.maximum(x, 0) + 1)


def test_supported_ops_are_the_registry() -> None:
    assert frozenset(REGISTRY) == SUPPORTED_OPS
    assert {"const", "cond", "while_loop"} <= SUPPORTED_OPS  # control flow registers like others
    assert not set(DECLINED_OPS) & SUPPORTED_OPS


def test_each_op_sits_in_its_coremltools_family() -> None:
    # the registering module is the family coremltools defines the op in
    families = coremltools_families()
    wrong = {
        n: (d.family, families.get(n)) for n, d in REGISTRY.items() if families.get(n) != d.family
    }
    assert not wrong
    report = coverage()
    assert report.total == len(families) and len(report.implemented) == len(REGISTRY)
    text = str(report)
    assert f"runs {len(REGISTRY)}" in text and "conv_quantized" in text
    assert all(len(line) <= 100 for line in text.splitlines())

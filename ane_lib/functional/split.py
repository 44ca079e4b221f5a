"""Splitting one convolution into a chain of smaller ones that computes exactly the same thing.

The reverse of :mod:`ane_lib.functional.merge`. A chain of convs with kernels ``k_i`` and
dilations ``e_i`` (stride 1, no nonlinearity) merges into one conv whose taps sit at the offsets
``sum_i e_i u_i`` (``0 <= u_i < k_i``) per axis. So a conv with kernel ``k`` and dilation ``d``
can be split into such a chain only if

1. the spans agree: ``sum_i e_i (k_i - 1) = d (k - 1)`` per axis (``k = k1 + k2 - 1`` for two
   plain convs), and
2. every tap offset ``d j`` of the conv is one of the chain's offsets.

Then the split always exists, at a price in channels. Peel off the first conv: give each tap
``t`` of the kernel one pair ``(u, w)`` with ``t = e_1 u + g w`` (``w`` a tap of the rest of the
chain, on its lattice ``g``) and write the kernel as the matrix

    L[(o, w), (c, u)] = W[o, c, t(u, w)]       (C_out |w| rows, C_in |u| columns, per group)

Any factorisation ``L = B A`` with inner width ``r`` gives the first conv ``A: (r, C_in, *k_1)``
and the rest ``B: (C_out, r, *rest)``; the smallest ``r`` is the matrix rank of ``L`` (found
with an SVD), at most ``min(C_in |u|, C_out |w|)``. The rest is split again the same way.

For a ``k x k`` kernel split into ``k x 1`` then ``1 x k`` the pairing is forced and ``L`` is,
per pair of channels, the ``k x k`` kernel itself: a kernel of matrix rank 1 (an outer product)
needs one intermediate channel per group, as a depthwise separable filter does. A general dense
``C -> C`` kernel needs up to ``C k`` channels in between, which costs more than it saves.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from ane_lib._checks import check_positive_int, check_tensor, int_tuple

__all__ = ["SplitStage", "chain_offsets", "split_conv_weight"]

IntOrTuple = int | Sequence[int]


class SplitStage(NamedTuple):
    """One conv of a split chain: weight ``(C_out, C_in/groups, *kernel)`` and its dilation."""

    weight: torch.Tensor
    dilation: tuple[int, ...]


def chain_offsets(kernel_sizes: Sequence[int], dilations: Sequence[int]) -> list[int]:
    """The tap offsets (sorted) a chain of convs reaches along one axis: ``sum_i e_i u_i``.

    >>> chain_offsets([3, 3], [2, 3])
    [0, 2, 3, 4, 5, 6, 7, 8, 10]
    """
    reach = {0}
    for k, e in zip(kernel_sizes, dilations, strict=True):
        reach = {r + e * u for r in reach for u in range(k)}
    return sorted(reach)


def _lattice(kernel_sizes: Sequence[int], dilations: Sequence[int]) -> int:
    """The step of the offsets a chain can reach on one axis (1 for a chain of 1-tap kernels)."""
    steps = [e for k, e in zip(kernel_sizes, dilations, strict=True) if k > 1]
    return math.gcd(*steps) if steps else 1


def _assign(
    taps: list[int], first: tuple[int, int], rest_reach: set[int], rest_lattice: int, axis: int
) -> list[tuple[int, int]]:
    """Give each tap offset ``t`` a pair (u, w): ``t = e u + g w``, ``w`` reached by the rest.

    Returns one (u, w) per tap, the smallest feasible u; ValueError naming an unreachable tap.
    """
    k, e = first
    pairs = []
    for t in taps:
        for u in range(k):
            r = t - e * u
            if r >= 0 and r in rest_reach:
                pairs.append((u, r // rest_lattice))
                break
        else:
            raise ValueError(
                f"no exact split: the kernel's tap at offset {t} on axis {axis} is not reached "
                f"by the chain (a kernel of {k} taps every {e}, then offsets "
                f"{sorted(rest_reach)})"
            )
    return pairs


def _spatial_index(index: list[list[int]]) -> tuple[Any, ...]:
    """An index that picks the listed positions of each spatial axis of a conv weight."""
    grids = torch.meshgrid(*(torch.tensor(i) for i in index), indexing="ij")
    return (slice(None), slice(None), *grids)


def _split(
    weight: torch.Tensor,
    groups: int,
    offsets: list[list[int]],
    stages: list[tuple[tuple[int, ...], tuple[int, ...]]],
    tol: float,
) -> list[SplitStage]:
    """Split ``weight`` (float64, ``(O, C/g, *K)``, taps at ``offsets[axis][j]`` and zero
    elsewhere) into ``stages`` = [(kernel, dilation), ...]."""
    n = weight.ndim - 2
    (kernel1, dil1), rest = stages[0], stages[1:]
    if not rest:
        # One conv left: place each tap at its offset on this conv's own lattice.
        index = []
        for axis, (offs, k, e) in enumerate(zip(offsets, kernel1, dil1, strict=True)):
            bad = [t for t in offs if t % e or t // e >= k]
            if bad:
                raise ValueError(
                    f"no exact split: the kernel's taps at offsets {bad} on axis {axis} are not "
                    f"reached by a kernel of {k} taps every {e}"
                )
            index.append([t // e for t in offs])
        out = weight.new_zeros((*weight.shape[:2], *kernel1))
        out[_spatial_index(index)] = weight
        return [SplitStage(out, dil1)]

    # per axis: the rest's lattice, reach and size; the (u, w) pair of every tap
    rest_lattice, rest_size, pairs = [], [], []
    for axis in range(n):
        ks = [s[0][axis] for s in rest]
        es = [s[1][axis] for s in rest]
        lattice = _lattice(ks, es)
        reach = set(chain_offsets(ks, es))
        rest_lattice.append(lattice)
        rest_size.append(max(reach) // lattice + 1)
        pairs.append(_assign(offsets[axis], (kernel1[axis], dil1[axis]), reach, lattice, axis))

    # the lifted matrix L[g, (o, w), (c, u)], one per group
    out_ch, in_per_group = weight.shape[:2]
    og = out_ch // groups
    lifted = weight.new_zeros((groups, og, *rest_size, in_per_group, *kernel1))
    taps = weight.reshape(groups, og, in_per_group, *weight.shape[2:])
    every = slice(None)
    for j in itertools.product(*(range(len(o)) for o in offsets)):
        uw = [pairs[axis][j[axis]] for axis in range(n)]
        target: tuple[Any, ...] = (every, every, *(w for _, w in uw), every, *(u for u, _ in uw))
        source: tuple[Any, ...] = (every, every, every, *j)
        lifted[target] = taps[source]
    rows, cols = og * math.prod(rest_size), in_per_group * math.prod(kernel1)
    matrix = lifted.reshape(groups, rows, cols)
    left, sing, right = torch.linalg.svd(matrix, full_matrices=False)
    keep = sing > tol * max(float(sing.max()), 1e-300)
    width = max(int(keep.sum(dim=1).max()), 1)
    root = torch.where(keep, sing, torch.zeros_like(sing)).sqrt()[:, :width]
    first = (root[:, :, None] * right[:, :width]).reshape(groups * width, in_per_group, *kernel1)
    second = (left[:, :, :width] * root[:, None, :]).reshape(groups, og, *rest_size, width)
    second = second.movedim(-1, 2).reshape(groups * og, width, *rest_size)
    # The rest is zero outside the taps it was given: keep those only, then split it again.
    used = [sorted({w for _, w in ax}) for ax in pairs]
    second = second[_spatial_index(used)]
    rest_offsets = [[w * lat for w in ax] for ax, lat in zip(used, rest_lattice, strict=True)]
    return [SplitStage(first, dil1), *_split(second, groups, rest_offsets, rest, tol)]


def split_conv_weight(
    weight: torch.Tensor,
    kernel_sizes: Sequence[IntOrTuple],
    dilations: Sequence[IntOrTuple] | None = None,
    *,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    rtol: float | None = None,
) -> list[SplitStage]:
    """Split a conv weight into a chain of convs that computes the same at stride 1.

    Args:
        weight: ``(O, C/g, *k)`` of a conv with ``dilation`` and ``groups``.
        kernel_sizes: the kernel of each conv of the chain, in data order (an int or one int
            per axis each), e.g. ``[3, 3]`` for a 5x5 kernel or ``[(k, 1), (1, k)]``.
        dilations: the dilation of each conv of the chain (default: ``dilation`` for all).
        rtol: singular values below ``rtol`` times the largest count as zero when the width of
            a stage is chosen; default ``max(rows, cols) * eps`` of ``weight``'s dtype.

    Returns one :class:`SplitStage` per conv, each with ``groups`` groups; the intermediate
    widths are ``groups`` times the matrix rank found at each step (see the module
    docstring). Chained at stride 1 without padding they equal the conv; padding belongs on
    the first conv, the stride and bias on the last (:func:`ane_lib.nn.split_conv` builds the
    modules). Raises ValueError when the spans differ or a tap is out of the chain's reach.
    """
    check_tensor("weight", weight)
    if weight.ndim not in (3, 4, 5) or not weight.is_floating_point():
        raise ValueError(
            "weight must be a floating-point conv weight (C_out, C_in/groups, *kernel), got "
            f"{weight.dtype} {tuple(weight.shape)}"
        )
    n = weight.ndim - 2
    g = check_positive_int("groups", groups)
    if weight.shape[0] % g:
        raise ValueError(f"groups={g} must divide the output channels {weight.shape[0]}")
    kernel = tuple(weight.shape[2:])
    dil = int_tuple("dilation", dilation, n)
    if isinstance(kernel_sizes, (int, str)) or len(kernel_sizes) == 0:
        raise TypeError(f"kernel_sizes must be a non-empty sequence, got {kernel_sizes!r}")
    ks = [int_tuple(f"kernel_sizes[{i}]", k, n) for i, k in enumerate(kernel_sizes)]
    if dilations is None:
        es = [dil] * len(ks)
    else:
        if isinstance(dilations, (int, str)) or len(dilations) != len(ks):
            raise ValueError(
                f"dilations must give one dilation per conv of the chain ({len(ks)}), got "
                f"{dilations!r}"
            )
        es = [int_tuple(f"dilations[{i}]", e, n) for i, e in enumerate(dilations)]
    for axis in range(n):
        span = sum(e[axis] * (k[axis] - 1) for k, e in zip(ks, es, strict=True))
        want = dil[axis] * (kernel[axis] - 1)
        if span != want:
            raise ValueError(
                f"no exact split: on axis {axis} the chain spans {span + 1} pixels "
                f"(sum of e (k - 1) + 1 over kernels {[k[axis] for k in ks]} with dilations "
                f"{[e[axis] for e in es]}) but the kernel spans {want + 1} "
                f"(dilation {dil[axis]} x (k - 1) + 1 with k = {kernel[axis]})"
            )
    w64 = weight.detach().to(torch.float64)
    if rtol is None:
        rows = weight.shape[0] // g * math.prod(kernel)
        cols = weight.shape[1] * math.prod(kernel)
        rtol = max(rows, cols) * torch.finfo(weight.dtype).eps
    offsets = [[dil[a] * j for j in range(kernel[a])] for a in range(n)]
    stages = _split(w64, g, offsets, list(zip(ks, es, strict=True)), rtol)
    return [SplitStage(s.weight.to(weight.dtype), s.dilation) for s in stages]

"""RankRecorder / max_intermediate_rank: what they record, against the tensors' own shapes."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ane_lib.functional import (
    COREML_MAX_RANK,
    RankRecord,
    RankRecorder,
    max_intermediate_rank,
    window_partition,
    window_reverse,
)

METHODS = ("5d", "6d")
LAYOUTS = (True, False)


@st.composite
def reshape_permute_chains(draw: st.DrawFn) -> tuple[list[int], list[tuple[str, tuple[int, ...]]]]:
    """Factors of a tensor's size and a chain of reshapes (to a grouping of the factors, rank 1 to
    7) and permutes (of the current axes)."""
    factors = draw(st.lists(st.integers(1, 3), min_size=1, max_size=7))
    steps: list[tuple[str, tuple[int, ...]]] = []
    rank = 1
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.booleans()):
            inner = range(1, len(factors))  # where a group of factors may end
            cuts = draw(st.sets(st.sampled_from(inner))) if inner else set()
            bounds = [0, *sorted(cuts), len(factors)]
            shape = tuple(math.prod(factors[a:b]) for a, b in pairwise(bounds))
            steps.append(("reshape", shape))
            rank = len(shape)
        else:
            steps.append(("permute", tuple(draw(st.permutations(range(rank))))))
    return factors, steps


def _apply(x: torch.Tensor, steps: list[tuple[str, tuple[int, ...]]]) -> list[torch.Tensor]:
    outs = []
    for name, arg in steps:
        x = x.reshape(arg) if name == "reshape" else x.permute(arg)
        outs.append(x)
    return outs


@settings(max_examples=60, deadline=None)
@given(chain=reshape_permute_chains())
def test_records_every_reshape_and_permute(
    chain: tuple[list[int], list[tuple[str, tuple[int, ...]]]],
) -> None:
    """One record per call, in call order, with the shape torch itself gives the result."""
    factors, steps = chain
    x = torch.arange(math.prod(factors))
    outs = _apply(x, steps)  # the reference: torch's own result shapes, no recorder
    want = [RankRecord(name, tuple(t.shape)) for (name, _), t in zip(steps, outs, strict=True)]
    with RankRecorder() as rec:
        _apply(x, steps)
    assert rec.records == want
    assert rec.max_rank == max(t.ndim for t in outs)
    assert rec.above(4) == [r for r in want if len(r.shape) > 4]
    assert max_intermediate_rank(_apply, x, steps) == rec.max_rank


def test_six_d_round_trip_is_named_by_above() -> None:
    x = torch.zeros(2, 3, 8, 8)
    with RankRecorder() as rec:
        y = x.reshape(2, 3, 2, 4, 2, 4)
        z = y.reshape(2, 3, 8, 8)
    assert rec.max_rank == 6 and z.shape == x.shape
    assert rec.above(5) == [RankRecord("reshape", (2, 3, 2, 4, 2, 4))]
    assert rec.above(5)[0].rank == 6
    assert rec.above() == rec.above(COREML_MAX_RANK) == rec.above(5)
    assert rec.above(6) == []
    assert [r.rank for r in rec.above(0)] == [6, 4]


@pytest.mark.parametrize("channels_last", LAYOUTS)
@pytest.mark.parametrize("method", METHODS)
def test_window_partition_rank(channels_last: bool, method: str) -> None:
    """The relayed partition and its reverse stay at rank 5; the Swin form reaches 6."""
    x = torch.randn(2, 8, 12, 3) if channels_last else torch.randn(2, 3, 8, 12)
    kw = dict(channels_last=channels_last, method=method)
    with RankRecorder() as part:
        w = window_partition(x, (4, 3), **kw)
    with RankRecorder() as rev:
        window_reverse(w, (4, 3), 8, 12, **kw)
    expected = int(method[0])
    assert part.max_rank == rev.max_rank == expected
    assert max_intermediate_rank(window_partition, x, (4, 3), **kw) == expected
    for rec in (part, rev):
        high = rec.above(5)
        if method == "5d":
            assert high == []
        else:  # the rank-6 tensors are the partition's own reshape and permute
            assert {r.name for r in high} == {"reshape", "permute"}
            assert all(r.rank == 6 for r in high)


def test_tuple_outputs_record_each_tensor() -> None:
    x = torch.randn(2, 6, 4)
    with RankRecorder() as rec:
        parts = torch.split(x, 2, dim=1)
        values, indices = torch.max(x, dim=1)  # a named tuple of two tensors
        rows = x.unbind(0)
        hist, edges = torch.histogramdd(x[0], bins=[3, 2, 5, 2])  # a tuple inside a named tuple
    want = [RankRecord("split", tuple(p.shape)) for p in parts]
    want += [RankRecord("max", tuple(values.shape)), RankRecord("max", tuple(indices.shape))]
    want += [RankRecord("unbind", tuple(r.shape)) for r in rows]
    want += [RankRecord("__getitem__", (6, 4))]  # x[0]: histogramdd's argument
    want += [RankRecord("histogramdd", tuple(t.shape)) for t in (hist, *edges)]
    assert len(edges) == 4 and hist.ndim == 4
    assert rec.records == want


def test_non_tensor_outputs_are_ignored() -> None:
    x = torch.randn(2, 3, 1, 1, 1, 1)
    with RankRecorder() as rec:
        _ = x.shape, x.size(0), x.dim(), x.ndim, x.numel(), x.tolist(), x.sum().item()
    assert rec.records == [RankRecord("sum", ())]  # only the rank-0 tensor x.sum()
    assert rec.max_rank == 0


def test_views_properties_and_modules_are_recorded() -> None:
    x = torch.randn(2, 3, 4)
    linear = nn.Linear(4, 5)
    with RankRecorder() as rec:
        a = x.mT
        b = x[None, :, None]
        c = x.view(6, 4).unsqueeze(0).expand(3, 6, 4)
        d = linear(x)
    names_shapes = [(r.name, r.shape) for r in rec.records]
    assert names_shapes == [
        ("mT", tuple(a.shape)),
        ("__getitem__", tuple(b.shape)),
        ("view", (6, 4)),
        ("unsqueeze", (1, 6, 4)),
        ("expand", tuple(c.shape)),
        ("linear", tuple(d.shape)),
    ]
    assert rec.max_rank == b.ndim == 5


def test_inputs_are_not_counted() -> None:
    x6 = torch.zeros(1, 2, 1, 2, 1, 2)
    assert max_intermediate_rank(torch.flatten, x6) == 1
    assert max_intermediate_rank(lambda: None) == 0
    with RankRecorder() as rec:
        pass
    assert rec.records == [] and rec.max_rank == 0 and rec.above() == []


def test_nested_recorders_both_record_and_restore() -> None:
    x = torch.zeros(16, 16)
    with RankRecorder() as outer:
        x.reshape(4, 64)
        with RankRecorder() as inner:
            x.reshape(2, 2, 2, 2, 2, 2, 2, 2)
        x.reshape(256)
    x.reshape(2, 2, 2, 2, 2, 2, 4)  # outside both: recorded by neither
    assert [r.shape for r in inner.records] == [(2,) * 8]
    assert [r.shape for r in outer.records] == [(4, 64), (2,) * 8, (256,)]
    assert inner.max_rank == outer.max_rank == 8


def test_records_accumulate_over_blocks() -> None:
    x = torch.zeros(6)
    rec = RankRecorder()
    with rec:
        x.reshape(2, 3)
    x.reshape(1, 1, 1, 6)
    with rec:
        x.reshape(1, 2, 3)
    assert [r.shape for r in rec.records] == [(2, 3), (1, 2, 3)]


def test_an_exception_leaves_recording_off() -> None:
    x = torch.zeros(6)
    rec = RankRecorder()
    with pytest.raises(RuntimeError, match=r"shape '\[4\]' is invalid"), rec:
        x.reshape(2, 3)
        x.reshape(4)  # fails inside torch: nothing recorded for it
    x.reshape(3, 2)  # the mode is gone: not recorded
    assert rec.records == [RankRecord("reshape", (2, 3))]
    with pytest.raises(KeyError), RankRecorder() as failing, RankRecorder() as nested:
        x.reshape(1, 6)
        raise KeyError("raised by the caller")
    x.reshape(6, 1)  # both recorders were left
    assert failing.records == nested.records == [RankRecord("reshape", (1, 6))]
    assert max_intermediate_rank(torch.reshape, x, (3, 1, 2)) == 3  # a fresh recorder works


def test_bad_arguments() -> None:
    rec = RankRecorder()
    with pytest.raises(ValueError, match=r"limit.*-1"):
        rec.above(-1)
    with pytest.raises(TypeError, match=r"limit.*int.*'5'"):
        rec.above("5")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"fn.*callable.*\b3\b"):
        max_intermediate_rank(3)  # type: ignore[arg-type]

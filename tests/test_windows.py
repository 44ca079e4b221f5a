"""Window partition / reverse: both methods, both layouts, against slicing and each other."""

from __future__ import annotations

import pytest
import torch
from _toy_models import WindowRoundtrip
from hypothesis import given, settings
from hypothesis import strategies as st

from ane_lib.functional import RankRecorder, window_partition, window_reverse

METHODS = ("5d", "6d")
LAYOUTS = (True, False)


def reference_partition(x_nhwc: torch.Tensor, wh: int, ww: int) -> torch.Tensor:
    """Windows cut out one by one with slicing, in Swin's order: (B * nH * nW, wh, ww, C)."""
    B, H, W, _ = x_nhwc.shape
    tiles = [
        x_nhwc[b, i * wh : (i + 1) * wh, j * ww : (j + 1) * ww, :]
        for b in range(B)
        for i in range(H // wh)
        for j in range(W // ww)
    ]
    return torch.stack(tiles)


@st.composite
def maps_and_windows(draw: st.DrawFn) -> tuple[torch.Tensor, tuple[int, int]]:
    """An NHWC float64 map (B, H, W, C) and a window (wh, ww) that divides (H, W)."""
    wh = draw(st.integers(1, 5))
    ww = draw(st.integers(1, 5))
    nH = draw(st.integers(1, 4))
    nW = draw(st.integers(1, 4))
    B = draw(st.integers(1, 3))
    C = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, nH * wh, nW * ww, C, generator=g, dtype=torch.float64)
    return x, (wh, ww)


def to_layout(x_nhwc: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x_nhwc if channels_last else x_nhwc.permute(0, 3, 1, 2).contiguous()


def windows_to_nhwc(windows: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return windows if channels_last else windows.permute(0, 2, 3, 1)


@settings(max_examples=60, deadline=None)
@given(maps_and_windows())
def test_partition_matches_slicing_reference(case: tuple[torch.Tensor, tuple[int, int]]) -> None:
    x_nhwc, (wh, ww) = case
    expected = reference_partition(x_nhwc, wh, ww)
    for channels_last in LAYOUTS:
        x = to_layout(x_nhwc, channels_last)
        for method in METHODS:
            got = window_partition(x, (wh, ww), channels_last=channels_last, method=method)
            B, H, W, C = x_nhwc.shape
            n = B * (H // wh) * (W // ww)
            want_shape = (n, wh, ww, C) if channels_last else (n, C, wh, ww)
            assert tuple(got.shape) == want_shape
            torch.testing.assert_close(
                windows_to_nhwc(got, channels_last), expected, rtol=0, atol=0
            )


@settings(max_examples=60, deadline=None)
@given(maps_and_windows())
def test_reverse_is_exact_inverse(case: tuple[torch.Tensor, tuple[int, int]]) -> None:
    x_nhwc, (wh, ww) = case
    _, H, W, _ = x_nhwc.shape
    for channels_last in LAYOUTS:
        x = to_layout(x_nhwc, channels_last)
        for method in METHODS:
            w = window_partition(x, (wh, ww), channels_last=channels_last, method=method)
            back = window_reverse(w, (wh, ww), H, W, channels_last=channels_last, method=method)
            assert torch.equal(back, x)
            # and the other way round: reverse then partition gives the windows back
            again = window_partition(back, (wh, ww), channels_last=channels_last, method=method)
            assert torch.equal(again, w)


@settings(max_examples=30, deadline=None)
@given(maps_and_windows())
def test_methods_are_interchangeable(case: tuple[torch.Tensor, tuple[int, int]]) -> None:
    """Windows cut by one method are put back by the other."""
    x_nhwc, (wh, ww) = case
    _, H, W, _ = x_nhwc.shape
    for channels_last in LAYOUTS:
        x = to_layout(x_nhwc, channels_last)
        w5 = window_partition(x, (wh, ww), channels_last=channels_last, method="5d")
        back = window_reverse(w5, (wh, ww), H, W, channels_last=channels_last, method="6d")
        assert torch.equal(back, x)


def test_int_window_is_square_and_default_is_5d() -> None:
    x = torch.randn(2, 8, 12, 3, dtype=torch.float64)
    a = window_partition(x, 4, channels_last=True)
    b = window_partition(x, (4, 4), channels_last=True, method="6d")
    assert torch.equal(a, b)
    assert torch.equal(window_reverse(a, 4, 8, 12, channels_last=True), x)


@pytest.mark.parametrize("channels_last", LAYOUTS)
@pytest.mark.parametrize(("method", "expected_rank"), [("5d", 5), ("6d", 6)])
def test_intermediate_rank(channels_last: bool, method: str, expected_rank: int) -> None:
    """The relayed partition never builds a rank-6 tensor; the reference does."""
    x = torch.randn(2, 8, 12, 3) if channels_last else torch.randn(2, 3, 8, 12)
    with RankRecorder() as part:
        w = window_partition(x, (4, 3), channels_last=channels_last, method=method)
    with RankRecorder() as rev:
        window_reverse(w, (4, 3), 8, 12, channels_last=channels_last, method=method)
    assert part.max_rank == expected_rank
    assert rev.max_rank == expected_rank


@pytest.mark.parametrize(("method", "expected_rank"), [("5d", 5), ("6d", 6)])
def test_exported_graph_rank(method: str, expected_rank: int) -> None:
    """The graph that goes to Core ML (torch.export, decomposed) has the same maximum rank."""
    x = torch.randn(1, 3, 8, 8)
    ep = torch.export.export(WindowRoundtrip(method), (x,)).run_decompositions({})
    ranks = [
        node.meta["val"].ndim
        for node in ep.graph.nodes
        if isinstance(node.meta.get("val"), torch.Tensor)
    ]
    assert max(ranks) == expected_rank


def test_window_must_divide_map() -> None:
    x = torch.randn(1, 16, 16, 4)
    with pytest.raises(ValueError, match=r"window=\(7, 7\).*\(16, 16\)"):
        window_partition(x, 7, channels_last=True)
    w = torch.randn(4, 4, 7, 7)
    with pytest.raises(ValueError, match=r"window=\(7, 7\).*\(16, 16\)"):
        window_reverse(w, 7, 16, 16, channels_last=False)


def test_bad_arguments() -> None:
    x = torch.randn(1, 8, 8, 4)
    with pytest.raises(ValueError, match=r"x.*rank 4.*rank 3"):
        window_partition(x[0], 4, channels_last=False)
    with pytest.raises(ValueError, match=r"method.*'5d'.*'7d'"):
        window_partition(x, 4, channels_last=True, method="7d")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"channels_last.*bool.*\b1\b"):
        window_partition(x, 4, channels_last=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"window.*\b0\b"):
        window_partition(x, 0, channels_last=True)
    with pytest.raises(ValueError, match=r"window.*2 ints.*\(2, 2, 2\)"):
        window_partition(x, (2, 2, 2), channels_last=True)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        window_partition(x.numpy(), 4, channels_last=True)  # type: ignore[arg-type]
    w = window_partition(x, 4, channels_last=True)
    with pytest.raises(ValueError, match=r"windows.*\(2, 2\).*\(4, 4\)"):
        window_reverse(w, 2, 8, 8, channels_last=True)
    with pytest.raises(ValueError, match=r"windows.*\b4\b.*\b8\b"):
        window_reverse(w, 4, 8, 16, channels_last=True)
    with pytest.raises(ValueError, match=r"height.*\b0\b"):
        window_reverse(w, 4, 0, 8, channels_last=True)

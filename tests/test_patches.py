"""unfold_patches / fold_patches against torch's F.unfold / F.fold (im2col / col2im), exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ane_lib.functional import fold_patches, unfold_patches
from ane_lib.functional.rank import RankRecorder


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 2),
    channels=st.integers(1, 5),
    ph=st.integers(1, 4),
    pw=st.integers(1, 4),
    nh=st.integers(1, 4),
    nw=st.integers(1, 4),
)
def test_equal_to_unfold_and_fold(
    batch: int, channels: int, ph: int, pw: int, nh: int, nw: int
) -> None:
    H, W = ph * nh, pw * nw
    x = torch.randn(batch, channels, H, W, dtype=torch.float64)
    reference = F.unfold(x, (ph, pw), stride=(ph, pw)).reshape(batch, channels, ph * pw, -1)
    patches = unfold_patches(x, (ph, pw))
    assert torch.equal(patches, reference)
    back = F.fold(
        reference.reshape(batch, channels * ph * pw, -1), (H, W), (ph, pw), stride=(ph, pw)
    )
    assert torch.equal(fold_patches(patches, (H, W), (ph, pw)), back)
    assert torch.equal(back, x)


def test_rank_never_above_five() -> None:
    x = torch.randn(2, 3, 6, 8)
    with RankRecorder() as recorder:
        fold_patches(unfold_patches(x, (3, 2)), (6, 8), (3, 2))
    assert max(r.rank for r in recorder.records) <= 5


def test_bad_arguments() -> None:
    x = torch.randn(1, 2, 6, 6)
    with pytest.raises(ValueError, match="W"):
        unfold_patches(x, (2, 4))
    with pytest.raises(ValueError, match="x"):
        unfold_patches(x[0], 2)
    with pytest.raises(ValueError, match=r"\(B, C, 4, 9\)"):
        fold_patches(torch.randn(1, 2, 4, 8), (6, 6), 2)
    with pytest.raises(TypeError, match="patch"):
        unfold_patches(x, 2.0)  # type: ignore[arg-type]

"""ane_lib.data: the digits split (fixed, stratified, upsampled for MOAT)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from ane_lib.data import DigitsSplit, load_digits_split, upsample


@pytest.fixture(scope="module")
def split() -> DigitsSplit:
    return load_digits_split()


def test_split_sizes_shapes_and_ranges(split: DigitsSplit) -> None:
    assert split.x_train.shape == (1437, 3, 32, 32) and split.x_test.shape == (360, 3, 32, 32)
    assert split.y_train.dtype == torch.int64 and split.y_test.shape == (360,)
    for x in (split.x_train, split.x_test):
        assert x.dtype == torch.float32 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # grey
    assert split.classes == tuple(range(10))


def test_split_is_stratified_and_disjoint(split: DigitsSplit) -> None:
    digits = load_digits()
    counts = np.bincount(digits.target, minlength=10)
    test_counts = np.bincount(split.y_test.numpy(), minlength=10)
    # each digit keeps its share (to rounding) in the test set
    assert np.all(np.abs(test_counts - 0.2 * counts) <= 1)

    # the two sets partition the data set: together they hold every image exactly once
    def rows(x: torch.Tensor) -> Counter[bytes]:
        return Counter(row.tobytes() for row in x[:, 0].flatten(1).numpy())

    assert rows(torch.cat([split.x_train, split.x_test])) == rows(upsample(digits.images, 32))
    assert len(split.y_train) + len(split.y_test) == len(digits.target)


def test_same_arguments_give_the_same_split_and_seed_changes_it() -> None:
    a, b = load_digits_split(), load_digits_split()
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)
    c = load_digits_split(seed=1)
    assert not torch.equal(a.y_test, c.y_test)
    d = load_digits_split(64, test_fraction=0.5)
    assert d.x_test.shape[1:] == (3, 64, 64) and len(d.y_test) in (898, 899)


def test_upsample_is_bilinear_of_the_scaled_image() -> None:
    images = np.random.default_rng(0).integers(0, 17, size=(5, 8, 8))
    got = upsample(images, 32)
    want = F.interpolate(
        torch.tensor(images / 16.0, dtype=torch.float32)[:, None],
        size=(32, 32),
        mode="bilinear",
        align_corners=False,
    )
    torch.testing.assert_close(got[:, :1], want, rtol=0, atol=0)


def test_describe_lists_what_the_split_depends_on(split: DigitsSplit) -> None:
    d = split.describe()
    assert d["image_size"] == 32 and d["test_fraction"] == 0.2 and d["seed"] == 0
    assert d["n_train"] == 1437 and d["n_test"] == 360 and "scikit-learn" in d


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"image_size": 48}, ValueError, "image_size must be a multiple of 32.*48"),
        ({"image_size": 0}, ValueError, "image_size must be >= 1"),
        ({"test_fraction": 1.0}, ValueError, r"test_fraction must be in \(0, 1\), got 1.0"),
        ({"test_fraction": "0.2"}, TypeError, "test_fraction must be a float"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        load_digits_split(**kwargs)

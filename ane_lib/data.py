"""Small data sets that ship with their packages, ready for the library's models.

:func:`load_digits_split`: scikit-learn's handwritten digits (1,797 grey 8x8 images of the digits
0-9, shipped inside scikit-learn, nothing downloaded), split once into a stratified train and
test set and upsampled to an image size MOAT accepts (a multiple of its output stride, 32).

Needs scikit-learn (the ``train`` extra: ``pip install 'ane-lib[train]'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ane_lib._checks import check_nonnegative_int, check_positive_int
from ane_lib._optional import import_optional

__all__ = ["DigitsSplit", "load_digits_split", "upsample"]

#: The digits' pixel values are integers from 0 (white) to 16 (black).
DIGITS_MAX_VALUE = 16.0


@dataclass(frozen=True, eq=False)
class DigitsSplit:
    """A fixed train/test split of the digits, as tensors ready for a model.

    Attributes:
        x_train: ``(N_train, 3, H, W)`` float32 in ``[0, 1]`` (the grey image in all 3 channels).
        y_train: ``(N_train,)`` int64 labels 0-9.
        x_test, y_test: the same for the test set.
        image_size: ``H = W``; test_fraction, seed: how the split was drawn (see
        :func:`load_digits_split`).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    image_size: int
    test_fraction: float
    seed: int

    @property
    def classes(self) -> tuple[int, ...]:
        """The labels, ``(0, 1, ..., 9)``."""
        return tuple(range(10))

    def describe(self) -> dict[str, Any]:
        """What the split depends on (a cache key part): its settings and the data's size."""
        return {
            "data": "sklearn.datasets.load_digits",
            "scikit-learn": _import_sklearn().__version__,
            "image_size": self.image_size,
            "test_fraction": self.test_fraction,
            "seed": self.seed,
            "n_train": len(self.y_train),
            "n_test": len(self.y_test),
        }


def _import_sklearn() -> Any:
    """scikit-learn, with its ``datasets`` and ``model_selection`` submodules loaded."""
    for module in ("sklearn.datasets", "sklearn.model_selection"):
        import_optional(module, extra="train", needed_for="the digits data set")
    return import_optional("sklearn", extra="train", needed_for="the digits data set")


def upsample(images: np.ndarray, image_size: int) -> torch.Tensor:
    """Grey images ``(N, h, w)`` in ``[0, 16]`` -> ``(N, 3, image_size, image_size)`` in [0, 1].

    Bilinear interpolation (``align_corners=False``), the grey value copied to the three
    channels that MOAT's stem expects.
    """
    x = torch.from_numpy(np.asarray(images, dtype=np.float32) / DIGITS_MAX_VALUE)[:, None]
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return x.expand(-1, 3, -1, -1).contiguous()


def load_digits_split(
    image_size: int = 32, *, test_fraction: float = 0.2, seed: int = 0
) -> DigitsSplit:
    """scikit-learn's digits, split into train and test sets and upsampled for MOAT.

    Args:
        image_size: side of the upsampled images, a multiple of 32 (MOAT's output stride).
        test_fraction: share of the 1,797 images held out for testing, in (0, 1); the split is
            stratified (each digit keeps its share in both sets). 0.2 gives 360 test images.
        seed: seed of the split (scikit-learn's ``train_test_split(random_state=seed)``).

    Returns:
        A :class:`DigitsSplit`; the same arguments give the same split on every run.
    """
    check_positive_int("image_size", image_size)
    if image_size % 32:
        raise ValueError(
            f"image_size must be a multiple of 32 (MOAT's output stride), got {image_size}"
        )
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)):
        raise TypeError(f"test_fraction must be a float in (0, 1), got {test_fraction!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    check_nonnegative_int("seed", seed)
    sklearn = _import_sklearn()
    digits = sklearn.datasets.load_digits()
    images, labels = digits.images, digits.target
    train_images, test_images, train_labels, test_labels = sklearn.model_selection.train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed
    )
    return DigitsSplit(
        x_train=upsample(train_images, image_size),
        y_train=torch.as_tensor(train_labels, dtype=torch.int64),
        x_test=upsample(test_images, image_size),
        y_test=torch.as_tensor(test_labels, dtype=torch.int64),
        image_size=image_size,
        test_fraction=float(test_fraction),
        seed=seed,
    )

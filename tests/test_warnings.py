"""quiet_library_warnings: the one filter around third-party calls, restored on exit."""

from __future__ import annotations

import warnings

import pytest

from ane_lib._warnings import quiet_library_warnings


def _warn_from(module: str, category: type[Warning]) -> None:
    """Emit ``category`` as if raised in ``module`` (what the ``module=`` filter looks at)."""
    warnings.warn_explicit("chatter", category, "file.py", 1, module=module)


def test_deprecations_are_hidden_inside_the_block_only() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_library_warnings():
            warnings.warn("old", DeprecationWarning, stacklevel=1)
            warnings.warn("soon", FutureWarning, stacklevel=1)
            warnings.warn("yours", UserWarning, stacklevel=1)
        warnings.warn("after", DeprecationWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["yours", "after"]


def test_named_packages_are_silenced_whatever_the_category() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_library_warnings("coremltools"):
            _warn_from("coremltools.converters", UserWarning)
            _warn_from("coremltools", RuntimeWarning)
            _warn_from("coremltools_extra", UserWarning)  # another package: kept
    assert [w.category for w in caught] == [UserWarning]


def test_the_users_filters_come_back() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        with quiet_library_warnings():
            warnings.warn("hidden", DeprecationWarning, stacklevel=1)
        with pytest.raises(DeprecationWarning):
            warnings.warn("raised again", DeprecationWarning, stacklevel=1)

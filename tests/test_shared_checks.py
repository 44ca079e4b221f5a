"""The argument checks both stacks share: choices, compression settings, destinations."""

from __future__ import annotations

from pathlib import Path

import pytest

from ane_lib._checks import check_choice
from ane_lib._compression import GRANULARITIES, NBITS, check_weight_settings
from ane_lib._files import check_destination


def test_a_bool_is_not_a_number_among_choices() -> None:
    check_choice("nbits", 1, (1, 2))
    with pytest.raises(ValueError, match=r"nbits must be one of \[1, 2\], got True"):
        check_choice("nbits", True, (1, 2))
    check_choice("flag", True, (True, False))  # where bools are the choices, they are fine


@pytest.mark.parametrize("method", sorted(NBITS))
def test_weight_settings_fill_in_the_defaults(method: str) -> None:
    nbits = None if method == "linear" else 4
    got = check_weight_settings(method, nbits, None, 32, 32, 0)
    assert got == (8 if method == "linear" else 4, GRANULARITIES[method][0])


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("round", 8, None, 32, 32, 2048), ValueError, "method must be one of"),
        (("palettize", None, None, 32, 32, 2048), ValueError, "nbits is required"),
        (("palettize", True, None, 32, 32, 2048), TypeError, "nbits must be an int, got True"),
        (("linear", 6, None, 32, 32, 2048), ValueError, r"nbits \(method='linear'\)"),
        (("linear", 8, "per_grouped_channel", 32, 32, 2048), ValueError, "granularity"),
        (("palettize", 4, None, 0, 32, 2048), ValueError, "group_size"),
        (("linear", 8, None, 32, 32, -1), ValueError, "weight_threshold"),
    ],
)
def test_weight_settings_name_what_is_wrong(
    args: tuple, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        check_weight_settings(*args)


def test_a_destination_is_never_its_own_source(tmp_path: Path) -> None:
    source = tmp_path / "model.mlpackage"
    source.mkdir()
    with pytest.raises(ValueError, match="dest must differ from src"):
        check_destination(tmp_path / "." / "model.mlpackage", True, ".mlpackage", source=source)
    other = check_destination(tmp_path / "other.mlpackage", False, ".mlpackage", source=source)
    assert other == tmp_path / "other.mlpackage"

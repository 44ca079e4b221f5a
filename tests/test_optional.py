"""Optional dependencies are imported where used, with an error that names the extra."""

import pytest

from ane_lib._optional import import_optional


def test_a_present_module_is_returned() -> None:
    assert import_optional("json", extra="hf", needed_for="a test").dumps([1]) == "[1]"


def test_a_missing_module_names_the_extra_and_what_needs_it() -> None:
    with pytest.raises(ImportError, match=r"the frobnicator needs no_such_pkg.*ane-lib\[hf\]"):
        import_optional("no_such_pkg.sub", extra="hf", needed_for="the frobnicator")

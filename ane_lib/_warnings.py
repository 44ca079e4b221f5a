"""The one warnings filter the library puts around third-party calls.

torch.export and coremltools emit ``FutureWarning`` and ``DeprecationWarning`` about their own
internals (coremltools also warns that it was tested with an older torch). They say nothing a
user of ``ane_lib`` can act on, so :func:`quiet_library_warnings` hides them inside the block
it guards, and nowhere else: the user's own warnings filters are restored on exit.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator

__all__ = ["quiet_library_warnings"]


@contextlib.contextmanager
def quiet_library_warnings(*modules: str) -> Iterator[None]:
    """Ignore ``FutureWarning`` and ``DeprecationWarning`` inside the block.

    Args:
        modules: top-level package names (e.g. ``"coremltools"``) whose every warning is
            ignored too, whatever its category.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        for module in modules:
            warnings.filterwarnings("ignore", module=rf"{re.escape(module)}(\.|$)")
        yield

"""Optional dependencies: imported where they are used, with an error that names the extra.

``ane_lib`` needs only torch and numpy. coremltools (``[coreml]``), transformers (``[hf]``),
scikit-learn and tqdm (``[train]``) are extras: a function that needs one imports it through
:func:`import_optional`, so a missing package is an ImportError that says what to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["import_optional"]


def import_optional(module: str, *, extra: str, needed_for: str) -> ModuleType:
    """``importlib.import_module(module)``, or ImportError naming ``extra``.

    Args:
        module: the module to import, e.g. ``"sklearn.datasets"``.
        extra: the ``ane-lib`` extra that installs it, e.g. ``"train"``.
        needed_for: what needs it, for the message, e.g. ``"the digits data set"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = module.partition(".")[0]
        raise ImportError(
            f"{needed_for} needs {package}; install it with `pip install 'ane-lib[{extra}]'`"
        ) from err

"""The one warnings filter the library puts around third-party calls.

torch.export and coremltools emit ``FutureWarning`` and ``DeprecationWarning`` about their own
internals (coremltools also warns that it was tested with an older torch). They say nothing a
user of ``ane_lib`` can act on, so :func:`quiet_library_warnings` hides them inside the block
it guards, and nowhere else: the user's own warnings filters are restored on exit.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator

__all__ = [
    "IMPORT_NOISE_LOGGERS",
    "filter_import_noise",
    "quiet_library_warnings",
    "quiet_loggers",
]

#: Loggers that warn on import about nothing a user can act on: torchao (installed with
#: coreai-opt, and imported by coremltools when present) logs "Failed to load ..." for its CUDA
#: kernels on a CPU machine, and registers an Enum with torch's pytree, which logs a deprecation.
IMPORT_NOISE_LOGGERS: tuple[str, ...] = ("torchao", "torch.utils._pytree")


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


@contextlib.contextmanager
def quiet_loggers(*names: str, level: int = logging.ERROR) -> Iterator[None]:
    """Raise the loggers ``names`` to at least ``level`` inside the block, then restore them."""
    loggers = [logging.getLogger(name) for name in names]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(level, logger.level))
    try:
        yield
    finally:
        for logger, old in zip(loggers, previous, strict=True):
            logger.setLevel(old)


class _ImportNoise(logging.Filter):
    """Drops the two import-time records of :data:`IMPORT_NOISE_LOGGERS`, and only those."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cuda_kernel = message.startswith("Failed to load") and "torchao" in message
        enum_pytree = "is an Enum subclass and is now natively supported" in message
        return not (cuda_kernel or enum_pytree)


_NOISE_FILTER = _ImportNoise()


def filter_import_noise() -> None:
    """Attach a filter to :data:`IMPORT_NOISE_LOGGERS` that drops their import-time noise.

    torchao may be imported by any package that probes for it (coremltools, transformers), not
    only inside :func:`quiet_loggers`; the filter removes exactly those two messages wherever
    the import happens, and leaves every other record of these loggers alone. Idempotent.
    """
    for name in IMPORT_NOISE_LOGGERS:
        logger = logging.getLogger(name)
        if _NOISE_FILTER not in logger.filters:
            logger.addFilter(_NOISE_FILTER)

"""Import Apple's Core AI packages, keep their noise out of the way, call their async API.

- :func:`import_coreai` imports ``coreai`` (coreai-core: IR, asset, runtime) and
  ``coreai_torch`` (the converter), or raises :class:`CoreAIUnavailableError` saying what is
  missing, why (no wheel for this platform) and what to install.
- :func:`quiet` silences what these packages print on import and at every call, none of which
  is the user's business: coreai-torch's "only validated with torch<=2.13.0; found torch
  2.13.0+cpu" (it compares a version with a local label, ``+cpu``, against a plain one), the
  converter's banner, torchao's "Failed to load ..." lines for CUDA kernels (coreai-opt imports
  torchao) and the runtime's ``ODIE [default]: Loading function 'main'`` written by its C++
  code straight to file descriptor 2. What they print is kept and added to an exception's notes
  when the block fails, so nothing that explains an error is lost.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from types import ModuleType

from ane_lib._warnings import IMPORT_NOISE_LOGGERS, quiet_library_warnings, quiet_loggers
from ane_lib.coreai._platform import unsupported_reason

__all__ = [
    "CoreAIUnavailableError",
    "available",
    "import_coreai",
    "import_coreai_opt",
    "quiet",
    "unavailable_reason",
]

_INSTALL_HINT = "install it with `pip install 'ane-lib[coreai]'`"


class CoreAIUnavailableError(ImportError):
    """Apple's Core AI packages are not installed here (or have no wheel for this platform)."""


def unavailable_reason() -> str | None:
    """None when coreai-core and coreai-torch import, else one sentence saying why not."""
    try:
        import_coreai()
    except CoreAIUnavailableError as err:
        return str(err)
    return None


def available() -> bool:
    """True when :func:`import_coreai` succeeds."""
    return unavailable_reason() is None


def _import(module: str, distribution: str) -> ModuleType:
    try:
        with quiet():
            return importlib.import_module(module)
    except ImportError as err:
        reason = unsupported_reason()
        why = f" ({reason})" if reason else ""
        raise CoreAIUnavailableError(
            f"ane_lib.coreai needs {distribution}, which is not installed{why}; "
            f"{_INSTALL_HINT}. Import error: {err}"
        ) from err


def import_coreai() -> ModuleType:
    """Import coreai-core's ``coreai`` (with ``coreai.authoring`` and ``coreai.runtime``) and
    coreai-torch; return ``coreai``. Raises :class:`CoreAIUnavailableError` when missing."""
    coreai = _import("coreai", "coreai-core")
    _import("coreai.authoring", "coreai-core")
    _import("coreai.runtime", "coreai-core")
    _import("coreai_torch", "coreai-torch")
    return coreai


def import_coreai_opt() -> ModuleType:
    """Import coreai-opt (compression and 16-bit casting); :class:`CoreAIUnavailableError`
    when missing."""
    return _import("coreai_opt", "coreai-opt")


@contextlib.contextmanager
def _fd_captured(fd: int) -> Iterator[io.StringIO]:
    """Redirect file descriptor ``fd`` to a temporary file inside the block; yield its text
    (filled in when the block ends). Output of C/C++ code bypasses ``sys.stderr``."""
    text = io.StringIO()
    try:
        saved = os.dup(fd)
    except OSError:  # no such descriptor (an embedded interpreter): nothing to capture
        yield text
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(sink.fileno(), fd)
        try:
            yield text
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            text.write(sink.read().decode(errors="replace"))


@contextlib.contextmanager
def _rich_captured(sink: io.StringIO) -> Iterator[None]:
    """Point rich's global console (the converter's banner and progress bars) at ``sink``.

    In Jupyter, rich writes through IPython's display rather than ``sys.stdout``, so
    redirecting stdout alone would not catch it.
    """
    try:
        import rich
        from rich.console import Console
    except ImportError:  # coreai-torch not installed: nothing to capture
        yield
        return
    saved = getattr(rich, "_console", None)
    rich._console = Console(file=sink, force_jupyter=False, force_terminal=False)
    try:
        yield
    finally:
        rich._console = saved


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Core AI's and its dependencies' messages (see the module docstring).

    Python warnings raised inside are filtered for these packages' known messages only; what
    was printed is attached to an exception that leaves the block (``add_note``).
    """
    out, err = io.StringIO(), io.StringIO()
    try:
        with (
            warnings.catch_warnings(),
            _fd_captured(2) as native,
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            _rich_captured(out),
            quiet_loggers(*IMPORT_NOISE_LOGGERS),
            quiet_library_warnings("coreai_torch", "coreai", "coreai_opt", "torchao"),
        ):
            warnings.filterwarnings("ignore", message="coreai-torch has only been validated")
            warnings.filterwarnings("ignore", message=".*is an Enum subclass.*")
            yield
    except BaseException as error:
        printed = "\n".join(s.getvalue().strip() for s in (out, err, native) if s.getvalue())
        if printed and isinstance(error, Exception):
            error.add_note(f"Core AI printed:\n{printed[-4000:]}")
        raise

"""Writing a model folder atomically: never half-written, never overwritten unasked.

Exported models are folders (a Core ML ``.mlpackage``, a Core AI ``.aimodel``). Both exports
build theirs in a hidden scratch folder next to the destination and rename it into place once
it is complete; an existing destination is replaced only when the caller asked for it, and only
after the new folder is complete. :func:`staged_folder` is that protocol as a context manager;
:func:`check_destination` and :func:`install` are its two halves.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["check_destination", "install", "staged_folder"]


def check_destination(
    path: str | os.PathLike[str], overwrite: bool, suffix: str, *, source: Path | None = None
) -> Path:
    """``path`` as a Path, after checking its suffix, its parent folder and ``overwrite``, and
    that it is not ``source`` (a model folder that a copy of it is written from).

    Raises ValueError (wrong suffix, missing parent folder, ``path`` is ``source``) or
    FileExistsError (``path`` exists and ``overwrite`` is false).
    """
    dest = Path(path)
    if source is not None and dest.resolve() == Path(source).resolve():
        raise ValueError(f"dest must differ from src, both are {str(source)!r}")
    if dest.suffix != suffix:
        raise ValueError(f"path must end in {suffix}, got {str(dest)!r}")
    if not dest.parent.is_dir():
        raise ValueError(f"path {str(dest)!r}: parent folder {str(dest.parent)!r} does not exist")
    if (dest.exists() or dest.is_symlink()) and not overwrite:
        raise FileExistsError(
            f"path {str(dest)!r} already exists; pass overwrite=True (--overwrite) to replace it"
        )
    return dest


def install(built: Path, dest: Path, scratch: Path) -> None:
    """Move the complete folder ``built`` to ``dest``; an old ``dest`` is removed only after."""
    old = scratch / "previous"
    had_old = dest.exists() or dest.is_symlink()
    if had_old:
        os.replace(dest, old)
    try:
        os.replace(built, dest)
    except BaseException:
        if had_old:
            os.replace(old, dest)
        raise


@contextlib.contextmanager
def staged_folder(dest: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a path to build ``dest`` at (same name, in a hidden scratch folder beside it).

    When the block ends normally, the destination is checked again (someone may have created it
    meanwhile) and the built folder is renamed into place; the scratch folder is always removed,
    so a failure leaves nothing behind and an existing ``dest`` untouched.
    """
    scratch = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        built = scratch / dest.name
        yield built
        check_destination(dest, overwrite, dest.suffix)
        install(built, dest, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

"""A small on-disk cache for expensive, deterministic results (trained weights).

An entry is keyed on a JSON-able description of everything the result depends on (settings,
seeds, data, library and torch versions): the key is the SHA-256 of that description, and the
description is stored in the entry and compared on load, so an entry is only ever reused for the
exact inputs that made it.

The folder is ``$ANE_LIB_CACHE_DIR`` when that is set, else the user's cache folder
(``~/.cache/ane_lib`` on Linux, or ``$XDG_CACHE_HOME/ane_lib``; ``~/Library/Caches/ane_lib`` on
macOS; ``%LOCALAPPDATA%\\ane_lib\\Cache`` on Windows). Entries are written to a temporary file
and renamed into place, so a reader never sees half an entry, and two processes writing the same
entry both leave a complete one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["CACHE_ENV", "cache_dir", "cache_key", "load_entry", "save_entry"]

#: Environment variable naming the cache folder.
CACHE_ENV = "ANE_LIB_CACHE_DIR"


def cache_dir() -> Path:
    """The cache folder (not created here): ``$ANE_LIB_CACHE_DIR`` or the user's cache folder."""
    configured = os.environ.get(CACHE_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "ane_lib"
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / "ane_lib" / "Cache"
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(home / ".cache")
    return Path(base) / "ane_lib"


def _canonical(parts: Mapping[str, Any]) -> str:
    try:
        return json.dumps(parts, sort_keys=True, separators=(",", ":"))
    except TypeError as err:
        raise TypeError(
            f"parts must be JSON-serialisable (str, int, float, lists, dicts): {err}"
        ) from err


def cache_key(parts: Mapping[str, Any]) -> str:
    """SHA-256 (hex, 32 characters) of the canonical JSON of ``parts``."""
    return hashlib.sha256(_canonical(parts).encode()).hexdigest()[:32]


def _entry_path(kind: str, parts: Mapping[str, Any]) -> Path:
    if not kind.isidentifier():
        raise ValueError(f"kind must be an identifier-like folder name, got {kind!r}")
    return cache_dir() / kind / f"{cache_key(parts)}.pt"


def load_entry(kind: str, parts: Mapping[str, Any]) -> dict[str, Any] | None:
    """The payload saved under ``parts`` (a dict of tensors, numbers, lists), or None.

    An entry that cannot be read, or whose stored description differs from ``parts``, counts
    as missing.
    """
    path = _entry_path(kind, parts)
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a foreign or damaged file: recompute and replace it
        return None
    if not isinstance(entry, dict) or entry.get("parts") != _canonical(parts):
        return None
    payload = entry.get("payload")
    return payload if isinstance(payload, dict) else None


def save_entry(kind: str, parts: Mapping[str, Any], payload: Mapping[str, Any]) -> Path:
    """Save ``payload`` under ``parts`` atomically (temporary file, then rename); its path."""
    path = _entry_path(kind, parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            torch.save({"parts": _canonical(parts), "payload": dict(payload)}, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path

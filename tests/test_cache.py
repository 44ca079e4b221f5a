"""ane_lib._cache: where entries live, keys, atomic writes, and what counts as a miss."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from ane_lib import _cache


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(_cache.CACHE_ENV, str(tmp_path / "here"))
    assert _cache.cache_dir() == tmp_path / "here"
    monkeypatch.setenv(_cache.CACHE_ENV, "")
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert _cache.cache_dir() == tmp_path / "xdg" / "ane_lib"
        monkeypatch.delenv("XDG_CACHE_HOME")
        assert _cache.cache_dir() == Path.home() / ".cache" / "ane_lib"


def test_key_is_canonical_and_changes_with_any_part() -> None:
    a = {"x": 1, "y": [1, 2], "z": {"b": 2, "a": 1}}
    assert _cache.cache_key(a) == _cache.cache_key({"z": {"a": 1, "b": 2}, "y": [1, 2], "x": 1})
    assert _cache.cache_key(a) != _cache.cache_key(a | {"x": 2})
    assert len(_cache.cache_key(a)) == 32
    with pytest.raises(TypeError, match="parts must be JSON-serialisable"):
        _cache.cache_key({"x": object()})


def test_round_trip_and_misses(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(_cache.CACHE_ENV, str(tmp_path))
    parts = {"model": "m", "seed": 0}
    assert _cache.load_entry("kind", parts) is None
    payload = {"state_dict": {"w": torch.arange(3.0)}, "history": [{"a": 1.0}], "seconds": 2.5}
    path = _cache.save_entry("kind", parts, payload)
    assert path.parent == tmp_path / "kind" and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    loaded = _cache.load_entry("kind", parts)
    assert loaded is not None and torch.equal(loaded["state_dict"]["w"], torch.arange(3.0))
    assert loaded["history"] == [{"a": 1.0}] and loaded["seconds"] == 2.5
    assert _cache.load_entry("kind", parts | {"seed": 1}) is None  # other parts: a miss
    path.write_bytes(b"not a torch file")  # damaged: a miss, not an error
    assert _cache.load_entry("kind", parts) is None


def test_a_failed_write_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(_cache.CACHE_ENV, str(tmp_path))

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        _cache.save_entry("kind", {"a": 1}, {"x": 1})
    assert list((tmp_path / "kind").iterdir()) == []


def test_kind_must_be_a_plain_name() -> None:
    with pytest.raises(ValueError, match="kind must be an identifier-like folder name"):
        _cache.load_entry("../x", {})

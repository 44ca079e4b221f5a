"""Moved to :mod:`ane_lib.signature` (shared by the Core ML and Core AI exports); the names
stay importable from here."""

from ane_lib.signature import *  # noqa: F403
from ane_lib.signature import __all__  # noqa: F401

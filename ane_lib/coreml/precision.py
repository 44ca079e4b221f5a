"""Moved to :mod:`ane_lib.precision` (shared by the Core ML and Core AI exports); the names
stay importable from here."""

from ane_lib.precision import *  # noqa: F403
from ane_lib.precision import __all__  # noqa: F401

"""Where Apple's Core AI Python wheels exist, and why a machine has none.

``coreai-core`` (1.0.0b3, the runtime and the IR that ``coreai-torch`` and ``coreai-opt`` need)
is published as binary wheels only: CPython 3.11 on Linux x86_64 with glibc 2.34 or newer, and
CPython 3.11 on macOS 26 or newer on Apple silicon. Elsewhere ``pip`` finds no distribution, so
the ``[coreai]`` extra of ``ane-lib`` carries environment markers and the Makefile asks this
module before it installs the extra.

This file imports nothing from ``ane_lib`` so that the Makefile can run it before ``ane_lib`` is
installed: ``python ane_lib/coreai/_platform.py`` exits 0 where the wheels exist and otherwise
prints why not and exits 1.
"""

from __future__ import annotations

import platform
import sys

__all__ = ["COREAI_CORE_VERSION", "WHEEL_PLATFORMS", "unsupported_reason"]

#: The pinned pre-release of coreai-core (see constraints.txt).
COREAI_CORE_VERSION = "1.0.0b3"
#: The platforms that have a coreai-core wheel, in words.
WHEEL_PLATFORMS = (
    "CPython 3.11 on Linux x86_64 with glibc >= 2.34, or CPython 3.11 on macOS >= 26 on "
    "Apple silicon"
)
_MIN_GLIBC = (2, 34)
_MIN_MACOS = 26


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def unsupported_reason() -> str | None:
    """None where a coreai-core wheel exists for this interpreter, else why there is none."""
    where = f"this is CPython {platform.python_version()} on {sys.platform} {platform.machine()}"
    if sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11):
        return f"coreai-core {COREAI_CORE_VERSION} has wheels for {WHEEL_PLATFORMS}; {where}"
    machine = platform.machine().lower()
    if sys.platform.startswith("linux"):
        libc, version = platform.libc_ver()
        if machine not in ("x86_64", "amd64"):
            return f"coreai-core has no Linux wheel for {machine}; {where}"
        if libc != "glibc" or _version_tuple(version) < _MIN_GLIBC:
            found = f"{libc or 'unknown libc'} {version}".strip()
            return f"coreai-core's Linux wheel needs glibc >= 2.34; this machine has {found}"
        return None
    if sys.platform == "darwin":
        release = _version_tuple(platform.mac_ver()[0])
        if machine != "arm64":
            return f"coreai-core's macOS wheel is for Apple silicon (arm64); {where}"
        if not release or release[0] < _MIN_MACOS:
            return f"coreai-core's macOS wheel needs macOS >= {_MIN_MACOS}; this is {release}"
        return None
    return f"coreai-core {COREAI_CORE_VERSION} has wheels for {WHEEL_PLATFORMS}; {where}"


if __name__ == "__main__":  # used by the Makefile: exit 0 where the wheels exist
    reason = unsupported_reason()
    if reason is not None:
        print(f"note: not installing the [coreai] extra: {reason}.")
        print("      ane_lib.coreai's tests and chapter 10's Core AI cells will say so and skip.")
    sys.exit(0 if reason is None else 1)

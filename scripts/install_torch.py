"""Install the CPU build of torch pinned in constraints.txt, and never a CUDA build.

Run by the Makefile with the virtualenv's Python, before the project install::

    .venv/bin/python scripts/install_torch.py [--index-url URL]

On Linux, PyPI's torch wheels are CUDA builds that pull several GB of nvidia-* packages. The
CPU build carries a ``+cpu`` local version label and lives on the PyTorch CPU index (or in a
pip find-links directory, as on the machines this book is built on). So, on Linux, the wheel
pip would pick is looked at first (``pip install --dry-run --report``) and the install is
refused unless it is a ``+cpu`` build. macOS and Windows wheels on PyPI are CPU builds already.

torch is installed with ``--no-deps``: its dependencies come with the project install, pinned
by constraints.txt, from the ordinary index.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

CPU_INDEX_HINT = "https://download.pytorch.org/whl/cpu"


def pinned_torch(constraints: Path) -> str:
    """The version pinned as ``torch==X`` in ``constraints``."""
    for line in constraints.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"\s*torch\s*==\s*([^\s;#]+)\s*(#.*)?", line)
        if match:
            return match.group(1)
    raise ValueError(f"constraints={str(constraints)!r} has no 'torch==<version>' line")


def installed_torch() -> str | None:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def is_acceptable(version: str, wanted: str, platform: str) -> bool:
    """Is ``version`` (e.g. ``2.13.0+cpu``) the build we want on ``platform``?"""
    public, _, local = version.partition("+")
    if public != wanted:
        return False
    return platform != "linux" or local == "cpu"


def pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", *args]


def candidate(spec: str, index_args: list[str]) -> tuple[str, str]:
    """Version and URL of the wheel pip would install for ``spec`` (nothing is installed)."""
    out = subprocess.run(
        pip("install", "--dry-run", "--ignore-installed", "--no-deps", "--quiet", "--report", "-")
        + index_args
        + [spec],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    report = json.loads(out)
    (item,) = report["install"]
    return item["metadata"]["version"], item["download_info"]["url"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--constraints", type=Path, default=Path("constraints.txt"))
    parser.add_argument(
        "--index-url",
        default="",
        help=f"package index holding the CPU wheel, e.g. {CPU_INDEX_HINT} (default: pip's own)",
    )
    args = parser.parse_args(argv)

    wanted = pinned_torch(args.constraints)
    current = installed_torch()
    if current is not None and is_acceptable(current, wanted, sys.platform):
        print(f"torch {current} is installed")
        return 0

    index_args = ["--index-url", args.index_url] if args.index_url else []
    spec = f"torch=={wanted}"
    version, url = candidate(spec, index_args)
    if not is_acceptable(version, wanted, sys.platform):
        print(
            f"error: pip would install torch {version} from {url},\n"
            "which is not the CPU build (on Linux that is the CUDA build, several GB).\n"
            f"Point pip at the CPU wheels and rerun, e.g.\n"
            f"    make book PIP_TORCH_INDEX={CPU_INDEX_HINT}",
            file=sys.stderr,
        )
        return 1
    print(f"installing torch {version} from {url}")
    subprocess.run(pip("install", "--no-deps", *index_args, spec), check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Compress the weights of a saved Core AI program with coreai-opt, atomically.

coreai-opt 0.4.0 compresses a converted program in place of its constants
(``coreai_opt.coreai_utils``), as ``coremltools.optimize.coreml`` does for a Core ML package:

- ``method="linear"``: each weight becomes ``nbits``-bit integers and a scale
  (``quantize_weights``, symmetric; per output channel by default);
- ``method="palettize"``: each weight becomes ``nbits``-bit indices into a table of
  ``2**nbits`` values found by k-means (``palettize_weights``; one table per weight by default,
  ``"per_grouped_channel"`` gives every ``group_size`` output channels their own).

The arguments mirror :func:`ane_lib.coreml.compress` (weights-only methods), so the two stacks'
compressions can be compared setting for setting. Weights of at most ``weight_threshold`` values
(biases, norm scales) stay as they are. The compressed program is saved in a scratch folder and
renamed into place; the source program's export metadata and module paths are carried over,
with what was done recorded under ``compression``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from ane_lib._compression import (
    COMPRESSION_METHODS,
    GRANULARITIES,
    NBITS,
    check_weight_settings,
)
from ane_lib._files import check_destination, staged_folder
from ane_lib.coreai._sdk import import_coreai, import_coreai_opt, quiet
from ane_lib.coreai.export import (
    MODULE_PATHS_FILE,
    check_asset_path,
    read_export_metadata,
    record_metadata,
)

__all__ = ["COMPRESSION_METHODS", "GRANULARITIES", "NBITS", "asset_bytes", "compress"]


def asset_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes of all files in a ``.aimodel`` folder (what an app would ship)."""
    folder = check_asset_path(path)
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _compressed_program(program: Any, settings: dict[str, Any]) -> Any:
    from coreai_opt.coreai_utils import (
        CompressionGranularity,
        DType,
        palettize_weights,
        quantize_weights,
    )

    granularity = CompressionGranularity[settings["granularity"].upper()]
    threshold = settings["weight_threshold"]
    if settings["method"] == "linear":
        return quantize_weights(
            program,
            DType.INT8 if settings["nbits"] == 8 else DType.INT4,
            granularity=granularity,
            block_size=settings["block_size"],
            weight_num_threshold=threshold,
        )
    return palettize_weights(
        program,
        None,
        n_bits=settings["nbits"],
        granularity=granularity,
        group_size=settings["group_size"],
        weight_num_threshold=threshold,
        num_kmeans_workers=1,
    )


def compress(
    src: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    method: str = "linear",
    *,
    nbits: int | None = None,
    granularity: str | None = None,
    group_size: int = 32,
    block_size: int = 32,
    weight_threshold: int = 2048,
    overwrite: bool = False,
) -> Path:
    """Write a compressed copy of the Core AI program ``src`` to ``dest`` (a new ``.aimodel``).

    Args:
        src: a saved program (e.g. from :func:`ane_lib.coreai.export`); not modified.
        dest: where to write the compressed program; must differ from ``src``; refused if it
            exists unless ``overwrite=True``.
        method: ``"linear"`` or ``"palettize"`` (see the module docstring).
        nbits: 8 (default) or 4 for ``"linear"``; 1, 2, 3, 4, 6 or 8 for ``"palettize"``
            (required there).
        granularity: ``"linear"``: ``"per_channel"`` (default), ``"per_tensor"`` or
            ``"per_block"`` (a scale per ``block_size`` input weights); ``"palettize"``:
            ``"per_tensor"`` (default) or ``"per_grouped_channel"``.
        weight_threshold: weights of at most this many values are left uncompressed (default
            2048, as coremltools' default).

    Returns ``dest``. Raises ValueError/TypeError on bad arguments and FileExistsError if
    ``dest`` exists and ``overwrite`` is false; nothing is written then.
    """
    source = check_asset_path(src)
    nbits, granularity = check_weight_settings(
        method, nbits, granularity, group_size, block_size, weight_threshold
    )
    target = check_destination(dest, overwrite, ".aimodel", source=source)
    settings = {
        "method": method,
        "nbits": nbits,
        "granularity": granularity,
        "group_size": group_size,
        "block_size": block_size,
        "weight_threshold": weight_threshold,
        "tool": "coreai-opt",
    }
    import_coreai()
    import_coreai_opt()
    from coreai.authoring import AIModelAsset

    recorded = read_export_metadata(source)
    with quiet():
        program = AIModelAsset.load(source).program
        compressed = _compressed_program(program, settings)
    with staged_folder(target, overwrite) as built, quiet():
        asset = compressed.save_asset(built)
        record_metadata(asset, {**recorded, "compression": settings}, None)
        if (source / MODULE_PATHS_FILE).is_file():
            shutil.copy2(source / MODULE_PATHS_FILE, built / MODULE_PATHS_FILE)
    return target

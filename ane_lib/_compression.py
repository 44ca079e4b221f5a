"""The weight-compression settings the Core ML and Core AI ``compress`` share: their methods,
bits and granularities, and one check of them (so the two stacks accept the same arguments)."""

from __future__ import annotations

from ane_lib._checks import check_choice, check_nonnegative_int, check_positive_int

__all__ = ["COMPRESSION_METHODS", "GRANULARITIES", "NBITS", "check_weight_settings"]

COMPRESSION_METHODS: tuple[str, ...] = ("linear", "palettize")
#: Bits per weight each method accepts (coremltools' and coreai-opt's limits agree).
NBITS: dict[str, tuple[int, ...]] = {"linear": (8, 4), "palettize": (1, 2, 3, 4, 6, 8)}
#: Granularities per method; the first is the default.
GRANULARITIES: dict[str, tuple[str, ...]] = {
    "linear": ("per_channel", "per_tensor", "per_block"),
    "palettize": ("per_tensor", "per_grouped_channel"),
}


def check_weight_settings(
    method: str,
    nbits: int | None,
    granularity: str | None,
    group_size: int,
    block_size: int,
    weight_threshold: int,
) -> tuple[int, str]:
    """Check the weight settings of ``compress``; return ``(nbits, granularity)`` with their
    defaults filled in (8 bits for ``"linear"``; the method's first granularity).

    ``nbits`` is required for ``"palettize"``. Raises ValueError or TypeError naming the value.
    """
    check_choice("method", method, COMPRESSION_METHODS)
    if nbits is None:
        if method == "palettize":
            raise ValueError(
                f"nbits is required with method='palettize'; allowed: {list(NBITS[method])}"
            )
        nbits = 8
    if isinstance(nbits, bool) or not isinstance(nbits, int):
        raise TypeError(f"nbits must be an int, got {nbits!r}")
    check_choice(f"nbits (method={method!r})", nbits, NBITS[method])
    granularity = GRANULARITIES[method][0] if granularity is None else granularity
    check_choice(f"granularity (method={method!r})", granularity, GRANULARITIES[method])
    check_positive_int("group_size", group_size)
    check_positive_int("block_size", block_size)
    check_nonnegative_int("weight_threshold", weight_threshold)
    return nbits, granularity

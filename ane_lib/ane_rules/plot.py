"""Figures of a report (needs matplotlib)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ane_lib.ane_rules.graph import Op
from ane_lib.ane_rules.report import Report, default_stage_key

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_padding_by_stage"]


def plot_padding_by_stage(
    rep: Report,
    ax: Axes | None = None,
    *,
    key: Callable[[Op], str] = default_stage_key,
) -> Axes:
    """Bar chart of real versus padded activation bytes per stage (KiB), the ratio on top.

    Stages come from ``key(op)`` (default: the stage of the op's PyTorch module path). Draws
    into ``ax`` (a new figure if None) and returns it.
    """
    import matplotlib.pyplot as plt

    if not isinstance(rep, Report):
        raise TypeError(f"rep must be a Report, got {type(rep).__name__}")
    stages = rep.padding_by_stage(key)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(stages) + 2), 3.6))
    names = list(stages)
    xs = range(len(names))
    real = [stages[s].real_bytes / 1024 for s in names]
    padded = [stages[s].padded_bytes / 1024 for s in names]
    width = 0.4
    ax.bar([x - width / 2 for x in xs], real, width, label="real bytes")
    ax.bar([x + width / 2 for x in xs], padded, width, label="padded to 64-byte rows")
    for x, s, p in zip(xs, names, padded, strict=True):
        ax.annotate(
            f"{stages[s].overhead:.2f}x", (x + width / 2, p), ha="center", va="bottom", fontsize=10
        )
    ax.set_xticks(list(xs), names, rotation=30, ha="right")
    ax.set_ylabel("activation KiB")
    ax.set_title("Activation memory per stage under the 64-byte last-axis rule")
    ax.legend(fontsize=10)
    return ax

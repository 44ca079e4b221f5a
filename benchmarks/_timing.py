"""Timing shared by the benchmark scripts."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def time_calls(
    calls: dict[str, Callable[[], Any]], *, warmup: int, repeats: int
) -> dict[str, list[float]]:
    """Seconds per call of each callable, ``repeats`` times after ``warmup`` calls each.

    The callables take turns call by call, so a change in the machine's load hits all alike.
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return times

"""Classifier output (coremltools ``classify``): the predicted label and the probabilities by
class."""

from __future__ import annotations

from typing import Any

from ane_lib.coreml.ops._registry import OpArgs, register


@register("classify")
def _classify(a: OpArgs) -> tuple[Any, dict[Any, float]]:
    # probabilities: (*, K) with one distribution, classes: K labels (str or int)
    #   -> (label of the largest probability, {label: probability})
    probs = a.get("probabilities").reshape(-1)
    classes = list(a.get("classes"))
    if len(classes) != probs.numel():
        raise a.invalid(f"{len(classes)} classes for {probs.numel()} probabilities")
    best = int(probs.argmax())
    return classes[best], {c: float(p) for c, p in zip(classes, probs.tolist(), strict=True)}

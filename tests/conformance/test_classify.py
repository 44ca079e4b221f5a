"""Conformance of ``classify`` (coremltools ``classify``): a classifier's outputs.

Definition: from ``probabilities`` (one distribution) and the list of ``classes``, the label of
the largest probability and the dictionary of probabilities by label (strings or integers).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from coremltools.converters.mil.mil import mil_list

from ane_lib.coreml import run
from conformance._harness import IOS17, mb, types


@pytest.mark.parametrize("classes", [["cat", "dog", "bird"], [3, 7, 11]])
def test_classify(classes: list[Any]) -> None:
    @mb.program(input_specs=[mb.TensorSpec((1, 3), dtype=types.fp32)], opset_version=IOS17)
    def prog(x: Any) -> Any:
        probs = mb.softmax(x=x, axis=-1)
        # as coremltools' backend adds it: the labels a list constant, integers as int64
        labels = [np.int64(c) if isinstance(c, int) else c for c in classes]
        return mb.classify(probabilities=probs, classes=mb.const(val=mil_list(labels)))

    x = np.array([[0.5, 2.0, -1.0]], np.float32)
    label, table = run(prog, {"x": x}).values()
    p = np.exp(x[0] - x[0].max())
    p /= p.sum()
    assert label == classes[1]
    assert set(table) == set(classes)
    np.testing.assert_allclose([table[c] for c in classes], p, rtol=1e-6)


def test_every_classify_op_is_covered() -> None:
    from ane_lib.coreml.ops import REGISTRY

    assert {n for n, d in REGISTRY.items() if d.family == "classify"} == {"classify"}

"""Conformance of the stateful ops (coremltools ``states``, iOS18): ``read_state``,
``coreml_update_state``.

Definitions: a state is a function input of state type; ``read_state`` copies its value,
``coreml_update_state`` writes a value into it and returns a copy. Core ML starts a state from
``make_state()`` at zeros and keeps it across predictions: coremltools' op test
(``ops/tests/iOS18/test_states.py``, ``test_coreml_update_stress``) expects 10 after ten
increments and 20 after a second prediction with the same state, asserted here with
``run(..., states=...)``, which plays ``MLState``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ane_lib.coreml import run
from conformance._harness import IOS18, mb, types


def _program(shape: tuple[int, ...]) -> Any:
    @mb.program(
        input_specs=[
            mb.StateTensorSpec(shape, dtype=types.fp16),
            mb.TensorSpec(shape, dtype=types.fp16),
        ],
        opset_version=IOS18,
    )
    def prog(cache: Any, step: Any) -> Any:
        value = mb.read_state(input=cache)
        for _ in range(10):
            value = mb.coreml_update_state(state=cache, value=mb.add(x=value, y=step))
        return mb.read_state(input=cache)

    return prog


@pytest.mark.parametrize("shape", [(1,), (2, 3), (4, 5, 6)])
def test_update_state_ten_times_over_two_predictions(shape: tuple[int, ...]) -> None:
    program = _program(shape)
    step = np.ones(shape, np.float16)
    states: dict[str, Any] = {}  # empty: the state starts at zeros
    (first,) = run(program, {"step": step}, states=states).values()
    np.testing.assert_array_equal(first, np.full(shape, 10, np.float16))
    np.testing.assert_array_equal(states["cache"], np.full(shape, 10, np.float16))
    (second,) = run(program, {"step": step}, states=states).values()
    np.testing.assert_array_equal(second, np.full(shape, 20, np.float16))
    assert first.dtype == np.float16


def test_a_given_state_is_used_and_updated() -> None:
    program = _program((2, 2))
    states = {"cache": np.full((2, 2), 0.5, np.float32)}
    (out,) = run(program, {"step": np.full((2, 2), 0.25, np.float32)}, states=states).values()
    np.testing.assert_array_equal(out, np.full((2, 2), 3.0, np.float16))
    np.testing.assert_array_equal(states["cache"], out)
    with pytest.raises(ValueError, match=r"states: unexpected \['other'\]"):
        run(program, {"step": np.zeros((2, 2), np.float16)}, states={"other": np.zeros(2)})
    with pytest.raises(ValueError, match=r"states\['cache'\] has shape \(3,\)"):
        run(program, {"step": np.zeros((2, 2), np.float16)}, states={"cache": np.zeros(3)})


def test_every_state_op_is_covered() -> None:
    from ane_lib.coreml.ops import REGISTRY

    assert {n for n, d in REGISTRY.items() if d.family == "states"} == {
        "read_state",
        "coreml_update_state",
    }

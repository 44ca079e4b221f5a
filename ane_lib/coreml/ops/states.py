"""Stateful ops (coremltools ``states``, iOS18): ``read_state`` and ``coreml_update_state``.

A state is a function input of state type (the KV caches of Apple's transformer patterns).
``run(..., states=...)`` passes their values, as Core ML's ``MLState`` does, and the executor
writes the updated values back into that mapping. A state not given starts as zeros, as
Core ML's ``make_state()`` does (coremltools' state tests expect 10 after ten increments).
"""

from __future__ import annotations

import torch

from ane_lib.coreml.ops._registry import OpArgs, register


@register("read_state")
def _read_state(a: OpArgs) -> torch.Tensor:
    return a.runtime.state(a.var("input")).clone()


@register("coreml_update_state")
def _coreml_update_state(a: OpArgs) -> torch.Tensor:
    # write value into the state, return a copy of it
    value = a.get("value")
    a.runtime.set_state(a.var("state"), value)
    return value.clone()

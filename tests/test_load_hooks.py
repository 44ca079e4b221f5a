"""register_load_hook: torch's eight-argument pre-hook from a (module, state_dict, prefix) one."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest
import torch
from torch import nn

from ane_lib.nn import register_load_hook

CALLS: list[tuple[str, str, list[str]]] = []


def _rename_old_weight(module: nn.Module, state_dict: dict[str, Any], prefix: str) -> None:
    """A checkpoint that called the weight ``old`` loads into ``weight``."""
    CALLS.append((type(module).__name__, prefix, sorted(state_dict)))
    if prefix + "old" in state_dict:
        state_dict[prefix + "weight"] = state_dict.pop(prefix + "old")


def _model() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(2, 3, bias=False), nn.ReLU())
    register_load_hook(model[0], _rename_old_weight)
    return model


def test_the_hook_gets_the_module_its_prefix_and_an_editable_state_dict() -> None:
    CALLS.clear()
    model = _model()
    weight = torch.arange(6.0).reshape(3, 2)
    checkpoint = {"0.old": weight}
    result = model.load_state_dict(checkpoint)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(model[0].weight, weight)
    assert CALLS == [("Linear", "0.", ["0.old"])]
    assert list(checkpoint) == ["0.old"]  # load_state_dict hands the hook its own copy


def test_the_handle_removes_the_hook() -> None:
    model = nn.Linear(2, 3, bias=False)
    handle = register_load_hook(model, _rename_old_weight)
    handle.remove()
    with pytest.raises(RuntimeError, match=r"Missing key.*weight"):
        model.load_state_dict({"old": torch.zeros(3, 2)})


def test_a_model_with_hooks_pickles_and_deep_copies() -> None:
    for clone in (pickle.loads(pickle.dumps(_model())), copy.deepcopy(_model())):
        clone.load_state_dict({"0.old": torch.ones(3, 2)})
        assert torch.equal(clone[0].weight, torch.ones(3, 2))


def test_bad_arguments_name_the_argument() -> None:
    with pytest.raises(TypeError, match=r"module.*Module.*dict"):
        register_load_hook({}, _rename_old_weight)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"hook.*callable.*\b3\b"):
        register_load_hook(nn.Linear(2, 2), 3)  # type: ignore[arg-type]

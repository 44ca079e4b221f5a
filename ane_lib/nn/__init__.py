"""nn.Modules in the form the Apple Neural Engine runs well, and the tools that move weights
between a model's standard form and its ANE form."""

from ane_lib.nn.linear_conv import (
    Conv1x1LoadHooks,
    conv1x1_from_linear,
    linear_from_conv1x1,
    load_linear_state_dict,
    register_linear_to_conv1x1_hook,
)

__all__ = [
    "Conv1x1LoadHooks",
    "conv1x1_from_linear",
    "linear_from_conv1x1",
    "load_linear_state_dict",
    "register_linear_to_conv1x1_hook",
]

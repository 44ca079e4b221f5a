"""Reductions (coremltools ``reduction``): ``reduce_*`` over ``axes`` (all when absent)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ane_lib.coreml.ops._common import norm_axes, norm_axis
from ane_lib.coreml.ops._registry import OpArgs, register

Reducer = Callable[[torch.Tensor, tuple[int, ...], bool], torch.Tensor]


def _prod(x: torch.Tensor, dims: tuple[int, ...], keep: bool) -> torch.Tensor:
    for d in sorted(dims, reverse=True):  # torch.prod reduces one axis at a time
        x = torch.prod(x, dim=d, keepdim=keep)
    return x


def _log_sum_exp(x: torch.Tensor, dims: tuple[int, ...], keep: bool) -> torch.Tensor:
    return torch.logsumexp(x, dim=dims, keepdim=keep)


_REDUCERS: dict[str, Reducer] = {
    "reduce_sum": lambda x, d, k: torch.sum(x, dim=d, keepdim=k),
    "reduce_mean": lambda x, d, k: torch.mean(x, dim=d, keepdim=k),
    "reduce_max": lambda x, d, k: torch.amax(x, dim=d, keepdim=k),
    "reduce_min": lambda x, d, k: torch.amin(x, dim=d, keepdim=k),
    "reduce_prod": _prod,
    "reduce_sum_square": lambda x, d, k: torch.sum(x * x, dim=d, keepdim=k),
    "reduce_l1_norm": lambda x, d, k: torch.sum(x.abs(), dim=d, keepdim=k),
    "reduce_l2_norm": lambda x, d, k: torch.sqrt(torch.sum(x * x, dim=d, keepdim=k)),
    "reduce_log_sum": lambda x, d, k: torch.log(torch.sum(x, dim=d, keepdim=k)),
    "reduce_log_sum_exp": _log_sum_exp,
}


def _reduction(fn: Reducer) -> Callable[[OpArgs], torch.Tensor]:
    def op(a: OpArgs) -> torch.Tensor:
        x = a.get("x")
        axes = a.ints("axes", None)
        dims = tuple(range(x.ndim)) if axes is None else norm_axes(axes, x.ndim)
        if not x.is_floating_point():
            x = x.to(torch.float64)  # integer reductions, exact; stored back as integers
        if x.ndim == 0:
            return fn(x.reshape(1), (0,), False)
        return fn(x, dims, a.bool("keep_dims", False))

    return op


for _name, _fn in _REDUCERS.items():
    register(_name)(_reduction(_fn))


def _arg_reduction(largest: bool) -> Callable[[OpArgs], torch.Tensor]:
    def op(a: OpArgs) -> torch.Tensor:
        # the index of the first extreme value along axis (ties: the lowest index)
        x = a.get("x")
        axis = norm_axis(a.int("axis", -1), x.ndim)
        keep = a.bool("keep_dims", False)
        fn = torch.argmax if largest else torch.argmin
        return fn(x, dim=axis, keepdim=keep)

    return op


register("reduce_argmax")(_arg_reduction(True))
register("reduce_argmin")(_arg_reduction(False))

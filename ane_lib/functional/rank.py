"""Measure the rank of every tensor a block of PyTorch code creates.

Core ML rejects tensors of rank above 5 (:data:`COREML_MAX_RANK`), and with them every model
that builds one on the way, even for a moment, such as the rank-6 reshape of the usual window
partition. :class:`RankRecorder` makes that visible before export: inside its ``with`` block it
notes the name and output shape of every torch call, and :meth:`RankRecorder.above` lists the
calls that went over the limit. :func:`max_intermediate_rank` is the one-line form.

What is seen. The recorder is a :class:`torch.overrides.TorchFunctionMode`: it sees each call
that goes through PyTorch's ``__torch_function__`` protocol, that is torch functions
(``torch.reshape``, ``torch.nn.functional.conv2d``), tensor methods and operators
(``x.permute``, ``x[0]``, ``x + y``) and tensor properties that return tensors (``x.mT``). Each
tensor in a call's result is recorded, including those inside tuples, lists, named tuples and dicts
(``torch.split``, ``torch.max(x, dim)``); results that hold no tensor (``x.shape``, ``x.size(0)``,
``x.item()``) are ignored. Views count like any other tensor: a reshape or permute creates a
tensor of its own rank, whether or not it copies data.

What is not seen. The input tensors themselves, unless a call returns them. Calls made *inside* a
call the recorder has already seen: PyTorch runs the body of a Python-level function such as
``torch.einsum`` with the mode switched off, and the temporary tensors inside one C++ operator are
never Python tensors at all. The graph Core ML converts is the exported, decomposed one; to check
that graph read the exported program (``ane_lib.coreml.report``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, NamedTuple

import torch
from torch.overrides import TorchFunctionMode

from ane_lib._checks import check_nonnegative_int

__all__ = ["COREML_MAX_RANK", "RankRecord", "RankRecorder", "max_intermediate_rank"]

COREML_MAX_RANK = 5
"""The largest tensor rank Core ML (and so the Neural Engine) accepts."""


class RankRecord(NamedTuple):
    """One tensor created inside a :class:`RankRecorder`: the call's name and the tensor's shape.

    ``name`` is the torch function, method or property name (``"reshape"``, ``"permute"``,
    ``"conv2d"``, ``"__getitem__"``, ``"mT"``).
    """

    name: str
    shape: tuple[int, ...]

    @property
    def rank(self) -> int:
        """Number of axes of the tensor, ``len(shape)``."""
        return len(self.shape)


def _call_name(func: Callable[..., Any]) -> str:
    name = getattr(func, "__name__", None) or repr(func)
    if name == "__get__":
        # A tensor property (x.mT, x.data) arrives as its getter; name the property instead.
        owner = getattr(func, "__self__", None)
        name = getattr(owner, "__name__", name)
    return name


def _tensors(out: object) -> Iterator[torch.Tensor]:
    """The tensors in a call's result: the result itself, or those inside tuples, lists, dicts."""
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, (tuple, list)):  # named tuples too, e.g. torch.max(x, dim)
        for item in out:
            yield from _tensors(item)
    elif isinstance(out, dict):
        for item in out.values():
            yield from _tensors(item)


class RankRecorder(TorchFunctionMode):
    """Record the name and output shape of every torch call made inside ``with``.

    >>> x = torch.zeros(2, 3, 8, 8)
    >>> with RankRecorder() as rec:
    ...     y = x.reshape(2, 3, 2, 4, 2, 4).permute(0, 2, 4, 1, 3, 5).reshape(8, 3, 4, 4)
    >>> rec.max_rank, [(r.name, r.rank) for r in rec.above(5)]
    (6, [('reshape', 6), ('permute', 6)])

    Records accumulate over every ``with`` block the same recorder is used in. Recorders nest:
    an inner recorder sees the calls of its own block, the outer one sees them too. Leaving the
    block, also by an exception, switches recording off again.
    """

    def __init__(self) -> None:
        super().__init__()
        self.records: list[RankRecord] = []

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Collection[type],
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        # PyTorch switches this mode off while func runs: the calls inside func are not recorded.
        out = func(*args, **(kwargs or {}))
        name = _call_name(func)
        for tensor in _tensors(out):
            self.records.append(RankRecord(name, tuple(int(n) for n in tensor.shape)))
        return out

    @property
    def max_rank(self) -> int:
        """The largest rank recorded; 0 when no tensor was recorded."""
        return max((r.rank for r in self.records), default=0)

    def above(self, limit: int = COREML_MAX_RANK) -> list[RankRecord]:
        """The records of rank above ``limit`` (default: Core ML's limit, 5), in call order."""
        check_nonnegative_int("limit", limit)
        return [r for r in self.records if r.rank > limit]


def max_intermediate_rank(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> int:
    """The largest rank of any tensor that ``fn(*args, **kwargs)`` creates with torch calls.

    The output counts (it is created by a call); the inputs count only if a call returns them.
    ``fn`` is called once, under a :class:`RankRecorder`; its result is discarded. Wrap the call
    in ``torch.no_grad()`` yourself when ``fn`` is a model.

    >>> max_intermediate_rank(torch.reshape, torch.zeros(64), (2, 2, 2, 2, 2, 2))
    6
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {fn!r} ({type(fn).__name__})")
    with RankRecorder() as recorder:
        fn(*args, **kwargs)
    return recorder.max_rank

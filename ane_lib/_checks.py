"""Argument checks shared by every module.

Each raises a ``ValueError`` or ``TypeError`` whose message names the argument, the value that
was given and what was expected, so that a user sees at once which call was wrong.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal, get_args, get_origin, get_type_hints

import torch

__all__ = [
    "check_tensor",
    "check_rank",
    "check_positive_int",
    "check_nonnegative_int",
    "check_divides",
    "check_choice",
    "check_literal_fields",
    "int_tuple",
]


def check_tensor(name: str, value: object) -> torch.Tensor:
    """Return ``value`` if it is a tensor, else raise a TypeError naming ``name``."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_rank(name: str, tensor: object, ranks: Sequence[int], layout: str = "") -> None:
    """Raise a TypeError unless ``tensor`` is a tensor, a ValueError unless ``tensor.ndim`` is
    one of ``ranks``.

    ``layout`` (e.g. ``"(B, C, H, W)"``) is quoted in the message to say what was expected.
    """
    tensor = check_tensor(name, tensor)
    if tensor.ndim not in tuple(ranks):
        want = " or ".join(str(r) for r in ranks)
        hint = f" {layout}" if layout else ""
        raise ValueError(
            f"{name} must have rank {want}{hint}, got rank {tensor.ndim} with shape "
            f"{tuple(tensor.shape)}"
        )


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` as an int if it is an integer >= 1, else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def check_nonnegative_int(name: str, value: object) -> int:
    """Return ``value`` as an int if it is an integer >= 0, else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def check_divides(divisor_name: str, divisor: int, dividend_name: str, dividend: int) -> None:
    """Raise a ValueError unless ``divisor`` divides ``dividend`` (naming both)."""
    if divisor <= 0 or dividend % divisor != 0:
        raise ValueError(
            f"{divisor_name}={divisor} must divide {dividend_name}={dividend} "
            f"({dividend_name} % {divisor_name} = {dividend % divisor if divisor else 'undefined'})"
        )


def check_choice(name: str, value: object, allowed: Sequence[object]) -> None:
    """Raise a ValueError unless ``value`` is one of ``allowed`` (listing them).

    A bool is a choice only where ``allowed`` lists bools: ``True == 1`` in Python, but
    ``nbits=True`` is not a number of bits.
    """
    choices = tuple(allowed)
    mistaken_bool = isinstance(value, bool) and not any(isinstance(a, bool) for a in choices)
    if mistaken_bool or value not in choices:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def check_literal_fields(instance: Any) -> None:
    """:func:`check_choice` for every field of the dataclass ``instance`` typed as a ``Literal``.

    The ``Literal`` of a field's annotation is the one list of its allowed values: this check,
    the registry's :func:`~ane_lib.models.option_choices` and the command line all read it.
    """
    hints = get_type_hints(type(instance))
    for f in dataclasses.fields(instance):
        hint = hints.get(f.name)
        if get_origin(hint) is Literal:
            check_choice(f.name, getattr(instance, f.name), get_args(hint))


def int_tuple(
    name: str, value: int | Sequence[int], n: int, *, minimum: int = 1
) -> tuple[int, ...]:
    """Expand an int or a length-``n`` sequence of ints to a tuple of ``n`` ints >= ``minimum``.

    >>> int_tuple("stride", 2, 3)
    (2, 2, 2)
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a sequence of {n} ints, got {value!r}")
    if isinstance(value, int):
        items: tuple[int, ...] = (value,) * n
    elif isinstance(value, Sequence) and not isinstance(value, str):
        items = tuple(value)
        if len(items) != n:
            raise ValueError(
                f"{name} must be an int or a sequence of {n} ints, got {value!r} "
                f"of length {len(items)}"
            )
        if any(isinstance(v, bool) or not isinstance(v, int) for v in items):
            raise TypeError(f"{name} must contain only ints, got {value!r}")
    else:
        raise TypeError(
            f"{name} must be an int or a sequence of {n} ints, got {value!r} "
            f"({type(value).__name__})"
        )
    for v in items:
        if v < minimum:
            raise ValueError(f"{name} must be >= {minimum} in every dimension, got {value!r}")
    return items

"""The named inputs and outputs of an exported model: what they are, how to sample and name them.

A package made by :func:`ane_lib.coreml.export` takes one or several named tensors of fixed
shapes and returns one or several named tensors. This module holds what ``export``, ``verify``
and the command line share about them:

- :class:`TensorSpec`: an input's shape, the dtype the PyTorch model takes and the range its
  random samples come from (token ids in ``[0, vocab)``, a 0/1 mask, an image in ``[0, 1)``),
  with the Core ML type the package declares for it (Core ML inputs are float or int32: int64
  and bool inputs travel as int32 and are cast back inside the exported graph);
- :func:`input_specs` normalises what a user passes to ``export`` (one shape, or a mapping
  name -> shape, spec or example tensor) and refuses dynamic shapes by name;
- :func:`sample_inputs` draws reproducible samples; :func:`flatten_outputs` names the tensors of
  a tuple, dict or Hugging Face ``ModelOutput`` the way the package names its outputs
  (``logits``; ``hidden_states_0``, ...);
- the checks of names that every export makes (:func:`check_io_names`,
  :func:`check_input_names`, :func:`name_outputs`) and what it records of a model
  (:func:`model_options`).

Backend-neutral: the Core ML export (:mod:`ane_lib.coreml.export`) and the Core AI export
(:mod:`ane_lib.coreai.export`) both use it.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "INPUT_DTYPES",
    "InputCasts",
    "TensorSpec",
    "check_input_names",
    "check_io_names",
    "example_input",
    "flatten_outputs",
    "input_specs",
    "jsonable",
    "model_options",
    "name_outputs",
    "package_arrays",
    "sample_inputs",
]

#: The dtypes a model input may have, by name, and the numpy dtype of the package's input.
INPUT_DTYPES: dict[str, tuple[torch.dtype, type]] = {
    "float32": (torch.float32, np.float32),
    "float16": (torch.float16, np.float16),
    "int32": (torch.int32, np.int32),
    "int64": (torch.int64, np.int32),
    "bool": (torch.bool, np.int32),
}
_DTYPE_NAMES = {torch_dtype: name for name, (torch_dtype, _) in INPUT_DTYPES.items()}


def _dtype_name(dtype: torch.dtype, what: str) -> str:
    if dtype not in _DTYPE_NAMES:
        raise ValueError(
            f"{what} has dtype {dtype}; a Core ML package input can be one of "
            f"{list(INPUT_DTYPES)} (int64 and bool are passed as int32)"
        )
    return _DTYPE_NAMES[dtype]


def _static_shape(name: str, shape: object) -> tuple[int, ...]:
    """``shape`` as a tuple of positive ints, or a ValueError naming the input and the axis."""
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, torch.Size)):
        raise TypeError(f"{name} must be a sequence of ints (a shape), got {shape!r}")
    dims = []
    for axis, dim in enumerate(shape):
        if dim is None or (isinstance(dim, int) and not isinstance(dim, bool) and dim < 0):
            raise ValueError(
                f"{name} has a dynamic dimension {dim!r} at axis {axis}; export needs a fixed "
                "shape, every dimension a positive int (the Neural Engine runs static shapes "
                "only: export one package per shape)"
            )
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(
                f"{name}[{axis}] must be an int, got {dim!r} ({type(dim).__name__}); dynamic "
                "dimensions (ct.RangeDim, torch.export.Dim) are not supported: give a fixed size"
            )
        if dim < 1:
            raise ValueError(f"{name}[{axis}] must be >= 1, got {dim}")
        dims.append(dim)
    if not dims:
        raise ValueError(f"{name} must have at least one dimension, got ()")
    return tuple(dims)


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One model input: fixed ``shape``, the ``dtype`` the PyTorch model takes, and the range
    of its random samples.

    Floats are drawn uniformly from ``[low, high)`` (default ``[0, 1)``, as
    :func:`ane_lib.coreml.example_input`), integers uniformly from ``low ... high - 1`` (e.g.
    token ids: ``TensorSpec((1, 128), torch.int32, high=30522)``; a 0/1 attention mask:
    ``high=2``), bools are True with probability one half.
    """

    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", _static_shape("shape", self.shape))
        name = _dtype_name(self.dtype, "TensorSpec")
        for bound in ("low", "high"):
            value = getattr(self, bound)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{bound} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{bound} must be finite, got {value!r}")
        if name.startswith("int") and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError(
                f"an {name} input needs integer low and high, got {self.low}, {self.high}"
            )
        if name != "bool" and not self.low < self.high:
            raise ValueError(f"low must be < high, got low={self.low}, high={self.high}")

    @property
    def dtype_name(self) -> str:
        """``"float32"``, ``"int32"``, ``"bool"``, ... (a key of :data:`INPUT_DTYPES`)."""
        return _DTYPE_NAMES[self.dtype]

    @property
    def package_dtype(self) -> type:
        """The numpy dtype fed to the package: float32, float16 or int32 (an fp16 package
        declares a float32 spec's input fp16, and the executor rounds it as it reads it)."""
        return INPUT_DTYPES[self.dtype_name][1]

    @property
    def package_torch_dtype(self) -> torch.dtype:
        """:attr:`package_dtype` as a torch dtype."""
        return {"float32": torch.float32, "float16": torch.float16, "int32": torch.int32}[
            np.dtype(self.package_dtype).name
        ]

    def sample(self, generator: torch.Generator) -> torch.Tensor:
        """A random tensor of this spec, drawn from ``generator`` (on the CPU)."""
        if self.dtype == torch.bool:
            return torch.rand(self.shape, generator=generator) < 0.5
        if self.dtype.is_floating_point:
            u = torch.rand(self.shape, generator=generator, dtype=torch.float32)
            if (self.low, self.high) != (0.0, 1.0):
                u = self.low + (self.high - self.low) * u
            return u.to(self.dtype)
        return torch.randint(
            int(self.low), int(self.high), self.shape, generator=generator, dtype=self.dtype
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"shape": [...], "dtype": "int32", "low": 0, "high": 30522}``."""
        return {
            "shape": list(self.shape),
            "dtype": self.dtype_name,
            "low": self.low,
            "high": self.high,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        """The inverse of :meth:`to_dict`."""
        if data.get("dtype") not in INPUT_DTYPES:
            raise ValueError(
                f"unknown input dtype {data.get('dtype')!r}; known: {list(INPUT_DTYPES)}"
            )
        return cls(
            tuple(data["shape"]),
            INPUT_DTYPES[data["dtype"]][0],
            low=data.get("low", 0.0),
            high=data.get("high", 1.0),
        )

    @classmethod
    def like(cls, example: torch.Tensor) -> TensorSpec:
        """The spec of an example tensor: its shape and dtype, samples in its value range."""
        _dtype_name(example.dtype, "the example tensor")
        if example.dtype == torch.bool or example.numel() == 0:
            return cls(tuple(example.shape), example.dtype)
        low, high = float(example.min()), float(example.max())
        if example.dtype.is_floating_point:
            return cls(tuple(example.shape), example.dtype, low, high if high > low else low + 1)
        return cls(tuple(example.shape), example.dtype, int(low), int(high) + 1)


def input_specs(
    inputs: Sequence[int] | Mapping[str, Any], default_name: str
) -> tuple[dict[str, TensorSpec], dict[str, torch.Tensor]]:
    """Normalise ``export``'s inputs: (name -> spec, name -> example tensor given by the user).

    ``inputs`` is one shape (a float32 input called ``default_name``), or a mapping from input
    name to a shape (float32), a :class:`TensorSpec`, or an example tensor (whose shape and
    dtype are taken, and which is used to trace the model).
    """
    if not isinstance(inputs, Mapping):
        return {default_name: TensorSpec(_static_shape("input_shape", inputs))}, {}
    if not inputs:
        raise ValueError("input_shape must name at least one input, got an empty mapping")
    specs: dict[str, TensorSpec] = {}
    examples: dict[str, torch.Tensor] = {}
    for name, value in inputs.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"input names must be Python identifiers, got {name!r}")
        what = f"input_shape[{name!r}]"
        if isinstance(value, TensorSpec):
            specs[name] = value
        elif isinstance(value, torch.Tensor):
            if value.is_nested:
                raise TypeError(f"{what} is a nested tensor; give a padded tensor of fixed shape")
            _dtype_name(value.dtype, what)
            specs[name] = TensorSpec.like(value)
            examples[name] = value.detach().cpu()
        else:
            specs[name] = TensorSpec(_static_shape(what, value))
    return specs, examples


def sample_inputs(specs: Mapping[str, TensorSpec], seed: int) -> dict[str, torch.Tensor]:
    """One random sample per input, in order, from one generator seeded with ``seed``.

    For a single float input in ``[0, 1)`` this is :func:`ane_lib.coreml.example_input`.
    """
    generator = torch.Generator().manual_seed(seed)
    return {name: spec.sample(generator) for name, spec in specs.items()}


def package_arrays(
    sample: Mapping[str, torch.Tensor], specs: Mapping[str, TensorSpec]
) -> dict[str, np.ndarray]:
    """The arrays to feed the package: each input in its package dtype (bool -> 0/1 int32)."""
    return {
        name: sample[name].detach().cpu().numpy().astype(spec.package_dtype)
        for name, spec in specs.items()
    }


class InputCasts(nn.Module):
    """Calls ``model(**inputs)`` after casting the inputs that the package passes as int32
    (int64 token ids, bool masks) back to the dtype the model takes.

    Exported in place of ``model`` when it has such inputs, so the cast is part of the graph
    and the package's inputs are int32.
    """

    def __init__(self, model: nn.Module, casts: Mapping[str, torch.dtype]) -> None:
        super().__init__()
        self.model = model
        self.casts = dict(casts)

    def forward(self, **inputs: torch.Tensor) -> Any:
        cast = {
            name: (value != 0 if self.casts.get(name) == torch.bool else value.to(self.casts[name]))
            if name in self.casts
            else value
            for name, value in inputs.items()
        }
        return self.model(**cast)


def _path_name(path: Sequence[Any]) -> str:
    parts = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "_".join(parts)


def flatten_outputs(output: Any, single_name: str = "logits") -> dict[str, torch.Tensor]:
    """The tensors of a model's output by name, in the order ``torch.export`` flattens them.

    A tensor is named ``single_name``; a tuple or list gives ``output_0``, ``output_1``, ...; a
    dict or a Hugging Face ``ModelOutput`` gives its keys, nested items joined with ``_``
    (``hidden_states_0``). Anything else than tensors in these containers raises TypeError.
    """
    if isinstance(output, torch.Tensor):
        return {single_name: output}
    from torch.utils import _pytree as pytree

    leaves, _ = pytree.tree_flatten_with_path(output)
    named: dict[str, torch.Tensor] = {}
    for path, leaf in leaves:
        name = _path_name(path)
        if isinstance(output, (tuple, list)):
            name = f"output_{name}"
        if not isinstance(leaf, torch.Tensor):
            hint = ""
            if "Cache" in type(leaf).__name__:  # transformers' DynamicCache and its kin
                hint = "; a Hugging Face model returns its key/value cache unless use_cache=False"
            raise TypeError(
                f"the model's output {name!r} is a {type(leaf).__name__}; a package returns "
                f"tensors only (in a tensor, tuple, list, dict or ModelOutput){hint}"
            )
        if not name.isidentifier():
            name = "output_" + "".join(c if c.isalnum() else "_" for c in name)
        named[name] = leaf
    if not named:
        raise TypeError(f"the model returned no tensor ({type(output).__name__})")
    return named


# --------------------------------------------------------------------------- export's checks


def example_input(input_shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """The fixed example input used to trace a model: uniform [0, 1) of ``input_shape``, float32.

    Drawn from its own generator so that the caller's global RNG state is left untouched.
    """
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(tuple(input_shape), generator=gen, dtype=torch.float32)


def check_io_names(input_name: str, output_name: str) -> None:
    """The names of a single input and a single output: identifiers, and different."""
    for arg, name in (("input_name", input_name), ("output_name", output_name)):
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"{arg} must be a Python-identifier-like string, got {name!r}")
    if input_name == output_name:
        raise ValueError(f"input_name and output_name must differ, both are {input_name!r}")


def check_input_names(model: nn.Module, names: Sequence[str]) -> None:
    """Several inputs are passed as keyword arguments: ``forward`` must accept each name."""
    signature = inspect.signature(model.forward)
    params = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    unknown = [n for n in names if n not in accepted]
    if unknown:
        raise ValueError(
            f"input_shape names {unknown}, which {type(model).__name__}.forward does not take; "
            f"its parameters are {accepted}"
        )


def name_outputs(
    flat: Mapping[str, torch.Tensor], output_names: Sequence[str] | None, inputs: Iterable[str]
) -> list[str]:
    """The exported outputs' names: those of ``flat`` (see :func:`flatten_outputs`) or the
    caller's ``output_names``, one per tensor; identifiers, unique, none an input's name."""
    names = list(flat)
    if output_names is not None:
        if isinstance(output_names, str) or len(output_names) != len(names):
            raise ValueError(
                f"output_names must be a sequence of {len(names)} names (one per output tensor "
                f"{names}), got {output_names!r}"
            )
        names = list(output_names)
    for name in names:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"output names must be Python identifiers, got {name!r}")
    clash = sorted((set(names) & set(inputs)) | {n for n in names if names.count(n) > 1})
    if clash:
        raise ValueError(f"output names {clash} repeat or are also input names")
    return names


def jsonable(value: Any) -> Any:
    """``value`` as JSON-able builtins: dataclasses and mappings as dicts, sequences as lists,
    anything else that is not a str, number, bool or None as its ``str``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def model_options(model: nn.Module) -> dict[str, Any] | None:
    """``model.config`` as JSON-able builtins (recorded at export), or None without a config."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    options = jsonable(config)
    return options if isinstance(options, dict) else {"config": options}

"""Run a Core AI program with Apple's own runtime, synchronously, on Linux or macOS.

coreai-core bundles a CPU runtime: on Linux, ``AIModelAsset.executable()`` lowers the program
to its portable form in a temporary folder and loads it; a function is then called with a
dictionary of ``coreai.runtime.NDArray`` and answers with one, asynchronously. On macOS 27 the
same calls go to the operating system's Core AI, which can also use the GPU and the Neural
Engine (``SpecializationOptions``; on Linux it raises). ``AIModel.load(path)`` on the asset
folder itself fails on Linux: the program has to go through ``executable()``.

- :func:`run` executes a program once: ``run("m.aimodel", {"image": x}) -> {"logits": y}``.
- :class:`Session` keeps a program loaded for many calls (loading lowers the program again,
  about a second for tiny-MOAT-1), e.g. ``with Session(path) as s: [s(x) for x in data]``.

Inputs are checked by name, shape and dtype against the function's signature and cast where
that is safe: float values to the program's float type (to fp16 only when every finite value is
within fp16's range), integers and bools to its integer type when they fit. A float array for an
integer input, or a value the cast would change beyond rounding, is an error naming the input.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from ane_lib.coreai._sdk import import_coreai, quiet
from ane_lib.coreai.export import check_asset_path

__all__ = ["FunctionSignature", "Session", "run", "run_dataset", "signature"]

_FLOAT_KINDS = "f"
_INT_KINDS = "iub"


@dataclass(frozen=True)
class FunctionSignature:
    """A function's inputs and outputs: name -> (shape, numpy dtype name), in order."""

    name: str
    inputs: dict[str, tuple[tuple[int, ...], str]]
    outputs: dict[str, tuple[tuple[int, ...], str]]


def _descriptor(desc: Any) -> tuple[tuple[int, ...], str]:
    shape = tuple(-1 if d is None else int(d) for d in desc.shape)
    return shape, str(np.dtype(str(desc.dtype)))


def _signature_of(function: Any, name: str) -> FunctionSignature:
    desc = function.desc
    return FunctionSignature(
        name=name,
        inputs={n: _descriptor(desc.input_descriptor(n)) for n in desc.input_names},
        outputs={n: _descriptor(desc.output_descriptor(n)) for n in desc.output_names},
    )


def _as_array(name: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch.Tensor
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in _FLOAT_KINDS + _INT_KINDS:
        raise TypeError(f"inputs[{name!r}] must be a numeric array, got dtype {arr.dtype}")
    return arr


def _cast(name: str, arr: np.ndarray, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """``arr`` in ``dtype`` if that is safe (see the module docstring), else an error."""
    if arr.ndim != len(shape) or any(
        d != -1 and d != n for d, n in zip(shape, arr.shape, strict=True)
    ):
        raise ValueError(f"inputs[{name!r}] has shape {arr.shape}, the program takes {shape}")
    target = np.dtype(dtype)
    if arr.dtype == target:
        return np.ascontiguousarray(arr)
    if target.kind == "f":
        if arr.dtype.kind != "f":
            raise TypeError(
                f"inputs[{name!r}] is {arr.dtype}, the program takes {target}: give float values"
            )
        finite = arr[np.isfinite(arr)]
        limit = float(np.finfo(target).max)
        if finite.size and float(np.max(np.abs(finite))) > limit:
            raise ValueError(
                f"inputs[{name!r}] holds {float(np.max(np.abs(finite))):.6g}, beyond {target}'s "
                f"largest value {limit:g}: the cast would make it infinite"
            )
        return np.ascontiguousarray(arr.astype(target))
    if arr.dtype.kind not in _INT_KINDS:
        raise TypeError(
            f"inputs[{name!r}] is {arr.dtype}, the program takes {target}: give integers"
        )
    info = np.iinfo(target)
    if arr.size and (int(arr.min()) < info.min or int(arr.max()) > info.max):
        raise ValueError(
            f"inputs[{name!r}] holds values in [{int(arr.min())}, {int(arr.max())}], outside "
            f"{target}'s range [{info.min}, {info.max}]"
        )
    return np.ascontiguousarray(arr.astype(target))


def _prepare(signature: FunctionSignature, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if not isinstance(inputs, Mapping):
        raise TypeError(
            f"inputs must be a mapping from input name to array, got {type(inputs).__name__}"
        )
    expected = list(signature.inputs)
    missing = [n for n in expected if n not in inputs]
    extra = [n for n in inputs if n not in signature.inputs]
    if missing or extra:
        listing = ", ".join(f"{n} {s} {d}" for n, (s, d) in signature.inputs.items())
        parts = ([f"missing {missing}"] if missing else []) + (
            [f"unexpected {extra}"] if extra else []
        )
        raise ValueError(f"inputs: {', '.join(parts)}; the program takes {listing}")
    return {n: _cast(n, _as_array(n, inputs[n]), *signature.inputs[n]) for n in signature.inputs}


_Job = tuple[dict[str, np.ndarray], "queue.Queue[tuple[bool, Any]]"]


class Session:
    """A Core AI program loaded by Apple's runtime, callable synchronously many times.

    ``Session(path, function="main")`` loads on ``__enter__`` (or :meth:`open`) and releases
    on ``__exit__`` (or :meth:`close`). Calling it, ``session(inputs)``, runs the function on a
    mapping input name -> array and returns output name -> numpy array. The runtime's event
    loop lives in a helper thread, so this works the same in a script and in Jupyter.
    """

    def __init__(self, path: str | os.PathLike[str], function: str = "main") -> None:
        if not isinstance(function, str):
            raise TypeError(f"function must be a str, got {type(function).__name__}")
        self.path: Path = check_asset_path(path)
        self.function = function
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._ready: queue.Queue[tuple[bool, Any]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._signature: FunctionSignature | None = None

    @property
    def signature(self) -> FunctionSignature:
        """The loaded function's inputs and outputs (shapes and dtypes)."""
        if self._signature is None:
            raise RuntimeError("the session is not open; use `with Session(path) as s:`")
        return self._signature

    async def _serve(self) -> None:
        import_coreai()
        from coreai.authoring import AIModelAsset
        from coreai.runtime import NDArray

        try:
            with quiet():
                asset = AIModelAsset.load(self.path)
            async with asset.executable() as model:
                if self.function not in model.function_names:
                    raise ValueError(
                        f"function {self.function!r} is not in {str(self.path)!r}; it has "
                        f"{sorted(model.function_names)}"
                    )
                with quiet():
                    function = model.load_function(self.function)
                self._ready.put((True, _signature_of(function, self.function)))
                while (job := await asyncio.to_thread(self._jobs.get)) is not None:
                    arrays, answer = job
                    try:
                        with quiet():
                            out = await function({n: NDArray(a) for n, a in arrays.items()})
                        answer.put((True, {n: np.array(v.numpy()) for n, v in out.items()}))  # type: ignore[union-attr]
                    except Exception as err:  # handed to the caller's thread
                        answer.put((False, err))
        except Exception as err:
            self._ready.put((False, err))

    def open(self) -> Session:
        """Load the program (lowered for the runtime in a temporary folder). Returns self."""
        if self._thread is not None:
            return self
        import_coreai()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._serve()), name="ane_lib.coreai.Session", daemon=True
        )
        self._thread.start()
        ok, value = self._ready.get()
        if not ok:
            self._thread.join()
            self._thread = None
            raise value
        self._signature = value
        return self

    def close(self) -> None:
        """Release the loaded program (and its temporary folder)."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Session:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __call__(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run the function on ``inputs`` (name -> array, cast where safe); name -> array."""
        arrays = _prepare(self.signature, inputs)
        answer: queue.Queue[tuple[bool, Any]] = queue.Queue()
        self._jobs.put((arrays, answer))
        ok, value = answer.get()
        if not ok:
            raise value
        result: dict[str, np.ndarray] = value
        return result


def run(
    path: str | os.PathLike[str], inputs: Mapping[str, Any], *, function: str = "main"
) -> dict[str, np.ndarray]:
    """Run the Core AI program at ``path`` once with Apple's runtime (CPU on Linux).

    ``inputs``: input name -> array (numpy or torch), cast to the program's dtypes where safe
    (see the module docstring). Returns output name -> numpy array. For many calls, a
    :class:`Session` loads the program once.
    """
    with Session(path, function) as session:
        return session(inputs)


def signature(path: str | os.PathLike[str], function: str = "main") -> FunctionSignature:
    """The inputs and outputs of ``function`` in the program at ``path``, read without
    running it."""
    folder = check_asset_path(path)
    import_coreai()
    from coreai.authoring import AIModelAsset

    with quiet():
        summary = AIModelAsset.load(folder).summary(include_statistics=False)
    if summary is None or function not in summary.function_names:
        names = [] if summary is None else sorted(summary.function_names)
        raise ValueError(f"function {function!r} is not in {str(folder)!r}; it has {names}")

    def parse(entries: list[tuple[str, str]]) -> dict[str, tuple[tuple[int, ...], str]]:
        return {n: _parse_type(text) for n, text in entries}

    return FunctionSignature(
        function,
        parse(summary.function_inputs(function)),
        parse(summary.function_outputs(function)),
    )


_DTYPES: dict[str, str] = {
    "Float16": "float16",
    "Float32": "float32",
    "Int32": "int32",
    "Int16": "int16",
    "Int8": "int8",
    "UInt8": "uint8",
    "Bool": "bool",
    "Int64": "int64",
}


def _parse_type(text: str) -> tuple[tuple[int, ...], str]:
    """``"NDArray (Float32, 1 × 3 × 16 × 16)"`` -> ``((1, 3, 16, 16), "float32")``."""
    inner = text[text.index("(") + 1 : text.rindex(")")]
    kind, _, dims = inner.partition(",")
    shape = tuple(int(d) if d.strip().isdigit() else -1 for d in dims.split("×") if d.strip())
    return shape, _DTYPES.get(kind.strip(), kind.strip().lower())


def run_dataset(path: str | os.PathLike[str], samples: Any) -> np.ndarray:
    """The program's output for every sample, one at a time, as an app feeds a batch-1 model:
    ``samples: (N, *shape) -> (N, *out_shape)``, float32.

    The program must have one input of shape ``(1, *shape)`` and one output (as for
    :func:`ane_lib.coreml.run_dataset`); it is loaded once (:class:`Session`).
    """
    if hasattr(samples, "detach"):
        samples = samples.detach().cpu().numpy()
    samples = np.asarray(samples)
    with Session(path) as session:
        inputs, outputs = session.signature.inputs, session.signature.outputs
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"the program must have one input and one output, has {list(inputs)} -> "
                f"{list(outputs)}"
            )
        (name, (shape, _)), (output,) = next(iter(inputs.items())), list(outputs)
        if tuple(shape) != (1, *samples.shape[1:]) or len(samples) == 0:
            raise ValueError(
                f"samples must have shape (N, {', '.join(str(d) for d in shape[1:])}) with "
                f"N >= 1 for the program's input {name!r} of shape {tuple(shape)}, got "
                f"{samples.shape}"
            )
        results = [session({name: x[None]})[output] for x in samples]
    return np.concatenate(results).astype(np.float32)

"""Compress the weights of a saved package with ``coremltools.optimize.coreml``, atomically.

- ``method="linear"``: each weight becomes ``nbits``-bit integers and a scale, per output
  channel by default (``linear_quantize_weights``, symmetric). 8 bits halve an fp16 package.
- ``method="palettize"``: each weight becomes ``nbits``-bit indices into a table of ``2**nbits``
  values found by k-means (``palettize_weights``); ``granularity="per_grouped_channel"`` gives
  every ``group_size`` output channels their own table.
- ``activations="int8"`` (W8A8) also quantizes the activations to int8, with ranges calibrated
  on ``calibration`` inputs (``linear_quantize_activations``). coremltools calibrates by running
  the model in Core ML, which exists only on Apple platforms; here the package is run by
  :func:`ane_lib.coreml.run` instead, so W8A8 works on Linux too.

Weights-only compression still computes in fp16: the weights are expanded when Core ML loads the
model (their constexpr ops), which saves storage and memory bandwidth. W8A8 lets newer Neural
Engines compute in int8 (coremltools' documentation: from the A17 Pro / M4 on).

As with :func:`ane_lib.coreml.export`, the package is saved to a temporary folder next to
``dest`` and renamed into place; ``dest`` is replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ane_lib._checks import check_choice
from ane_lib._compression import (
    COMPRESSION_METHODS,
    GRANULARITIES,
    NBITS,
    check_weight_settings,
)
from ane_lib._files import check_destination, staged_folder
from ane_lib.coreml.export import META_PREFIX
from ane_lib.coreml.program import import_coremltools, open_package, quiet_coremltools

__all__ = [
    "ACTIVATION_TYPES",
    "COMPRESSION_METHODS",
    "GRANULARITIES",
    "NBITS",
    "calibration_ranges",
    "compress",
    "compressed_weights",
    "decompress",
    "package_bytes",
    "weight_bytes",
]

ACTIVATION_TYPES: tuple[str, ...] = ("fp16", "int8")

_SPEC_IOS17 = 8  # Core ML specification versions: iOS17 / macOS14 and iOS18 / macOS15
_SPEC_IOS18 = 9
_WEIGHTS_FOLDER = ("Data", "com.apple.CoreML", "weights")


def package_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes of all files in a ``.mlpackage`` folder (what an app would ship)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def weight_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes of the package's weight file(s): ``Data/com.apple.CoreML/weights/*``."""
    folder = Path(path).joinpath(*_WEIGHTS_FOLDER)
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def compressed_weights(
    original: str | os.PathLike[str], compressed: str | os.PathLike[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each weight that compression replaced: ``{"<op>.<input>": (original, expanded)}``.

    ``original`` is the package that was compressed and ``compressed`` the result (e.g. of
    :func:`compress`). For every input of an op in ``compressed`` that a constexpr op computes,
    the weight is expanded by :func:`ane_lib.coreml.run` (fp32 run, so the values are those the
    package stores) and paired with the constant the op of the same name reads in ``original``.
    Both arrays are float32.
    """
    from ane_lib.coreml.executor import run
    from ane_lib.coreml.program import load_program

    before = {op.name: op for op in load_program(original).functions["main"].operations}
    program = load_program(compressed)
    function = program.functions["main"]
    wanted: dict[str, tuple[str, np.ndarray]] = {}
    for op in function.operations:
        if op.op_type.startswith("constexpr") or op.op_type == "const":
            continue
        for key, var in op.inputs.items():
            producer = getattr(var, "op", None)
            if producer is None or not str(producer.op_type).startswith("constexpr"):
                continue
            source = before.get(op.name)
            value = None if source is None else getattr(source.inputs.get(key), "val", None)
            if value is None:
                raise ValueError(
                    f"op {op.name!r} of {str(compressed)!r} has no constant input {key!r} in "
                    f"{str(original)!r}: is it the package that was compressed?"
                )
            wanted[f"{op.name}.{key}"] = (var.name, np.asarray(value, dtype=np.float32))
    feed = {
        name: np.zeros(tuple(var.shape), _input_dtype(var)) for name, var in function.inputs.items()
    }
    values = run(program, feed, precision="fp32", outputs=sorted({n for n, _ in wanted.values()}))
    return {k: (w, np.asarray(values[n], dtype=np.float32)) for k, (n, w) in wanted.items()}


def _input_dtype(var: Any) -> Any:
    """The numpy type of a program input ``var``."""
    types = import_coremltools().converters.mil.mil.types
    return types.nptype_from_builtin(var.dtype)


@contextlib.contextmanager
def _quiet_compression() -> Iterator[None]:
    """No progress bars or log lines from coremltools' compression passes (restored on exit)."""
    from coremltools.converters.mil.mil.passes import pass_pipeline
    from coremltools.optimize.coreml import _post_training_quantization, _quantization_passes
    from coremltools.optimize.coreml.experimental import _model_debugger

    def silent(iterable: Any, *_: Any, **__: Any) -> Any:
        return iterable

    modules = (pass_pipeline, _post_training_quantization, _quantization_passes, _model_debugger)
    saved = [(m, m.tqdm) for m in modules if hasattr(m, "tqdm")]
    for module, _ in saved:
        module.tqdm = silent
    try:
        with quiet_coremltools(logging.CRITICAL + 1), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for module, original in saved:
            module.tqdm = original


def _sample_arrays(calibration: object, input_names: Sequence[str]) -> list[dict[str, Any]]:
    if isinstance(calibration, Mapping) or not isinstance(calibration, Sequence):
        raise TypeError(
            "calibration must be a sequence of {input name: array} mappings, got "
            f"{type(calibration).__name__}"
        )
    if len(calibration) == 0:
        raise ValueError("calibration must hold at least one sample, got an empty sequence")
    samples = []
    for i, sample in enumerate(calibration):
        if not isinstance(sample, Mapping) or sorted(sample) != sorted(input_names):
            got = sorted(sample) if isinstance(sample, Mapping) else type(sample).__name__
            raise ValueError(
                f"calibration[{i}] must map the package's inputs {sorted(input_names)} to "
                f"arrays, got {got}"
            )
        samples.append({k: np.asarray(v) for k, v in sample.items()})
    return samples


def calibration_ranges(
    path: str | os.PathLike[str], calibration: Sequence[Mapping[str, Any]]
) -> dict[str, dict[str, float]]:
    """The range of every activation of the package over ``calibration`` inputs.

    Runs the package with :func:`ane_lib.coreml.run` in fp16 on each sample and returns
    ``{variable: {"rmin": min, "rmax": max}}`` over all samples, for the inputs and every
    float output of a non-const op except the package's outputs: the statistics coremltools'
    activation quantization calibrates on (it collects them with Core ML).
    """
    from ane_lib.coreml.executor import run
    from ane_lib.coreml.program import load_program

    program = load_program(path)
    function = program.functions["main"]
    samples = _sample_arrays(calibration, list(function.inputs))
    final = {v.name for v in function.outputs}
    types = import_coremltools().converters.mil.mil.types
    names = [
        var.name
        for op in function.operations
        if op.op_type != "const"
        for var in op.outputs
        if var.name not in final and types.is_tensor(var.sym_type) and types.is_float(var.dtype)
    ]
    ranges: dict[str, dict[str, float]] = defaultdict(dict)
    for sample in samples:
        values = dict(sample) | run(program, sample, precision="fp16", outputs=names)
        for name, value in values.items():
            low, high = float(np.min(value)), float(np.max(value))
            stats = ranges[name]
            stats["rmin"] = min(low, stats.get("rmin", low))
            stats["rmax"] = max(high, stats.get("rmax", high))
    return ranges


def _concat_groups(path: str | os.PathLike[str]) -> list[list[str]]:
    """[inputs..., output] of every concat op (their ranges are unified, as coremltools does)."""
    from ane_lib.coreml.program import load_program

    function = load_program(path).functions["main"]
    return [
        [v.name for v in op.inputs["values"]] + [op.outputs[0].name]
        for op in function.operations
        if op.op_type == "concat"
    ]


@contextlib.contextmanager
def _executor_calibration(path: Path, calibration: Sequence[Mapping[str, Any]]) -> Iterator[None]:
    """Make coremltools' activation quantization take its ranges from :func:`calibration_ranges`.

    coremltools 9 collects them by running the model with Core ML (macOS only) and, in doing
    so, keeps the range of the last calibration sample rather than that of all samples.
    """
    from coremltools.optimize.coreml import _post_training_quantization as ptq
    from coremltools.optimize.coreml.experimental import _post_training_quantization as xptq

    def ranges(*_: Any, **__: Any) -> dict[str, dict[str, float]]:
        stats = calibration_ranges(path, calibration)
        xptq._adjust_concat_surrounding_activation_stats(_concat_groups(path), stats)
        return stats

    original = ptq._get_activation_calibration_stats
    ptq._get_activation_calibration_stats = ranges
    try:
        yield
    finally:
        ptq._get_activation_calibration_stats = original


def _check_settings(
    method: str,
    nbits: int | None,
    granularity: str | None,
    group_size: int,
    block_size: int,
    weight_threshold: int,
    activations: str,
    calibration: object,
) -> tuple[int, str]:
    nbits, granularity = check_weight_settings(
        method, nbits, granularity, group_size, block_size, weight_threshold
    )
    check_choice("activations", activations, ACTIVATION_TYPES)
    if activations == "int8" and calibration is None:
        raise ValueError(
            "activations='int8' needs calibration: a sequence of {input name: array} samples "
            "whose activation ranges set the int8 scales"
        )
    if activations == "fp16" and calibration is not None:
        raise ValueError("calibration is only used with activations='int8', got activations='fp16'")
    if activations == "int8" and (method, nbits) != ("linear", 8):
        raise ValueError(
            f"activations='int8' pairs with int8 weights (W8A8): method='linear', nbits=8; got "
            f"method={method!r}, nbits={nbits}"
        )
    return nbits, granularity


def _needs_ios18(method: str, nbits: int, granularity: str) -> str | None:
    """What in these settings only iOS18's constexpr ops can hold (None: iOS16's suffice)."""
    if granularity in ("per_block", "per_grouped_channel"):
        return f"granularity={granularity!r}"
    if (method, nbits) in (("linear", 4), ("palettize", 3)):
        return f"method={method!r} with nbits={nbits}"
    return None


def _weight_config(
    method: str, nbits: int, granularity: str, group_size: int, block_size: int, threshold: int
) -> Any:
    import coremltools.optimize.coreml as cto

    if method == "linear":
        return cto.OpLinearQuantizerConfig(
            mode="linear_symmetric",
            dtype=f"int{nbits}",
            granularity=granularity,
            block_size=block_size if granularity == "per_block" else None,
            weight_threshold=threshold,
        )
    return cto.OpPalettizerConfig(
        mode="kmeans",
        nbits=nbits,
        granularity=granularity,
        group_size=group_size,
        weight_threshold=threshold,
    )


def compress(
    src: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    method: str = "linear",
    *,
    nbits: int | None = None,
    granularity: str | None = None,
    group_size: int = 32,
    block_size: int = 32,
    weight_threshold: int = 2048,
    activations: str = "fp16",
    calibration: Sequence[Mapping[str, Any]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a compressed copy of the package ``src`` to ``dest`` (a new ``.mlpackage``).

    Args:
        src: a saved ML-program package (e.g. from :func:`ane_lib.coreml.export`); not modified.
        dest: where to write the compressed package; must differ from ``src``, and is refused
            if it exists unless ``overwrite=True``.
        method: ``"linear"`` (integer weights and a scale) or ``"palettize"`` (k-means table of
            ``2**nbits`` values and ``nbits``-bit indices).
        nbits: bits per weight: 8 (default) or 4 for ``"linear"``; 1, 2, 3, 4, 6 or 8 for
            ``"palettize"`` (required there).
        granularity: ``"linear"``: ``"per_channel"`` (default: a scale per output channel),
            ``"per_tensor"``, ``"per_block"`` (a scale per ``block_size`` input weights).
            ``"palettize"``: ``"per_tensor"`` (default: one table per weight) or
            ``"per_grouped_channel"`` (a table per ``group_size`` output channels).
        group_size, block_size: see ``granularity``.
        weight_threshold: weights of at most this many elements stay fp16 (coremltools'
            default 2048: biases and norm scales are not worth a table).
        activations: ``"fp16"`` (weights only) or ``"int8"`` (W8A8: also insert quantize /
            dequantize pairs on the activations; needs ``method="linear"``, ``nbits=8``).
        calibration: W8A8 only: samples ``[{input name: array}, ...]`` in the package's input
            shape, e.g. a few dozen training images.
        overwrite: replace an existing ``dest``.

    int4, ``per_block`` and ``per_grouped_channel`` need a package for iOS18 / macOS15 or later
    (``export(..., deployment_target="iOS18")``); W8A8 needs iOS17 / macOS14. The settings are
    recorded in the package's metadata as ``ane_lib.compression`` (see
    :func:`ane_lib.coreml.read_export_metadata`), beside what ``export`` recorded.

    Returns ``dest`` as a Path. Raises ValueError/TypeError for bad settings (naming the argument
    and the allowed values), FileExistsError when ``dest`` exists and ``overwrite`` is false.
    """
    nbits, granularity = _check_settings(
        method,
        nbits,
        granularity,
        group_size,
        block_size,
        weight_threshold,
        activations,
        calibration,
    )
    model = open_package(src)  # validates src
    source = Path(src)
    target = check_destination(dest, overwrite, ".mlpackage", source=source)
    version = int(model.get_spec().specificationVersion)
    needs = _needs_ios18(method, nbits, granularity)
    if needs and version < _SPEC_IOS18:
        raise ValueError(
            f"{needs} needs a package for iOS18 / macOS15 or later, but src {str(source)!r} has "
            f"specification version {version}; export it with deployment_target='iOS18'"
        )
    if activations == "int8":
        if version < _SPEC_IOS17:
            raise ValueError(
                f"activations='int8' needs a package for iOS17 / macOS14 or later, but src "
                f"{str(source)!r} has specification version {version}"
            )
        inputs = [f.name for f in model.get_spec().description.input]
        calibration = _sample_arrays(calibration, inputs)
    import_coremltools()
    import coremltools.optimize.coreml as cto

    settings: dict[str, Any] = {"method": method, "nbits": nbits, "granularity": granularity}
    if granularity == "per_grouped_channel":
        settings["group_size"] = group_size
    if granularity == "per_block":
        settings["block_size"] = block_size
    settings |= {"weight_threshold": weight_threshold, "activations": activations}
    if calibration is not None:
        settings["calibration_samples"] = len(calibration)
    config = cto.OptimizationConfig(
        global_config=_weight_config(
            method, nbits, granularity, group_size, block_size, weight_threshold
        )
    )
    with _quiet_compression():
        if activations == "int8":
            assert calibration is not None
            activation_config = cto.OptimizationConfig(
                global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric")
            )
            with _executor_calibration(source, calibration):
                model = cto.linear_quantize_activations(model, activation_config, calibration)
        if method == "linear":
            compressed = cto.linear_quantize_weights(model, config)
        else:
            compressed = cto.palettize_weights(model, config)
    compressed.user_defined_metadata[META_PREFIX + "compression"] = json.dumps(
        settings, sort_keys=True
    )

    _save(compressed, target, overwrite)
    return target


def decompress(
    src: str | os.PathLike[str], dest: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write ``src`` with every compressed weight restored to a constant, by coremltools.

    The reference for what a compressed package computes: ``coremltools.optimize.coreml.
    decompress_weights`` replaces each constexpr op by the constant it stands for. Saved
    atomically, like :func:`compress`; ``dest`` must differ from ``src``.
    """
    model = open_package(src)
    target = check_destination(dest, overwrite, ".mlpackage", source=Path(src))
    import coremltools.optimize.coreml as cto

    with _quiet_compression():
        restored = cto.decompress_weights(model)
    _save(restored, target, overwrite)
    return target


def _save(model: Any, target: Path, overwrite: bool) -> None:
    """Save ``model`` in a hidden folder next to ``target``, then rename it into place."""
    with staged_folder(target, overwrite) as built, quiet_coremltools():
        model.save(str(built))

"""Read a saved ``.mlpackage`` back as a MIL program, on Linux as well as on macOS.

Core ML itself only runs on Apple platforms, but the package format is plain protobuf plus a
weight blob, and coremltools can parse both anywhere: ``MLModel(path, skip_model_load=True)``
reads the specification without compiling it, and the milproto loader rebuilds the
``Program`` (ops, shapes, dtypes, constant weights) from it. Everything downstream in
``ane_lib.coreml`` (the reference executor, the ANE report) starts from that program.

coremltools' reader rebuilds each op with the MIL builder, which re-runs the op's type checks and
type inference. Some packages that coremltools itself wrote fail those checks on the way back
in, though nothing in them is wrong: a ``batch_norm`` with fp16 statistics and an fp32 input
(the fp32 ``epsilon`` it wrote then "must have the same data type" as the fp16 ``variance``),
or an ``einsum`` over a dynamic axis (the reader gives each input its own symbol for that
axis, and the shape check fails). :func:`load_program` first reads a package strictly; when the
reader rejects it, it reads it again with those two checks relaxed: type-domain agreement is
not enforced, and an op whose type inference fails takes the output types the package declares
for it. When even that fails, :class:`ProgramReadError` says that the reader, not the package,
is at fault.

coremltools logs a handful of warnings when it is imported on Linux ("Failed to load
_MLModelProxy ...", untested torch/scikit-learn versions). They say only that the native Core ML
runtime is absent, which we know; :func:`import_coremltools` imports the package with its logger
raised to ERROR so those lines stay out of the user's way, while errors still come through.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ane_lib._warnings import IMPORT_NOISE_LOGGERS, quiet_loggers

if TYPE_CHECKING:
    from coremltools.converters.mil.mil import Program
    from coremltools.models import MLModel

__all__ = [
    "ProgramReadError",
    "TensorInfo",
    "PackageInfo",
    "import_coremltools",
    "quiet_coremltools",
    "open_package",
    "load_program",
    "package_io",
]

_CT_LOGGER = "coremltools"


@contextlib.contextmanager
def quiet_coremltools(level: int = logging.ERROR) -> Iterator[None]:
    """Raise coremltools' logger to ``level`` inside the block, then restore it.

    Used around our own calls into coremltools only: warnings coremltools emits elsewhere are
    left as the user configured them.
    """
    logger = logging.getLogger(_CT_LOGGER)
    previous = logger.level
    logger.setLevel(max(level, previous))
    try:
        yield
    finally:
        logger.setLevel(previous)


def import_coremltools() -> ModuleType:
    """Import and return ``coremltools`` without its import-time warnings about the platform.

    Raises ImportError with an install hint when coremltools is missing (it is the optional
    ``coreml`` extra of ``ane-lib``).
    """
    with quiet_coremltools(), quiet_loggers(*IMPORT_NOISE_LOGGERS), warnings.catch_warnings():
        # coremltools imports transformers where it is installed, which imports tqdm.auto; in a
        # notebook without ipywidgets, that import warns "IProgress not found"
        warnings.filterwarnings("ignore", message="IProgress not found")
        try:
            import coremltools as ct
            import coremltools.converters.mil.frontend.milproto.load  # noqa: F401
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                "ane_lib.coreml needs coremltools; install it with `pip install 'ane-lib[coreml]'`"
            ) from err
    return ct


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape and element type of one model input or output, as the package declares it.

    ``shape`` is empty when the package leaves the shape unspecified (typical for outputs);
    ``dtype`` is the Core ML array type name, e.g. ``"FLOAT16"`` or ``"FLOAT32"``.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class PackageInfo:
    """What a package declares about itself: interface, metadata and format version."""

    path: Path
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    specification_version: int
    author: str = ""
    short_description: str = ""
    version: str = ""
    user_metadata: dict[str, str] = field(default_factory=dict)


def _check_package_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if p.suffix != ".mlpackage":
        raise ValueError(f"path must be a Core ML package ending in .mlpackage, got {str(p)!r}")
    if not p.exists():
        raise ValueError(f"path {str(p)!r} does not exist (expected a saved .mlpackage)")
    if not p.is_dir() or not (p / "Manifest.json").is_file():
        raise ValueError(
            f"path {str(p)!r} is not a valid .mlpackage (expected a directory with Manifest.json)"
        )
    return p


def open_package(path: str | os.PathLike[str]) -> MLModel:
    """Open a saved ML-program package without compiling or loading it in Core ML.

    Works on any OS. Raises ValueError naming ``path`` when it is missing, is not an
    ``.mlpackage`` or holds a model type other than an ML program (e.g. a neural network).
    """
    p = _check_package_path(path)
    ct = import_coremltools()
    with quiet_coremltools():
        try:
            model = ct.models.MLModel(str(p), skip_model_load=True)
        except Exception as err:
            raise ValueError(
                f"path {str(p)!r} could not be read as a Core ML package: {err}"
            ) from err
    kind = model.get_spec().WhichOneof("Type")
    if kind != "mlProgram":
        raise ValueError(
            f"path {str(p)!r} holds a Core ML model of type {kind!r}; expected an ML program "
            "('mlProgram', what ct.convert(..., convert_to='mlprogram') writes)"
        )
    return model


class ProgramReadError(ValueError):
    """coremltools' MIL reader could not rebuild a saved package's program.

    ``path`` names the package; ``reason`` is the reader's own error. The package itself need
    not be faulty: coremltools' reader re-checks every op as it rebuilds it, and rejects some
    packages that coremltools wrote and Core ML loads.
    """

    def __init__(self, path: Path, reason: BaseException) -> None:
        self.path = path
        self.reason = reason
        ct = import_coremltools()
        super().__init__(
            f"coremltools' MIL reader (milproto.load, coremltools {ct.__version__}) could not "
            f"rebuild the program of {str(path)!r}, even with its type checks relaxed: "
            f"{type(reason).__name__}: {reason}. This says nothing against the package (Core ML "
            "reads packages with its own parser); it is a limitation of the reader that "
            "ane_lib.coreml.load_program uses"
        )


def load_program(path: str | os.PathLike[str]) -> Program:
    """Load the MIL program (ops and weights) of a saved ``.mlpackage``, on Linux or macOS.

    The returned ``coremltools.converters.mil.mil.Program`` has one function ``"main"`` whose
    inputs and outputs carry the package's declared names and shapes; constant weights are
    materialised as numpy arrays on their ``const`` ops. A package that coremltools' reader
    rejects is read again with the reader's own re-checks relaxed (see the module's
    documentation); :class:`ProgramReadError` when that fails too.
    """
    model = open_package(path)
    from coremltools.converters.mil.frontend.milproto import load as milproto_load

    spec = model.get_spec()

    def read() -> Program:
        with quiet_coremltools():
            return milproto_load.load(
                spec,
                specification_version=spec.specificationVersion,
                file_weights_dir=model.weights_dir or "",
            )

    try:
        return read()
    except Exception as strict_error:  # the reader's checks raise ValueError/AssertionError
        try:
            with _lenient_reader():
                return read()
        except Exception:
            raise ProgramReadError(Path(path), strict_error) from strict_error


@contextlib.contextmanager
def _lenient_reader() -> Iterator[None]:
    """Relax two re-checks of coremltools' MIL reader while it rebuilds a saved program.

    - Type-domain agreement ("input X must have the same data type as input Y"): not enforced.
    - An op whose type inference raises takes the output types the package declares for it.

    Everything else (constness, allowed types, the declared-vs-inferred comparison the reader
    itself makes) stays as it is. Patches coremltools' classes only inside the block.
    """
    from coremltools.converters.mil.frontend.milproto import load as milproto_load
    from coremltools.converters.mil.frontend.milproto.helper import proto_to_types
    from coremltools.converters.mil.mil.input_type import InputSpec
    from coremltools.converters.mil.mil.operation import Operation

    declared: list[Any] = []  # the output types of the op being read
    original_load_op = milproto_load._load_operation
    original_validate = InputSpec.validate_inputs
    original_infer = Operation.type_value_inference

    def load_op(context: Any, op_spec: Any) -> Any:
        declared[:] = [proto_to_types(out.type) for out in op_spec.outputs]
        try:
            return original_load_op(context, op_spec)
        finally:
            declared.clear()

    def validate(self: Any, op_name: str, op_type: str, candidate_kvs: Any) -> Any:
        try:
            return original_validate(self, op_name, op_type, candidate_kvs)
        except ValueError as err:
            if "must have the same data type" not in str(err):
                raise
        # the same checks on copies of the input types without their type-domain groups
        relaxed = copy.copy(self)
        relaxed._ordered_dict = {k: copy.copy(t) for k, t in self.input_types.items()}
        for t in relaxed._ordered_dict.values():
            if hasattr(t, "_type_domain_id"):
                t._type_domain_id = None
        return original_validate(relaxed, op_name, op_type, candidate_kvs)

    def infer(self: Any, overwrite_output: bool = False) -> Any:
        try:
            return original_infer(self, overwrite_output)
        except Exception:
            if not declared or self._output_vars is not None:
                raise
            types = tuple(declared)
            self.type_inference = lambda: types if len(types) > 1 else types[0]
            return original_infer(self, overwrite_output)

    milproto_load._load_operation = load_op
    InputSpec.validate_inputs = validate
    Operation.type_value_inference = infer
    try:
        yield
    finally:
        milproto_load._load_operation = original_load_op
        InputSpec.validate_inputs = original_validate
        Operation.type_value_inference = original_infer


def _tensor_info(feature: Any, array_type_names: Any) -> TensorInfo:
    kind = feature.type.WhichOneof("Type")
    if kind == "multiArrayType":
        arr = feature.type.multiArrayType
        return TensorInfo(
            name=feature.name,
            shape=tuple(int(d) for d in arr.shape),
            dtype=array_type_names.Name(arr.dataType),
        )
    return TensorInfo(name=feature.name, shape=(), dtype=str(kind))


def package_io(path: str | os.PathLike[str]) -> PackageInfo:
    """Read a package's declared inputs, outputs and metadata (no program is built).

    Example: for a classifier exported by :func:`ane_lib.coreml.export` this gives
    ``inputs=(TensorInfo("image", (1, 3, 256, 256), "FLOAT32"),)`` and an output ``"logits"``.
    """
    p = _check_package_path(path)
    model = open_package(p)
    from coremltools.proto import FeatureTypes_pb2

    spec = model.get_spec()
    names = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType
    desc = spec.description
    meta = desc.metadata
    return PackageInfo(
        path=p,
        inputs=tuple(_tensor_info(f, names) for f in desc.input),
        outputs=tuple(_tensor_info(f, names) for f in desc.output),
        specification_version=int(spec.specificationVersion),
        author=meta.author,
        short_description=meta.shortDescription,
        version=meta.versionString,
        user_metadata=dict(meta.userDefined),
    )

"""Run a package with Core ML itself and ask Core ML where each op will run (macOS only).

Everything else in ``ane_lib.coreml`` works on any OS; these two functions need Apple's Core ML
framework, which exists only on Apple platforms (coremltools' ``MLModel.predict`` raises
elsewhere). Off macOS they raise a RuntimeError that says so before touching coremltools.

- :func:`predict_on_device` loads the package with a choice of compute units, e.g.
  ``"cpu_and_ne"`` (CPU and Neural Engine, no GPU), and runs one prediction.
- :func:`compute_plan` (macOS 14.4+) reads Core ML's plan for the package: for every op the
  device it prefers, the devices that could run it, and its estimated share of the run time.
"""

from __future__ import annotations

import os
import platform
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ane_lib._checks import check_choice
from ane_lib.coreml.mil_graph import walk_ops
from ane_lib.coreml.program import import_coremltools, package_io, quiet_coremltools

__all__ = [
    "COMPUTE_UNITS",
    "ComputePlan",
    "OpPlacement",
    "compute_plan",
    "compute_unit",
    "macos_version",
    "predict_on_device",
]

#: Names accepted for ``compute_units``, mapped to ``coremltools.ComputeUnit`` members.
COMPUTE_UNITS = {
    "all": "ALL",
    "cpu_only": "CPU_ONLY",
    "cpu_and_gpu": "CPU_AND_GPU",
    "cpu_and_ne": "CPU_AND_NE",
}

_DTYPES = {"FLOAT16": np.float16, "FLOAT32": np.float32, "DOUBLE": np.float64, "INT32": np.int32}


def macos_version() -> tuple[int, ...]:
    """The running macOS version, e.g. ``(14, 4, 1)``; ``()`` on any other OS."""
    if sys.platform != "darwin":
        return ()
    release = platform.mac_ver()[0]
    return tuple(int(p) for p in release.split(".") if p.isdigit())


def _require_macos(feature: str, minimum: tuple[int, ...] = ()) -> None:
    if sys.platform != "darwin":
        raise RuntimeError(
            f"{feature} needs macOS: Core ML runs only on Apple platforms, this is "
            f"{sys.platform!r}. On other systems use ane_lib.coreml.run (reference executor) "
            "and ane_lib.coreml.report (ANE check) instead."
        )
    if minimum and macos_version() < minimum:
        want = ".".join(str(v) for v in minimum)
        have = ".".join(str(v) for v in macos_version()) or "unknown"
        raise RuntimeError(f"{feature} needs macOS {want} or later, this is macOS {have}")


def compute_unit(name: str) -> Any:
    """Map ``"all" | "cpu_only" | "cpu_and_gpu" | "cpu_and_ne"`` to ``coremltools.ComputeUnit``."""
    check_choice("compute_units", name, tuple(COMPUTE_UNITS))
    ct = import_coremltools()
    return getattr(ct.ComputeUnit, COMPUTE_UNITS[name])


def predict_on_device(
    path: str | os.PathLike[str],
    inputs: Mapping[str, np.ndarray],
    compute_units: str = "cpu_and_ne",
) -> dict[str, np.ndarray]:
    """Run one Core ML prediction of the package at ``path`` (macOS only).

    ``inputs`` maps each declared input name to an array of the declared shape, e.g.
    ``{"image": x}`` with ``x: (1, 3, 256, 256)``; arrays are cast to the declared element type
    (fp16 for packages written by :func:`ane_lib.coreml.export`). Returns ``{output name:
    array}``. ``compute_units="cpu_and_ne"`` lets Core ML use the Neural Engine and the CPU only.
    """
    _require_macos("predict_on_device")
    unit = compute_unit(compute_units)
    info = package_io(path)
    declared = {t.name: t for t in info.inputs}
    if set(inputs) != set(declared):
        raise ValueError(
            f"inputs must have exactly the keys {sorted(declared)}, got {sorted(inputs)}"
        )
    feed: dict[str, np.ndarray] = {}
    for name, tensor in declared.items():
        array = np.asarray(inputs[name])
        if tensor.shape and tuple(array.shape) != tensor.shape:
            raise ValueError(
                f"inputs[{name!r}] must have shape {tensor.shape}, got {tuple(array.shape)}"
            )
        feed[name] = array.astype(_DTYPES.get(tensor.dtype, np.float32), copy=False)
    ct = import_coremltools()
    with quiet_coremltools():
        model = ct.models.MLModel(str(path), compute_units=unit)
        outputs = model.predict(feed)
    return {k: np.asarray(v) for k, v in outputs.items()}


@dataclass(frozen=True)
class OpPlacement:
    """Core ML's plan for one op: ``preferred`` device, ``supported`` devices, estimated ``cost``.

    Devices are ``"CPU"``, ``"GPU"`` or ``"ANE"``; ``cost`` is the op's estimated share of the
    whole prediction in [0, 1] (``None`` when Core ML gives no estimate, e.g. on Intel Macs).
    """

    name: str
    op_type: str
    preferred: str
    supported: tuple[str, ...]
    cost: float | None


@dataclass(frozen=True)
class ComputePlan:
    """The per-op device plan of a package for a choice of compute units."""

    compute_units: str
    ops: tuple[OpPlacement, ...]

    def device_counts(self) -> dict[str, int]:
        """Number of ops per preferred device, e.g. ``{"ANE": 590, "CPU": 4}``."""
        return dict(Counter(op.preferred for op in self.ops))

    def cost_share(self, device: str) -> float:
        """Summed estimated cost of the ops preferring ``device`` (0 when no costs are known)."""
        return float(sum(op.cost or 0.0 for op in self.ops if op.preferred == device))

    def off_device(self, device: str = "ANE") -> tuple[OpPlacement, ...]:
        """The ops that do not prefer ``device`` (by default: those that fall back off the ANE)."""
        return tuple(op for op in self.ops if op.preferred != device)

    def __str__(self) -> str:
        lines = [f"compute plan ({self.compute_units}): {len(self.ops)} ops"]
        for device, count in sorted(self.device_counts().items()):
            lines.append(f"  {device:<4} {count:>5} ops, cost share {self.cost_share(device):.1%}")
        for op in self.off_device():
            lines.append(f"  not on ANE: {op.name} ({op.op_type}) -> {op.preferred}")
        return "\n".join(lines)


def _device_name(device: Any) -> str:
    from coremltools.models.compute_device import (
        MLCPUComputeDevice,
        MLGPUComputeDevice,
        MLNeuralEngineComputeDevice,
    )

    if isinstance(device, MLNeuralEngineComputeDevice):
        return "ANE"
    if isinstance(device, MLGPUComputeDevice):
        return "GPU"
    if isinstance(device, MLCPUComputeDevice):
        return "CPU"
    return type(device).__name__


def compute_plan(path: str | os.PathLike[str], compute_units: str = "cpu_and_ne") -> ComputePlan:
    """Core ML's device plan for every op of the package at ``path`` (macOS 14.4 or later).

    Constants are left out (they run nowhere); every other op of the ``main`` function,
    including ops in nested blocks, is listed in program order.
    """
    _require_macos("compute_plan", (14, 4))
    unit = compute_unit(compute_units)
    package_io(path)  # clear errors for a missing or wrong path
    ct = import_coremltools()
    from coremltools.models.compute_plan import MLComputePlan

    with quiet_coremltools():
        # The plan is read from the compiled model, which lives as long as ``model`` does.
        model = ct.models.MLModel(str(path), compute_units=unit)
        plan = MLComputePlan.load_from_path(model.get_compiled_model_path(), compute_units=unit)
    program = plan.model_structure.program
    if program is None:
        raise ValueError(f"path {str(path)!r} is not an ML program (expected an mlProgram model)")
    ops: list[OpPlacement] = []
    for op in walk_ops(program.functions["main"].block):
        if op.operator_name == "const":
            continue
        usage = plan.get_compute_device_usage_for_mlprogram_operation(op)
        if usage is None:
            continue
        cost = plan.get_estimated_cost_for_mlprogram_operation(op)
        ops.append(
            OpPlacement(
                name=op.outputs[0].name if op.outputs else "",
                op_type=op.operator_name,
                preferred=_device_name(usage.preferred_compute_device),
                supported=tuple(_device_name(d) for d in usage.supported_compute_devices),
                cost=None if cost is None else float(cost.weight),
            )
        )
    return ComputePlan(compute_units=compute_units, ops=tuple(ops))

"""The ``ane-lib`` command: export a model, report on a package, verify a package.

    ane-lib export tiny_moat_1 --image-size 256 --pe lepe --attention local --window 8 \\
        -o tiny_moat_1.mlpackage [--form standard] [--overwrite]
    ane-lib export tiny_moat_1 --target coreai -o tiny_moat_1.aimodel
    ane-lib report tiny_moat_1.mlpackage [--json] [--fail-on error|warning|cost] [--top N]
    ane-lib verify tiny_moat_1.mlpackage [--model tiny_moat_1 ...] [--seed N]
    ane-lib verify text.mlpackage --model my_project.models:build_model
    ane-lib verify swin.mlpackage --model "ane_lib.zoo:build('swin_tiny', tiny=True)"

Targets: ``export --target coreml`` (the default) writes a Core ML package (``.mlpackage``),
``--target coreai`` a Core AI program (``.aimodel``, needs the ``[coreai]`` extra); ``report``
and ``verify`` take either, by its suffix (a Core AI program is run by Apple's runtime).

Exit status: 0 success, 1 a check failed (verification below threshold, a rule of the report at
``--fail-on`` severity or worse, a conversion failure), 2 bad usage or bad input. Errors are one
line on stderr, no traceback.

Form: ``export`` builds the model in the Neural Engine's form (``--form ane``, the default),
whose package has fewer layout ops and less 64-byte padding than the paper's standard form
(``--form standard``); both forms compute the same function with the same weights.

Choices: the model names, forms, position embeddings and attention kinds offered here are read
from the registry of :mod:`ane_lib.models.registry`, so a registered model is exported like the
built-in ones.

Weights: ``export`` builds the model with ``torch.manual_seed(seed)`` (``--seed``, default 0)
unless ``--weights state_dict.pt`` is given, and records the model name, its options and that
seed (or the weights file and its SHA-256) in the package metadata. ``verify`` reads them back,
so ``ane-lib verify PKG`` rebuilds the very model that was exported; any option given on the
command line overrides the recorded one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from ane_lib._warnings import quiet_library_warnings
from ane_lib.models.registry import FORMS, families, list_models, option_choices
from ane_lib.precision import PRECISIONS

__all__ = ["main", "build_parser", "UsageError"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: The form ``export`` builds unless told otherwise: the Neural Engine's.
DEFAULT_EXPORT_FORM = "ane"

# Model options forwarded to ane_lib.models.create_model when given on the command line.
_MODEL_OPTIONS = ("form", "pe", "attention", "window", "image_size", "num_classes")


class UsageError(Exception):
    """Bad usage or bad input: reported in one line, exit status 2."""


class CheckFailedError(Exception):
    """A conversion or a check failed: reported in one line, exit status 1."""


#: Export targets: the library that writes each and the suffix of what it writes.
TARGETS = {"coreml": ".mlpackage", "coreai": ".aimodel"}


def _is_coreai(path: Path) -> bool:
    return path.suffix == TARGETS["coreai"]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _choices_by_family(option: str) -> str:
    """E.g. ``"DeiT: absolute; MOAT: rpe, single_rpe, lepe, none"``, from the registry."""
    parts = []
    for config_class in families():
        choices = option_choices(option, config_class)
        if choices:
            family = config_class.__name__.removesuffix("Config")
            parts.append(f"{family}: {', '.join(map(str, choices))}")
    return "; ".join(parts)


def _add_model_options(p: argparse.ArgumentParser, *, for_verify: bool) -> None:
    default_note = " (default: as recorded in the package)" if for_verify else ""
    p.add_argument(
        "--form",
        choices=FORMS,
        help="model layout: ane (the Neural Engine's) or standard (the paper's)"
        + (default_note or f" (default: {DEFAULT_EXPORT_FORM})"),
    )
    p.add_argument(
        "--pe",
        choices=option_choices("pe"),
        help=f"position embedding: {_choices_by_family('pe')}{default_note}",
    )
    p.add_argument(
        "--attention",
        choices=option_choices("attention"),
        help=f"attention kind: {_choices_by_family('attention')}{default_note}",
    )
    p.add_argument("--window", type=int, help=f"local attention window size{default_note}")
    p.add_argument("--num-classes", type=int, help=f"number of classes{default_note}")
    p.add_argument(
        "--weights",
        type=Path,
        help="a state_dict saved with torch.save; without it the weights are seed-initialised",
    )
    p.add_argument(
        "--seed",
        type=int,
        help="seed of the weight initialisation (torch.manual_seed before create_model); "
        + ("default: the seed recorded by export" if for_verify else "default 0"),
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ane-lib`` (subcommands ``export``, ``report``, ``verify``)."""
    parser = _Parser(
        prog="ane-lib",
        description="Export PyTorch models to Core ML for the Apple Neural Engine, report on "
        "the packages and verify them against PyTorch.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    names = ", ".join(list_models())
    exp = sub.add_parser(
        "export",
        help="export a registered model to an fp16 .mlpackage (in the Neural Engine's form)",
        description="Build a registered model (in the Neural Engine's form unless --form "
        "standard is given), export it to an fp16 ML program and record how it was built.",
    )
    exp.add_argument("model", help=f"model name, one of: {names}")
    _add_model_options(exp, for_verify=False)
    exp.add_argument("--image-size", type=int, default=256, help="input height = width (256)")
    exp.add_argument("--batch", type=int, default=1, help="batch size baked into the package (1)")
    exp.add_argument(
        "--target",
        choices=tuple(TARGETS),
        default="coreml",
        help="coreml: a Core ML .mlpackage (default); coreai: a Core AI .aimodel",
    )
    exp.add_argument(
        "-o", "--output", type=Path, required=True, help="destination .mlpackage or .aimodel"
    )
    exp.add_argument("--overwrite", action="store_true", help="replace an existing package")
    exp.add_argument("--quiet", action="store_true", help="no progress lines")

    rep = sub.add_parser("report", help="check a package against the Neural Engine's rules")
    rep.add_argument("path", type=Path, help="a saved .mlpackage or .aimodel")
    rep.add_argument("--json", action="store_true", help="print the report as JSON")
    rep.add_argument(
        "--fail-on",
        choices=("error", "warning", "cost"),
        default="warning",
        help="exit 1 when a rule of this severity or worse fires (default: warning)",
    )
    rep.add_argument("--top", type=int, default=10, help="rows of the worst-ops table (10)")

    ver = sub.add_parser("verify", help="run a package and its PyTorch model on the same inputs")
    ver.add_argument("path", type=Path, help="a saved .mlpackage or .aimodel")
    ver.add_argument(
        "--model",
        help=f"model name, one of: {names} (default: as recorded in the package), or "
        "module:function, a Python function that returns the PyTorch model (e.g. a Hugging "
        "Face model built in your code), called without arguments or with the literal ones "
        "given: module:function('name', size=64)",
    )
    _add_model_options(ver, for_verify=True)
    ver.add_argument("--image-size", type=int, help="(default: as recorded in the package)")
    ver.add_argument("--samples", type=int, default=2, help="number of random inputs (2)")
    ver.add_argument("--input-seed", type=int, default=0, help="seed of the first input (0)")
    ver.add_argument(
        "--mode",
        help="how the executor stores float values: declared (default: as the package types "
        "each one), neural_engine_fp16 (all fp16), fp32_reference (all fp32); a .aimodel "
        "runs in Apple's runtime, in the precision it was exported in",
    )
    ver.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="earlier name: fp16 = neural_engine_fp16, fp32 = fp32_reference",
    )
    ver.add_argument("--min-psnr", type=float, default=40.0, help="PSNR threshold in dB (40)")
    ver.add_argument(
        "--min-top1", type=float, default=1.0, help="minimum top-1 agreement, 0..1 (1.0)"
    )
    ver.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser


# --------------------------------------------------------------------------- helpers


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _build_model(name: str, options: dict[str, Any], seed: int, weights: Path | None) -> Any:
    """``create_model(name, **options)`` after ``torch.manual_seed(seed)``, then load weights."""
    import torch

    from ane_lib.models import create_model

    if name not in list_models():
        raise UsageError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    torch.manual_seed(seed)
    try:
        model = create_model(name, **options)
    except (ValueError, TypeError) as err:
        raise UsageError(f"cannot build {name} with {options}: {err}") from err
    if weights is not None:
        if not weights.is_file():
            raise UsageError(f"--weights {str(weights)!r} is not a file")
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as err:
            raise UsageError(
                f"--weights {str(weights)!r} does not fit {name}: {str(err).splitlines()[0]}"
            ) from err
    return model.eval()


def _parse_entry_point(entry_point: str) -> tuple[str, str, list[Any], dict[str, Any]]:
    """``"pkg.mod:build"`` or ``"pkg.mod:build('swin', tiny=True)"`` -> (module, function,
    args, kwargs); the arguments must be Python literals (no code is run to read them)."""
    import ast

    module_name, _, call = entry_point.partition(":")
    function_name, paren, _ = call.partition("(")
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    if paren:
        try:
            node = ast.parse(call.strip(), mode="eval").body
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                raise ValueError("not a call of a function name")
            args = [ast.literal_eval(a) for a in node.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
            if len(kwargs) != len(node.keywords):
                raise ValueError("**kwargs is not allowed")
        except (SyntaxError, ValueError) as err:
            raise UsageError(
                f"--model {entry_point!r}: expected module:function or "
                f"module:function(literal arguments), e.g. \"ane_lib.zoo:build('resnet50', "
                f'tiny=True)" ({err})'
            ) from err
    if not module_name or not function_name.strip().isidentifier():
        raise UsageError(f"--model {entry_point!r}: expected module:function")
    return module_name, function_name.strip(), args, kwargs


def _model_from_entry_point(entry_point: str) -> Any:
    """The model returned by ``module:function`` (called without arguments) or
    ``module:function(args)`` (literal arguments), in eval mode."""
    import importlib

    import torch

    module_name, function_name, args, kwargs = _parse_entry_point(entry_point)
    try:
        factory = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as err:
        raise UsageError(
            f"--model {entry_point!r}: cannot import {function_name!r}: {err}"
        ) from err
    try:
        model = factory(*args, **kwargs)
    except (TypeError, ValueError) as err:
        raise UsageError(f"--model {entry_point!r} failed: {err}") from err
    if not isinstance(model, torch.nn.Module):
        raise UsageError(
            f"--model {entry_point!r} returned a {type(model).__name__}, not a torch.nn.Module"
        )
    return model.eval()


def _given_options(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in _MODEL_OPTIONS if getattr(args, k, None) is not None}


def _check_ints(args: argparse.Namespace, names: Sequence[str]) -> None:
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < (0 if name in ("seed", "input_seed") else 1):
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} must be >= {0 if 'seed' in name else 1}, got {value}")


# --------------------------------------------------------------------------- subcommands


def _cmd_export(args: argparse.Namespace) -> int:
    from ane_lib._export import ExportError  # CoreAIExportError is one too
    from ane_lib.coreai import export as export_coreai
    from ane_lib.coreml.export import export as export_coreml

    _check_ints(args, ("window", "num_classes", "image_size", "batch", "seed"))
    output: Path = args.output
    suffix = TARGETS[args.target]
    if output.suffix != suffix:
        raise UsageError(
            f"-o/--output must end in {suffix} for --target {args.target}, got {str(output)!r}"
        )
    export = export_coreai if args.target == "coreai" else export_coreml
    if output.exists() and not args.overwrite:
        raise UsageError(f"{str(output)!r} already exists; add --overwrite to replace it")
    options = {"form": DEFAULT_EXPORT_FORM, **_given_options(args)}
    seed = 0 if args.seed is None else args.seed
    model = _build_model(args.model, options, seed, args.weights)
    weights: dict[str, Any] = {"seed": seed}
    if args.weights is not None:
        weights = {"file": str(args.weights), "sha256": _sha256(args.weights)}
    shape = (args.batch, 3, args.image_size, args.image_size)
    try:
        path = export(
            model,
            shape,
            output,
            overwrite=args.overwrite,
            name=args.model,
            metadata={"create_options": options, "weights": weights},
            progress=not args.quiet,
        )
    except ExportError as err:
        raise CheckFailedError(str(err)) from err
    except (ValueError, TypeError, FileExistsError, ImportError) as err:
        raise UsageError(str(err)) from err
    print(path)
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    """Print the report; exit 1 when a rule of severity ``--fail-on`` or worse fires."""
    from ane_lib.coreai.report import report as report_coreai
    from ane_lib.coreml.report import report as report_coreml

    _check_ints(args, ("top",))
    path = _existing_package(args.path)
    try:
        rep = report_coreai(path) if _is_coreai(path) else report_coreml(path)
    except ImportError as err:
        raise UsageError(str(err)) from err
    if args.json:
        print(json.dumps(rep.to_dict(top=args.top), indent=2, sort_keys=True, default=str))
    else:
        print(rep.format(top=args.top))
    return EXIT_FAILED if rep.failed(args.fail_on) else EXIT_OK


def _existing_package(path: Path) -> Path:
    from ane_lib.coreai.export import check_asset_path
    from ane_lib.coreml.program import open_package

    try:
        if _is_coreai(path):
            check_asset_path(path)
        else:
            open_package(path)
    except ValueError as err:
        raise UsageError(str(err)) from err
    return path


def _recorded(meta: dict[str, Any], path: Path) -> tuple[str | None, dict[str, Any], Any]:
    name = meta.get("model")
    options = meta.get("create_options")
    weights = meta.get("weights")
    if not isinstance(options, dict):
        options = {}
    if name is not None and not isinstance(name, str):
        raise UsageError(f"{str(path)!r}: recorded model name {name!r} is not a string")
    return name, dict(options), weights


def _cmd_verify(args: argparse.Namespace) -> int:
    from ane_lib.coreai import read_export_metadata as read_coreai_metadata
    from ane_lib.coreai import verify as verify_coreai
    from ane_lib.coreml.export import read_export_metadata
    from ane_lib.coreml.verification import verify

    _check_ints(args, ("window", "num_classes", "image_size", "seed", "samples", "input_seed"))
    if not 0.0 <= args.min_top1 <= 1.0:
        raise UsageError(f"--min-top1 must be between 0 and 1, got {args.min_top1}")
    from ane_lib.coreml.executor import resolve_mode

    try:
        mode = resolve_mode(args.mode, args.precision)  # before the model is built
    except ValueError as err:
        raise UsageError(str(err)) from err
    path = _existing_package(args.path)
    coreai = _is_coreai(path)
    try:
        meta = read_coreai_metadata(path) if coreai else read_export_metadata(path)
    except ImportError as err:
        raise UsageError(str(err)) from err
    name, options, weights = _recorded(meta, path)
    if args.model is None and isinstance(meta.get("entry_point"), str):
        # the package says how its model is rebuilt; running it stays the user's decision
        raise UsageError(
            f"{str(path)!r} was exported from a model built by Python code; pass "
            f'--model "{meta["entry_point"]}" (recorded at export) or your own module:function'
        )
    name = args.model or name
    if name is None:
        raise UsageError(f"{str(path)!r} records no model name; pass --model NAME")
    options.update(_given_options(args))
    weights_file: Path | None = args.weights
    seed = args.seed
    if seed is None and weights_file is None:
        if isinstance(weights, dict) and "seed" in weights:
            seed = int(weights["seed"])
        elif isinstance(weights, dict) and "file" in weights:
            raise UsageError(
                f"{str(path)!r} was exported from weights file {weights['file']!r}; "
                "pass --weights FILE"
            )
        else:
            seed = 0
    if ":" in name:
        model = _model_from_entry_point(name)
    else:
        model = _build_model(name, options, 0 if seed is None else seed, weights_file)
    try:
        if coreai:
            result = verify_coreai(path, model, samples=args.samples, seed=args.input_seed)
        else:
            result = verify(
                path,
                model,
                samples=args.samples,
                seed=args.input_seed,
                mode=mode,
            )
    except ValueError as err:
        raise UsageError(str(err)) from err
    ok = result.passed(args.min_psnr, args.min_top1)
    if args.json:
        figures = result.to_dict() | {
            "model": name,
            "options": options,
            "weights": str(weights_file) if weights_file else {"seed": seed},
            "min_psnr": args.min_psnr,
            "min_top1": args.min_top1,
            "passed": ok,
        }
        figures = {
            k: (str(v) if isinstance(v, float) and math.isinf(v) else v) for k, v in figures.items()
        }
        print(json.dumps(figures, indent=2, sort_keys=True))
    else:
        if ":" in name:  # a model built by the user's code: nothing else to say
            print(name)
        else:
            source = f"weights {weights_file}" if weights_file else f"seed {seed}"
            print(f"{name} {options} ({source})")
        print(f"executor mode   {result.mode}")
        print(f"PSNR            {result.psnr_db:8.2f} dB   (threshold {args.min_psnr:g} dB)")
        print(f"max abs error   {result.max_abs_error:11.4g}")
        print(f"max rel error   {result.max_rel_error:11.4g}")
        print(f"top-1 agreement {result.top1_agreement:8.0%}      (threshold {args.min_top1:.0%})")
        for output, per_output in result.outputs.items():
            print(f"  {output}: {per_output.psnr_db:.2f} dB, top-1 {per_output.top1_agreement:.0%}")
        print("PASS" if ok else "FAIL")
    return EXIT_OK if ok else EXIT_FAILED


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


_COMMANDS = {"export": _cmd_export, "report": _cmd_report, "verify": _cmd_verify}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ane-lib``; returns the exit status (0 ok, 1 check failed, 2 usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0) or a usage error (2), already printed
        return int(stop.code or 0)
    try:
        with quiet_library_warnings():
            return _COMMANDS[args.command](args)
    except UsageError as err:
        print(f"ane-lib {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except CheckFailedError as err:
        print(f"ane-lib {args.command}: failed: {_one_line(err)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"ane-lib {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # an unexpected failure: still one line, unless debugging
        if os.environ.get("ANE_LIB_DEBUG"):
            raise
        first = (str(err).strip().splitlines() or [""])[0]
        print(
            f"ane-lib {args.command}: failed: {type(err).__name__}: {first} "
            "(set ANE_LIB_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The registry of model families, named models and conversions between forms.

Every fact about which models exist lives here, written by one call per fact, in the style of
timm's ``register_model`` / ``create_model``:

* a **family** is a config class (a frozen dataclass that validates its fields when made) and
  the ``nn.Module`` class that builds it in each form, ``"standard"`` (the paper's layout) and
  ``"ane"`` (the Neural Engine's): :func:`register_family`. Both classes take the config as
  their only argument, keep it as ``.config``, and load each other's state dicts, so
  :func:`to_ane` / :func:`to_standard` convert any member of the family by rebuilding the twin
  from ``model.config`` and loading the state dict;
* a **model** is a name bound to a family's config class, with the config fields the name fixes
  (its architecture) and its own defaults for the others: :func:`register_model`. The fields it
  does not fix are the keyword options of :func:`create_model` and :func:`create_config`;
* a **conversion** turns a module of a given type into the other form: :func:`register_conversion`.
  Families get theirs from :func:`register_family`; other types (torch's transformer layers, a
  Hugging Face model) register a function.

:func:`list_models`, :func:`create_config`, :func:`create_model`, :func:`build_model`,
:func:`config_from_dict`, :func:`to_ane`, :func:`to_standard`, :func:`option_choices` and the
``ane-lib`` command all read these tables. The families of this package register themselves
when :mod:`ane_lib.models` is imported (:mod:`ane_lib.models.moat`, :mod:`ane_lib.models.deit`).

Worked example: adding models
-----------------------------

A new model of an existing family is one call. Chapter 9's small MOAT for 10 classes at
32 x 32, whose stem, depths and widths are fixed by its name and whose image size and class
count are its own defaults (a caller may still change those), is registered this way in
:mod:`ane_lib.models.moat` (with a relative position bias and global attention as defaults too)::

    from ane_lib.models import MOATConfig, create_model, register_model, to_ane

    register_model(
        "digits_moat",
        MOATConfig,
        fixed={"stem_sizes": (16, 16), "depths": (1, 1, 1, 1),
               "hidden_sizes": (32, 32, 64, 64)},
        defaults={"image_size": (32, 32), "num_classes": 10, "pe": "rpe",
                  "attention": "global"},
        description="digits_moat: a reduced MOAT for scikit-learn's digits (chapter 9)",
    )
    model = create_model("digits_moat", pe="lepe")   # image_size=32, num_classes=10
    ane = to_ane(model)                               # the family's conversion
    "digits_moat" in list_models()                    # and `ane-lib export digits_moat ...`
    create_model("digits_moat", image_size=64, attention="local", window=2)  # defaults only

A new family is a config dataclass, a class per form and one :func:`register_family` call.
Fields typed with a ``Literal`` are checked against it (call
:func:`ane_lib._checks.check_literal_fields` in ``__post_init__``) and their values are the
choices :func:`option_choices` and the command line offer::

    @dataclass(frozen=True)
    class MixerConfig:
        name: str
        width: int                                   # fixed by each registered model
        image_size: tuple[int, int] = (32, 32)       # options, with their defaults
        num_classes: int = 10
        pe: Literal["none"] = "none"

        def __post_init__(self) -> None:
            check_literal_fields(self)

    class Mixer(nn.Module):        # form "standard"; MixerANE likewise, form "ane"
        form = "standard"
        def __init__(self, config: MixerConfig) -> None: ...

    register_family(MixerConfig, standard=Mixer, ane=MixerANE)
    register_model("mixer_s", MixerConfig, fixed={"width": 64})

A module type from elsewhere is made convertible by registering a function, from the module
that defines the conversion (no edit here). A type whose package is optional is named by its
qualified name, so that nothing is imported until such a model is converted::

    @register_conversion(torch.nn.TransformerEncoderLayer)
    def _encoder_layer_to_ane(layer: nn.Module) -> nn.Module: ...

    @register_conversion("transformers.models.distilbert.modeling_distilbert.DistilBertModel")
    def _distilbert_to_ane(model: nn.Module) -> nn.Module: ...

Registering a name or a family again with the same content, or a conversion with the same
function object, does nothing (a re-executed notebook cell registering a model is harmless);
anything different raises a ValueError unless ``overwrite=True`` (a conversion defined in a
re-executed cell is a new function: pass ``overwrite=True`` there).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import torch
from torch import nn

from ane_lib._checks import check_choice

__all__ = [
    "FORMS",
    "Form",
    "RegisteredModel",
    "build_model",
    "config_from_dict",
    "count_parameters",
    "create_config",
    "create_model",
    "families",
    "list_models",
    "model_accepts",
    "model_entry",
    "option_choices",
    "register_conversion",
    "register_family",
    "register_model",
    "to_ane",
    "to_standard",
]

Form = Literal["standard", "ane"]
"""``"standard"``: the paper's layout in PyTorch idiom; ``"ane"``: the Neural Engine's layout."""
FORMS: tuple[Form, ...] = get_args(Form)

Converter = Callable[[Any], nn.Module]  # takes an instance of the type it is registered for
_ConverterT = TypeVar("_ConverterT", bound=Converter)

# config class -> {form: module class}
_FAMILIES: dict[type, Mapping[str, type[nn.Module]]] = {}
# model name -> its registration
_MODELS: dict[str, RegisteredModel] = {}
# form -> {source type, or its qualified name: converter}
_CONVERSIONS: dict[str, dict[type | str, Converter]] = {form: {} for form in FORMS}


@dataclass(frozen=True)
class RegisteredModel:
    """One name of :func:`list_models`: the family's config class and what the name sets.

    Attributes:
        name: the model's name, passed to the config as ``name``.
        config_class: the family's config class.
        fixed: config fields the name fixes (its architecture); not options.
        defaults: the name's own defaults for some options (the others keep the config
            class's defaults).
        description: one line for listings.
    """

    name: str
    config_class: type
    fixed: Mapping[str, Any]
    defaults: Mapping[str, Any]
    description: str = ""

    @property
    def options(self) -> dict[str, Any]:
        """The keyword options :func:`create_model` accepts for this name, with their defaults."""
        out: dict[str, Any] = {}
        for f in _init_fields(self.config_class):
            if f.name == "name" or f.name in self.fixed:
                continue
            if f.name in self.defaults:
                out[f.name] = self.defaults[f.name]
            elif f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
        return out

    def config(self, **options: Any) -> Any:
        """The config of this model with ``options`` (checked) over its defaults."""
        allowed = self.options
        for key, value in options.items():
            if key in allowed:
                continue
            if key in self.fixed or key == "name":
                raise ValueError(
                    f"{key}={value!r} is fixed by the model {self.name!r} "
                    f"({key}={self.fixed.get(key, self.name)!r}); register another model "
                    "(ane_lib.models.register_model) for another architecture"
                )
            raise ValueError(
                f"{key}={value!r} is not an option of {self.name!r} (a "
                f"{self.config_class.__name__}); its options are {sorted(allowed)}"
            )
        return self.config_class(name=self.name, **self.fixed, **{**self.defaults, **options})


# --------------------------------------------------------------------------- registration


def _init_fields(config_class: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(config_class) if f.init]


def _check_config_class(config_class: object) -> type:
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)):
        raise TypeError(f"config_class must be a dataclass type, got {config_class!r}")
    if "name" not in {f.name for f in _init_fields(config_class)}:
        raise ValueError(
            f"config_class {config_class.__name__} must have a 'name' field (the registry "
            "passes the model's name)"
        )
    return config_class


def _store(table: dict[Any, Any], key: Any, value: Any, what: str, overwrite: bool) -> None:
    """``table[key] = value``, refusing to replace a different value unless ``overwrite``."""
    if key in table and table[key] != value and not overwrite:
        raise ValueError(
            f"{what} is already registered differently; pass overwrite=True to replace it"
        )
    table[key] = value


def register_family(
    config_class: type,
    *,
    standard: type[nn.Module],
    ane: type[nn.Module],
    overwrite: bool = False,
) -> None:
    """Register a family: ``config_class`` is built as ``standard`` or ``ane``.

    Both classes take an instance of ``config_class`` as their one argument and keep it as
    ``.config``; each loads the other's state dict. :func:`to_ane` and :func:`to_standard` then
    convert instances of either class (and of their subclasses).

    Args:
        config_class: a dataclass with a ``name`` field, validating itself in
            ``__post_init__``.
        standard, ane: the ``nn.Module`` classes of the two forms.
        overwrite: replace a different registration of ``config_class``.
    """
    _check_config_class(config_class)
    classes = {"standard": standard, "ane": ane}
    for form, cls in classes.items():
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(f"{form} must be an nn.Module subclass, got {cls!r}")
    _store(
        _FAMILIES,
        config_class,
        MappingProxyType(classes),
        f"the family of {config_class.__name__}",
        overwrite,
    )
    for cls in classes.values():
        for form in FORMS:
            _store(
                _CONVERSIONS[form],
                cls,
                _FAMILY_CONVERTERS[form],
                f"a conversion of {cls.__name__} to form {form!r}",
                overwrite,
            )


def register_model(
    name: str,
    config_class: type,
    *,
    fixed: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    description: str = "",
    overwrite: bool = False,
) -> RegisteredModel:
    """Register ``name`` for :func:`create_model`: a config of ``config_class`` with ``fixed``.

    Args:
        name: the model's name (a Python identifier, e.g. ``"tiny_moat_1"``).
        config_class: a config class registered with :func:`register_family`.
        fixed: config fields this name fixes (e.g. depths and widths); ``create_model`` refuses
            them as options.
        defaults: this name's defaults for other fields (e.g. ``num_classes=10``); callers may
            override them.
        description: one line for listings.
        overwrite: replace a different registration of ``name``.

    Returns:
        The :class:`RegisteredModel`. Its default config is built once here, so a registration
        that does not make a valid model fails at once, with the config's own message.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be a Python identifier such as 'tiny_moat_1', got {name!r}")
    _check_config_class(config_class)
    if config_class not in _FAMILIES:
        raise ValueError(
            f"config_class {config_class.__name__} is not a registered family; register it "
            f"first with register_family (registered: {_family_names()})"
        )
    fixed = dict(fixed or {})
    defaults = dict(defaults or {})
    fields = {f.name for f in _init_fields(config_class)} - {"name"}
    for arg, values in (("fixed", fixed), ("defaults", defaults)):
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(
                f"{arg} names {unknown}, which are not fields of {config_class.__name__}; "
                f"its fields are {sorted(fields)}"
            )
    both = sorted(set(fixed) & set(defaults))
    if both:
        raise ValueError(f"{both} cannot be both fixed and defaults")
    entry = RegisteredModel(
        name, config_class, MappingProxyType(fixed), MappingProxyType(defaults), description
    )
    missing = sorted(fields - set(fixed) - set(entry.options))
    if missing:
        raise ValueError(
            f"{config_class.__name__} has no default for {missing}: fix them or give them "
            f"defaults in the registration of {name!r}"
        )
    entry.config()  # a registration that cannot build its default model fails here
    _store(_MODELS, name, entry, f"the model {name!r}", overwrite)
    return entry


def register_conversion(
    source: type[nn.Module] | str, *, to: Form = "ane", overwrite: bool = False
) -> Callable[[_ConverterT], _ConverterT]:
    """Decorator: ``to_ane(model)`` (or ``to_standard``) calls the function for ``source``.

    Args:
        source: the module type converted, or its qualified name
            (``"package.module.ClassName"``) when its package is an optional dependency.
            Subclasses are converted by the same function unless they have their own.
        to: the form the function produces, ``"ane"`` (default) or ``"standard"``.
        overwrite: replace a different function registered for ``source``.

    The function takes the module and returns a new module with the same call signature and
    outputs; it must not modify its argument.
    """
    check_choice("to", to, FORMS)
    if isinstance(source, str):
        if "." not in source or not all(part.isidentifier() for part in source.split(".")):
            raise ValueError(
                f"source must be a qualified class name such as 'package.module.Class', "
                f"got {source!r}"
            )
    elif not (isinstance(source, type) and issubclass(source, nn.Module)):
        raise TypeError(
            f"source must be an nn.Module subclass or its qualified name, got {source!r}"
        )

    def register(function: _ConverterT) -> _ConverterT:
        if not callable(function):
            raise TypeError(f"a conversion must be callable, got {function!r}")
        what = f"a conversion of {_type_name(source)} to form {to!r}"
        _store(_CONVERSIONS[to], source, function, what, overwrite)
        return function

    return register


# --------------------------------------------------------------------------- lookups


def _family_names() -> list[str]:
    return [cls.__name__ for cls in _FAMILIES]


def families() -> list[type]:
    """The registered config classes, in registration order."""
    return list(_FAMILIES)


def _type_name(key: type | str) -> str:
    return key if isinstance(key, str) else key.__name__


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def list_models(pattern: str | Sequence[str] = "*") -> list[str]:
    """The names :func:`create_model` accepts, sorted; ``pattern`` filters them (``fnmatch``
    wildcards, e.g. ``"tiny_moat_*"``, or a list of patterns)."""
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    return sorted(n for n in _MODELS if any(fnmatch.fnmatchcase(n, p) for p in patterns))


def model_entry(name: str) -> RegisteredModel:
    """The registration of ``name``: its config class, fixed fields, defaults and options."""
    check_choice("name", name, list_models())
    return _MODELS[name]


def option_choices(option: str, config_class: type | None = None) -> tuple[Any, ...]:
    """The allowed values of ``option`` across the registered families, in registration order.

    Read from the ``Literal`` annotations of the config classes (e.g. ``"pe"`` gives DeiT's
    ``"absolute"`` and MOAT's ``"rpe", "single_rpe", "lepe", "none"``); ``()`` when no family
    types ``option`` with a ``Literal``. With ``config_class``, that family's alone.
    """
    choices: dict[Any, None] = {}
    for family in _FAMILIES if config_class is None else [config_class]:
        hint = get_type_hints(family).get(option)
        if get_origin(hint) is Literal:
            choices.update(dict.fromkeys(get_args(hint)))
    return tuple(choices)


def _family_of(config: object) -> Mapping[str, type[nn.Module]]:
    for cls in type(config).__mro__:
        if cls in _FAMILIES:
            return _FAMILIES[cls]
    raise TypeError(
        f"config must be the config of a registered family ({', '.join(_family_names())}), "
        f"got {type(config).__name__}"
    )


# --------------------------------------------------------------------------- building


def create_config(name: str, **options: Any) -> Any:
    """The validated config :func:`create_model` builds from (same options, no weights).

    An option given as ``None`` takes the model's default. An option the model does not have
    (or fixes) raises a ValueError listing its options; a bad value raises the config's own
    ValueError, naming the option, the value and what is allowed.
    """
    entry = model_entry(name)
    return entry.config(**{k: v for k, v in options.items() if v is not None})


def model_accepts(name: str, **options: Any) -> bool:
    """Whether :func:`create_config` accepts ``options`` for ``name``: ``True``, or ``False``
    where it would raise a ValueError (an unknown or fixed option, or a value the config
    rejects, such as a window that does not divide a stage's map at that image size).

    A sweep over options (which windows fit which image sizes) asks this; a single build
    should call :func:`create_model` and read the error, which says what is wrong.
    """
    model_entry(name)  # an unknown name is an error, not a False
    try:
        create_config(name, **options)
    except ValueError:
        return False
    return True


def build_model(
    config: Any,
    *,
    form: Form = "standard",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Build the model of ``config`` in ``form`` (``"standard"`` or ``"ane"``).

    ``device="meta"`` builds it without allocating its weights (to count the parameters of a
    large model, for instance).
    """
    classes = _family_of(config)
    check_choice("form", form, FORMS)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = classes[form](config)
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model


def create_model(
    name: str,
    *,
    form: Form = "standard",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **options: Any,
) -> nn.Module:
    """Build a registered model by name, in the standard or the Neural Engine's form.

    Args:
        name: one of :func:`list_models`, e.g. ``"tiny_moat_1"`` or ``"deit_tiny"``.
        form: ``"standard"`` (the paper's layout) or ``"ane"``.
        device: where to allocate the weights (``"meta"``: not at all).
        dtype: floating-point type of the weights (default float32).
        **options: fields of the model's config that its name does not fix
            (``model_entry(name).options`` lists them with their defaults); ``None`` means the
            default. For the MOATs (:class:`~ane_lib.models.config.MOATConfig`): ``pe``
            (``"rpe"``, ``"single_rpe"``, ``"lepe"``, ``"none"``), ``attention``
            (``"global"`` or ``"local"``), ``window`` (required with local attention; must
            divide the feature maps of stages 3 and 4), ``image_size`` (int or ``(H, W)``,
            multiples of 32), ``num_classes``, ``head_size`` (32), ``expansion_rate``,
            ``se_ratio``. For ``deit_tiny`` (:class:`~ane_lib.models.config.DeiTConfig`):
            ``image_size`` (multiples of 16), ``num_classes``, ``num_heads`` (3), ``pe``
            (``"absolute"``), ``attention`` (``"global"``), ``ln_eps``. The model is built for
            its ``image_size`` and accepts inputs of exactly that size.

    Returns:
        The family's module of ``form`` (e.g. :class:`~ane_lib.models.moat.MOAT` or
        :class:`~ane_lib.models.moat.MOATANE`), mapping ``(B, 3, H, W)`` to logits
        ``(B, num_classes)``, with ``.config`` and ``.form``.

    Raises:
        ValueError: naming the option, its value and the allowed values, for an unknown name,
            form or option, or a value the config rejects.
    """
    config = create_config(name, **options)
    return build_model(config, form=form, device=device, dtype=dtype)


def config_from_dict(values: Mapping[str, Any]) -> Any:
    """A registered family's config from its ``dataclasses.asdict`` form (e.g. read from JSON).

    The family is the registered model named by ``values["name"]``; for another name, the one
    registered config class whose fields include every key (lists become tuples). Fields that
    are not constructor arguments (derived ones) are ignored.
    """
    if not isinstance(values, Mapping):
        raise TypeError(f"values must be a mapping, got {type(values).__name__}")
    name = values.get("name")
    if isinstance(name, str) and name in _MODELS:
        config_class = _MODELS[name].config_class
    else:
        keys = set(values)
        candidates = [
            cls
            for cls in _FAMILIES
            if keys <= {f.name for f in dataclasses.fields(cls)}
            and {f.name for f in _init_fields(cls) if _required(f)} <= keys
        ]
        if len(candidates) != 1:
            raise ValueError(
                f"values must describe the config of one registered family "
                f"({', '.join(_family_names())}), got keys {sorted(keys)}"
            )
        config_class = candidates[0]
    init = {f.name for f in _init_fields(config_class)}
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(config_class)})
    if unknown:
        raise ValueError(
            f"unknown {config_class.__name__} option(s) {unknown}; allowed: {sorted(init)}"
        )
    return config_class(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in init}
    )


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


# --------------------------------------------------------------------------- conversion


def _convert_family_model(model: nn.Module, form: Form) -> nn.Module:
    """The twin of a registered family's model in ``form``: rebuilt from ``model.config``, with
    the same weights, device, dtype and training mode."""
    reference = next(iter(model.parameters()))
    config = model.config
    twin = build_model(config, form=form, device=reference.device, dtype=reference.dtype)
    twin.load_state_dict(model.state_dict())
    twin.train(model.training)
    return twin


_FAMILY_CONVERTERS: dict[str, Converter] = {
    form: functools.partial(_convert_family_model, form=form) for form in FORMS
}


def _convert(model: nn.Module, form: Form) -> nn.Module:
    table = _CONVERSIONS[form]
    for cls in type(model).__mro__:
        converter = table.get(cls) or table.get(_qualified_name(cls))
        if converter is not None:
            return converter(model)
    accepted = ", ".join(sorted(_type_name(key) for key in table))
    raise TypeError(
        f"model must be a module that to_{form} can convert ({accepted}, or a subclass), got "
        f"{type(model).__name__}; register a conversion with "
        f"@ane_lib.models.register_conversion({type(model).__name__}, to={form!r})"
    )


def to_ane(model: nn.Module) -> nn.Module:
    """The same model in the Neural Engine's form: a new module, ``model`` is left unchanged.

    ``model`` is any module whose type has a registered conversion (:func:`register_conversion`):
    a model from :func:`create_model` in either form (an ANE model gives a copy), or a type
    another module registered. The result computes the same outputs; for the registered
    families it also has the same device, dtype and training mode.
    """
    return _convert(model, "ane")


def to_standard(model: nn.Module) -> nn.Module:
    """The same model in the standard form (the inverse of :func:`to_ane`)."""
    return _convert(model, "standard")


def count_parameters(model: nn.Module) -> int:
    """Number of parameter values of ``model`` (works on the meta device)."""
    return sum(p.numel() for p in model.parameters())

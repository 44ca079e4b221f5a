"""create_model / list_models / to_ane / to_standard: names, options, validation, conversion."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import pytest
import torch
from _reference import randomize_model
from torch import nn

from ane_lib._checks import check_literal_fields
from ane_lib.models import (
    MOAT,
    MOAT_VARIANTS,
    MOATANE,
    DeiT,
    DeiTANE,
    DeiTConfig,
    MOATConfig,
    build_model,
    config_from_dict,
    count_parameters,
    create_config,
    create_model,
    families,
    list_models,
    model_accepts,
    model_entry,
    option_choices,
    register_conversion,
    register_family,
    register_model,
    registry,
    to_ane,
    to_standard,
)
from ane_lib.nn import register_projection_layout_hooks

MOAT_VARIANTS_0 = dataclasses.asdict(MOAT_VARIANTS["tiny_moat_0"])


def test_list_models_names_every_model() -> None:
    assert list_models() == sorted(
        [f"tiny_moat_{i}" for i in range(4)]
        + [f"moat_{i}" for i in range(5)]
        + ["deit_tiny", "digits_moat"]
    )
    assert list_models("tiny_moat_*") == [f"tiny_moat_{i}" for i in range(4)]
    assert list_models(["deit*", "moat_4"]) == ["deit_tiny", "moat_4"]
    assert list_models("resnet*") == []


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_has_its_fixed_fields_and_defaults(name: str) -> None:
    """Read from the registry (test_moat and test_deit build every model in both forms)."""
    entry = model_entry(name)
    config = create_config(name)
    assert isinstance(config, entry.config_class) and config.name == name
    for key, value in entry.fixed.items():
        assert getattr(config, key) == value
    for key, value in entry.options.items():
        assert getattr(config, key) == value
    assert not set(entry.fixed) & set(entry.options)


def test_the_issue_example() -> None:
    model = create_model(
        "tiny_moat_1",
        form="standard",
        pe="rpe",
        attention="local",
        window=8,
        image_size=256,
        num_classes=1000,
    )
    assert isinstance(model, MOAT) and model.form == "standard"
    assert model.config.window == (8, 8) and model.config.image_size == (256, 256)
    ane = to_ane(model.eval())
    assert isinstance(ane, MOATANE) and ane.form == "ane" and ane.config == model.config
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert (ane(x) - model(x)).abs().max() <= 1e-4


def test_defaults() -> None:
    moat = create_model("tiny_moat_0", device="meta")
    assert isinstance(moat, MOAT)
    c = moat.config
    assert (c.pe, c.attention, c.window, c.image_size, c.num_classes, c.head_size) == (
        "rpe",
        "global",
        None,
        (224, 224),
        1000,
        32,
    )
    deit = create_model("deit_tiny", form="ane", device="meta")
    assert isinstance(deit, DeiTANE)
    assert (deit.config.pe, deit.config.attention, deit.config.num_heads) == (
        "absolute",
        "global",
        3,
    )


def test_create_config_is_what_create_model_builds() -> None:
    config = create_config("moat_1", pe="lepe", attention="local", window=(7, 7))
    assert isinstance(config, MOATConfig)
    assert config.depths == (2, 6, 14, 2) and config.hidden_sizes == (96, 192, 384, 768)
    model = build_model(config, form="ane", device="meta")
    assert isinstance(model, MOATANE) and model.config is config
    deit = create_config("deit_tiny", image_size=(224, 320), num_classes=5)
    assert isinstance(deit, DeiTConfig) and deit.num_tokens == 14 * 20 + 1


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"name": "moat_5"}, r"name.*'deit_tiny'.*'moat_5'"),
        ({"form": "coreml"}, r"form.*'standard'.*'coreml'"),
        ({"pe": "ape"}, r"pe.*'lepe'.*'ape'"),
        ({"attention": "shifted"}, r"attention.*'local'.*'shifted'"),
        ({"image_size": 100}, r"image_size=100.*32"),
        ({"image_size": (224, 200)}, r"image_size=\(224, 200\).*32"),
        (
            {"attention": "local", "window": 5, "image_size": 256},
            r"window=5\b.*stage 3 is \(16, 16\)",
        ),
        ({"attention": "local"}, r"window.*attention='local'"),
        ({"window": 7}, r"window=7.*attention='global'"),
        ({"head_size": 48}, r"head_size=48.*stage"),
        ({"num_classes": 0}, r"num_classes.*\b0\b"),
        ({"num_heads": 4}, r"num_heads=4.*tiny_moat_0"),
        ({"depths": (1, 1, 1, 1)}, r"depths=\(1, 1, 1, 1\).*fixed.*tiny_moat_0"),
        ({"name": "deit_tiny", "num_heads": 5}, r"num_heads=5.*192"),
        ({"name": "deit_tiny", "pe": "rpe"}, r"pe.*'absolute'.*'rpe'"),
        ({"name": "deit_tiny", "attention": "local"}, r"attention.*'local'"),
        ({"name": "deit_tiny", "window": 7}, r"window=7.*deit_tiny"),
        ({"name": "deit_tiny", "head_size": 32}, r"head_size=32.*deit_tiny"),
        ({"name": "deit_tiny", "width": 64}, r"width=64.*fixed.*deit_tiny"),
        ({"name": "deit_tiny", "image_size": 200}, r"image_size=200.*16"),
    ],
)
def test_bad_options_name_the_option_and_its_value(kwargs: dict, message: str) -> None:
    kwargs = {"name": "tiny_moat_0", "device": "meta", **kwargs}
    with pytest.raises(ValueError, match=message):
        create_model(**kwargs)


def test_model_accepts_is_create_config_succeeding() -> None:
    # the windows that tile stages 3 and 4 of tiny_moat_0 at 256 (maps 16 x 16 and 8 x 8)
    fits = [
        w
        for w in range(1, 17)
        if model_accepts("tiny_moat_0", attention="local", window=w, image_size=256)
    ]
    assert fits == [1, 2, 4, 8]
    assert not model_accepts("tiny_moat_0", image_size=100)
    assert not model_accepts("tiny_moat_0", num_heads=4)  # not an option of a MOAT
    assert model_accepts("deit_tiny", num_heads=4)
    with pytest.raises(ValueError, match=r"name.*'moat_9'"):
        model_accepts("moat_9")


def test_non_square_images_and_windows() -> None:
    model = create_model(
        "tiny_moat_0",
        attention="local",
        window=(2, 4),
        image_size=(64, 128),
        num_classes=3,
        dtype=torch.float64,
    ).eval()
    randomize_model(model, 3)  # batch-norm statistics and norm gains off their defaults
    ane = to_ane(model)
    x = torch.randn(1, 3, 64, 128, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        assert expected.abs().max() > 0.1
        assert (ane(x) - expected).abs().max() <= 1e-9


def test_conversion_keeps_dtype_device_and_mode_and_round_trips() -> None:
    model = create_model("tiny_moat_0", pe="single_rpe", image_size=64, dtype=torch.float64)
    model.train()
    ane = to_ane(model)
    assert next(ane.parameters()).dtype == torch.float64 and ane.training
    again = to_ane(ane)  # converting an ANE model gives a copy
    assert isinstance(again, MOATANE) and again is not ane
    back = to_standard(ane)
    assert isinstance(back, MOAT)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    deit = to_standard(to_ane(create_model("deit_tiny", image_size=32)))
    assert isinstance(deit, DeiT)


def test_load_state_dict_across_forms_directly() -> None:
    standard = create_model("tiny_moat_0", pe="lepe", image_size=64).eval()
    ane = create_model("tiny_moat_0", pe="lepe", image_size=64, form="ane").eval()
    result = ane.load_state_dict(standard.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (ane(x) - standard(x)).abs().max() <= 1e-4
    # a model of another configuration does not load silently
    other = create_model("tiny_moat_0", pe="rpe", image_size=64, form="ane")
    with pytest.raises(RuntimeError, match=r"Missing key\(s\)"):
        other.load_state_dict(standard.state_dict())


def test_conversion_rejects_other_modules() -> None:
    with pytest.raises(TypeError, match=r"MOAT.*Linear.*register_conversion"):
        to_ane(nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"Linear"):
        to_standard(nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"config.*MOATConfig.*dict"):
        build_model({})


def test_count_parameters() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2, bias=False))
    assert count_parameters(model) == 3 * 4 + 4 + 4 * 2


# --------------------------------------------------------------------------- registering


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test are undone after it."""
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    conversions = {form: dict(table) for form, table in registry._CONVERSIONS.items()}
    monkeypatch.setattr(registry, "_CONVERSIONS", conversions)


@dataclass(frozen=True)
class ToyConfig:
    """A family small enough to build in a test: a linear classifier on ``(B, width)``."""

    name: str
    width: int
    num_classes: int = 3
    bias: Literal["with", "without"] = "with"

    def __post_init__(self) -> None:
        check_literal_fields(self)


class Toy(nn.Module):
    form = "standard"

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        self.head = nn.Linear(config.width, config.num_classes, bias=config.bias == "with")
        register_projection_layout_hooks(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class ToyANE(nn.Module):
    form = "ane"

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        self.head = nn.Conv2d(config.width, config.num_classes, 1, bias=config.bias == "with")
        register_projection_layout_hooks(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x[:, :, None, None]).flatten(1)


@pytest.mark.usefixtures("scratch_registry")
def test_a_new_family_is_one_registration_read_by_every_entry_point() -> None:
    register_family(ToyConfig, standard=Toy, ane=ToyANE)
    entry = register_model("toy_s", ToyConfig, fixed={"width": 4}, defaults={"num_classes": 5})
    assert "toy_s" in list_models() and model_entry("toy_s") is entry
    assert entry.options == {"num_classes": 5, "bias": "with"}
    assert option_choices("bias") == ("with", "without")
    assert option_choices("pe") == option_choices("pe", DeiTConfig) + option_choices(
        "pe", MOATConfig
    )
    assert ToyConfig in families()

    model = create_model("toy_s")
    assert isinstance(model, Toy) and model.config == ToyConfig("toy_s", 4, 5)
    ane = to_ane(model)
    assert isinstance(ane, ToyANE) and isinstance(to_standard(ane), Toy)
    x = torch.randn(2, 4)
    torch.testing.assert_close(ane(x), model(x), rtol=0, atol=1e-6)
    assert config_from_dict(dataclasses.asdict(ane.config)) == ane.config
    small = create_model("toy_s", form="ane", num_classes=2, bias="without")
    assert isinstance(small, ToyANE) and small.head.bias is None
    with pytest.raises(ValueError, match=r"bias.*'sometimes'"):
        create_model("toy_s", bias="sometimes")
    with pytest.raises(ValueError, match=r"width=8.*fixed.*toy_s"):
        create_model("toy_s", width=8)

    # the command line reads the same registry
    import ane_lib.cli as cli

    parser_help = cli.build_parser()._subparsers._group_actions[0].choices["export"].format_help()
    assert "toy_s" in parser_help
    assert isinstance(cli._build_model("toy_s", {"form": "ane"}, 0, None), ToyANE)


@pytest.mark.usefixtures("scratch_registry")
def test_the_docstring_example_a_digits_moat() -> None:
    """The worked example of ane_lib.models.registry, as written there."""
    register_model(
        "digits_moat",
        MOATConfig,
        fixed={"stem_sizes": (16, 16), "depths": (1, 1, 1, 1), "hidden_sizes": (32, 32, 64, 64)},
        defaults={"image_size": (32, 32), "num_classes": 10, "pe": "rpe", "attention": "global"},
        description="digits_moat: a reduced MOAT for scikit-learn's digits (chapter 9)",
    )
    model = create_model("digits_moat", pe="lepe", dtype=torch.float64).eval()
    assert isinstance(model, MOAT) and "digits_moat" in list_models()
    c = model.config
    assert (c.image_size, c.num_classes, c.pe, c.stem_sizes) == ((32, 32), 10, "lepe", (16, 16))
    randomize_model(model, 1)
    ane = to_ane(model)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ane(x), model(x), rtol=0, atol=1e-9)
    # the model's defaults are only defaults
    local = create_config("digits_moat", image_size=64, attention="local", window=2)
    assert (local.image_size, local.window, local.num_classes) == ((64, 64), (2, 2), 10)


@pytest.mark.usefixtures("scratch_registry")
def test_registrations_are_checked_and_idempotent() -> None:
    register_family(ToyConfig, standard=Toy, ane=ToyANE)
    register_family(ToyConfig, standard=Toy, ane=ToyANE)  # the same again: nothing happens
    with pytest.raises(ValueError, match=r"ToyConfig.*already registered.*overwrite"):
        register_family(ToyConfig, standard=ToyANE, ane=Toy)
    register_model("toy_s", ToyConfig, fixed={"width": 4})
    register_model("toy_s", ToyConfig, fixed={"width": 4})
    with pytest.raises(ValueError, match=r"'toy_s'.*already registered"):
        register_model("toy_s", ToyConfig, fixed={"width": 8})
    register_model("toy_s", ToyConfig, fixed={"width": 8}, overwrite=True)
    assert create_config("toy_s").width == 8

    with pytest.raises(ValueError, match=r"depth.*not fields of ToyConfig"):
        register_model("toy_m", ToyConfig, fixed={"width": 4, "depth": 2})
    with pytest.raises(ValueError, match=r"no default.*\['width'\]"):
        register_model("toy_m", ToyConfig)
    with pytest.raises(ValueError, match=r"\['num_classes'\].*both fixed and defaults"):
        register_model(
            "toy_m", ToyConfig, fixed={"width": 4, "num_classes": 2}, defaults={"num_classes": 3}
        )
    with pytest.raises(ValueError, match=r"name.*'toy-m'"):
        register_model("toy-m", ToyConfig, fixed={"width": 4})
    with pytest.raises(ValueError, match=r"image_size=33.*32"):  # the config's own check
        register_model("moat_odd", MOATConfig, fixed=MOAT_VARIANTS_0, defaults={"image_size": 33})
    unregistered = dataclasses.make_dataclass("Unregistered", [("name", str)], frozen=True)
    with pytest.raises(ValueError, match=r"Unregistered.*not a registered family"):
        register_model("x", unregistered)
    with pytest.raises(TypeError, match=r"config_class.*dataclass.*dict"):
        register_model("x", dict)
    with pytest.raises(TypeError, match=r"config_class.*dataclass"):
        register_family(int, standard=Toy, ane=ToyANE)
    with pytest.raises(TypeError, match=r"ane.*nn.Module"):
        register_family(ToyConfig, standard=Toy, ane=int, overwrite=True)  # type: ignore[arg-type]
    assert "toy_m" not in list_models() and "moat_odd" not in list_models()


class Foreign(nn.Module):
    """A module type of 'another library', converted by a registered function."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


class ForeignANE(Foreign):
    pass


class ForeignChild(Foreign):
    pass


@pytest.mark.usefixtures("scratch_registry")
def test_conversions_are_registered_by_type_or_by_qualified_name() -> None:
    @register_conversion(Foreign)
    def foreign_to_ane(model: nn.Module) -> nn.Module:
        return ForeignANE()

    assert isinstance(to_ane(Foreign()), ForeignANE)
    assert isinstance(to_ane(ForeignChild()), ForeignANE)  # subclasses too, by the MRO
    with pytest.raises(TypeError, match=r"Foreign.*to_standard|to_standard.*Foreign"):
        to_standard(Foreign())

    # by name: nothing is imported or resolved until such a module is converted
    @register_conversion(f"{__name__}.ForeignChild", to="standard")
    def child_to_standard(model: nn.Module) -> nn.Module:
        return Foreign()

    assert type(to_standard(ForeignChild())) is Foreign
    register_conversion(Foreign)(foreign_to_ane)  # the same function again: nothing happens
    with pytest.raises(ValueError, match=r"Foreign.*already registered"):
        register_conversion(Foreign)(child_to_standard)
    with pytest.raises(ValueError, match=r"qualified class name.*'Foreign'"):
        register_conversion("Foreign")
    with pytest.raises(TypeError, match=r"source.*int"):
        register_conversion(int)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"to.*'coreml'"):
        register_conversion(Foreign, to="coreml")  # type: ignore[arg-type]

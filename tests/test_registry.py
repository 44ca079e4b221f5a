"""create_model / list_models / to_ane / to_standard: names, options, validation, conversion."""

from __future__ import annotations

import pytest
import torch
from _reference import randomize_model
from torch import nn

from ane_lib.models import (
    MOAT,
    MOATANE,
    DeiT,
    DeiTANE,
    DeiTConfig,
    MOATConfig,
    build_model,
    count_parameters,
    create_config,
    create_model,
    list_models,
    to_ane,
    to_standard,
)


def test_list_models_names_every_model() -> None:
    assert list_models() == sorted(
        [f"tiny_moat_{i}" for i in range(4)]
        + [f"moat_{i}" for i in range(5)]
        + ["deit_tiny", "digits_moat"]
    )


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
        (
            {"name": "moat_5"},
            r"name must be one of \['deit_tiny', 'digits_moat', 'moat_0', .*\], got 'moat_5'",
        ),
        ({"form": "coreml"}, r"form must be one of \['standard', 'ane'\], got 'coreml'"),
        ({"pe": "ape"}, r"pe must be one of \['rpe', 'single_rpe', 'lepe', 'none'\], got 'ape'"),
        (
            {"attention": "shifted"},
            r"attention must be one of \['global', 'local'\], got 'shifted'",
        ),
        ({"image_size": 100}, r"image_size=100 must be a multiple of 32 .* allowed: 32, 64"),
        ({"image_size": (224, 200)}, r"image_size=\(224, 200\) must be a multiple of 32"),
        (
            {"attention": "local", "window": 5, "image_size": 256},
            r"window=5 must divide the feature map of every attention stage at image_size="
            r"\(256, 256\): stage 3 is \(16, 16\), stage 4 is \(8, 8\)",
        ),
        (
            {"attention": "local"},
            r"window must be an int or \(height, width\) with attention='local'",
        ),
        ({"window": 7}, r"window=7 must be None with attention='global'"),
        ({"head_size": 48}, r"head_size=48 must divide the width of every attention stage"),
        ({"num_classes": 0}, r"num_classes must be >= 1, got 0"),
        ({"num_heads": 4}, r"num_heads=4 is a DeiT option"),
        ({"name": "deit_tiny", "num_heads": 5}, r"num_heads=5 must divide the width 192; allowed"),
        ({"name": "deit_tiny", "pe": "rpe"}, r"pe must be one of \['absolute'\], got 'rpe'"),
        ({"name": "deit_tiny", "attention": "local"}, r"attention must be one of \['global'\]"),
        ({"name": "deit_tiny", "window": 7}, r"window=7 must be None for deit_tiny"),
        ({"name": "deit_tiny", "head_size": 32}, r"head_size=32 is a MOAT option"),
        ({"name": "deit_tiny", "image_size": 200}, r"image_size=200 must be a multiple of 16"),
    ],
)
def test_bad_options_name_the_option_its_value_and_the_allowed_values(
    kwargs: dict, message: str
) -> None:
    kwargs = {"name": "tiny_moat_0", "device": "meta", **kwargs}
    with pytest.raises(ValueError, match=message):
        create_model(**kwargs)


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
    with pytest.raises(
        TypeError, match=r"model must be a model built by ane_lib.models.create_model"
    ):
        to_ane(nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"config must be a MOATConfig or DeiTConfig, got dict"):
        build_model({})  # type: ignore[arg-type]


def test_count_parameters() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2, bias=False))
    assert count_parameters(model) == 3 * 4 + 4 + 4 * 2

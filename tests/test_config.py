"""MOATConfig / DeiTConfig: normalisation, derived sizes, validation."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ane_lib.models.config import MOAT_VARIANTS, DeiTConfig, MOATConfig, config_from_dict


def _tiny(**options: object) -> MOATConfig:
    v = MOAT_VARIANTS["tiny_moat_0"]
    return MOATConfig("tiny_moat_0", v.stem_sizes, v.depths, v.hidden_sizes, **options)  # type: ignore[arg-type]


def test_variants_are_the_papers() -> None:
    assert set(MOAT_VARIANTS) == {f"tiny_moat_{i}" for i in range(4)} | {
        f"moat_{i}" for i in range(5)
    } | {"digits_moat"}  # chapter 9's reduced MOAT, the one variant that is not the paper's
    assert MOAT_VARIANTS["moat_4"].hidden_sizes == (256, 512, 1024, 2048)
    assert MOAT_VARIANTS["moat_3"].depths == (2, 12, 28, 2)
    assert MOAT_VARIANTS["tiny_moat_2"].stem_sizes == (56, 56)


def test_ints_are_normalised_to_pairs_and_sizes_derived() -> None:
    config = _tiny(image_size=256, attention="local", window=8)
    assert config.image_size == (256, 256) and config.window == (8, 8)
    assert config.stem_output_size == (128, 128)
    assert [config.stage_output_size(s) for s in (1, 2, 3, 4)] == [
        (64, 64),
        (32, 32),
        (16, 16),
        (8, 8),
    ]
    assert config.attention_stages() == [(3, 128), (4, 256)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.pe = "lepe"  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"stage must be one of \[1, 2, 3, 4\], got 5"):
        config.stage_output_size(5)


def test_configs_compare_by_value() -> None:
    assert _tiny(image_size=64) == _tiny(image_size=(64, 64))
    assert _tiny(pe="lepe") != _tiny(pe="rpe")


def test_validation() -> None:
    with pytest.raises(ValueError, match=r"image_size=112 must be a multiple of 32"):
        _tiny(image_size=112)
    with pytest.raises(ValueError, match=r"window=\(3, 2\) must divide the feature map"):
        _tiny(image_size=96, attention="local", window=(3, 2))
    with pytest.raises(ValueError, match=r"se_ratio must be in \(0, 1\], got 0"):
        _tiny(se_ratio=0)
    with pytest.raises(ValueError, match=r"depths must be an int or a sequence of 4 ints"):
        MOATConfig("x", (32, 32), (2, 3, 7), (32, 64, 128, 256))


def test_deit_config() -> None:
    config = DeiTConfig(image_size=(224, 256))
    assert config.grid_size == (14, 16) and config.num_tokens == 14 * 16 + 1
    with pytest.raises(ValueError, match=r"image_size=\(224, 250\) must be a multiple of 16"):
        DeiTConfig(image_size=(224, 250))
    with pytest.raises(ValueError, match=r"num_heads=7 must divide the width 192"):
        DeiTConfig(num_heads=7)


def test_round_trip_through_json() -> None:
    for config in (_tiny(image_size=64, attention="local", window=2, pe="lepe"), DeiTConfig()):
        values = json.loads(json.dumps(dataclasses.asdict(config)))
        assert config_from_dict(values) == config
    with pytest.raises(ValueError, match=r"unknown MOATConfig option\(s\) \['colour'\]"):
        config_from_dict({**dataclasses.asdict(_tiny()), "colour": "red"})
    with pytest.raises(ValueError, match=r"values must describe a MOATConfig"):
        config_from_dict({"name": "x"})

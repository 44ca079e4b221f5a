"""MOATConfig / DeiTConfig: normalisation, derived sizes, validation."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ane_lib.models import config_from_dict
from ane_lib.models.config import MOAT_VARIANTS, DeiTConfig, MOATConfig


def _tiny(**options: object) -> MOATConfig:
    v = MOAT_VARIANTS["tiny_moat_0"]
    return MOATConfig("tiny_moat_0", v.stem_sizes, v.depths, v.hidden_sizes, **options)  # type: ignore[arg-type]


def _deit(**options: object) -> DeiTConfig:
    architecture = {"patch_size": 16, "width": 192, "depth": 12, "num_heads": 3, "mlp_ratio": 4}
    return DeiTConfig("deit_tiny", **{**architecture, **options})  # type: ignore[arg-type]


def test_variants_are_the_papers() -> None:
    assert set(MOAT_VARIANTS) == {f"tiny_moat_{i}" for i in range(4)} | {
        f"moat_{i}" for i in range(5)
    }
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
    with pytest.raises(ValueError, match=r"stage.*\b5\b"):
        config.stage_output_size(5)


def test_configs_compare_by_value() -> None:
    assert _tiny(image_size=64) == _tiny(image_size=(64, 64))
    assert _tiny(pe="lepe") != _tiny(pe="rpe")


def test_validation() -> None:
    with pytest.raises(ValueError, match=r"image_size=112.*multiple of 32"):
        _tiny(image_size=112)
    # the window is checked against each attention stage: stage 4 is (3, 3) at 96
    with pytest.raises(ValueError, match=r"window=\(3, 2\).*stage 4.*\(3, 3\)"):
        _tiny(image_size=96, attention="local", window=(3, 2))
    with pytest.raises(ValueError, match=r"se_ratio.*\b0\b"):
        _tiny(se_ratio=0)
    with pytest.raises(ValueError, match=r"depths.*4 ints"):
        MOATConfig("x", (32, 32), (2, 3, 7), (32, 64, 128, 256))
    # Literal fields are checked against their Literal
    with pytest.raises(ValueError, match=r"pe.*'rpe'.*'ape'"):
        _tiny(pe="ape")
    with pytest.raises(ValueError, match=r"attention.*'local'"):
        _deit(attention="local")


def test_deit_config() -> None:
    config = _deit(image_size=(224, 256))
    assert config.grid_size == (14, 16) and config.num_tokens == 14 * 16 + 1
    with pytest.raises(ValueError, match=r"image_size=\(224, 250\).*multiple of 16"):
        _deit(image_size=(224, 250))
    with pytest.raises(ValueError, match=r"num_heads=7.*192"):
        _deit(num_heads=7)


def test_round_trip_through_json() -> None:
    moat = _tiny(image_size=64, attention="local", window=2, pe="lepe")
    for config in (moat, _deit(), dataclasses.replace(moat, name="not_registered")):
        values = json.loads(json.dumps(dataclasses.asdict(config)))
        assert config_from_dict(values) == config
    with pytest.raises(ValueError, match=r"MOATConfig.*'colour'"):
        config_from_dict({**dataclasses.asdict(_tiny()), "colour": "red"})
    # a name that is not registered and keys that fit more than one family
    with pytest.raises(ValueError, match=r"values must describe.*\['name'\]"):
        config_from_dict({"name": "x"})
    with pytest.raises(TypeError, match=r"values must be a mapping.*list"):
        config_from_dict([("name", "x")])  # type: ignore[arg-type]

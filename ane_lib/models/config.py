"""Model configurations: what to build, validated once, shared by both forms.

A config holds everything needed to build a model and nothing about its form, so
``to_ane(model)`` rebuilds the twin from ``model.config`` alone. Every option is checked when the
config is made; a bad one raises a ``ValueError`` naming the option, its value and the allowed
values.

MOAT variants (deeplab2 ``moat.py``): stem widths, blocks per stage and stage widths below;
stages 1-2 are MBConv blocks, stages 3-4 MOAT blocks; every stage starts with stride 2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from ane_lib._checks import check_choice, check_positive_int, int_tuple
from ane_lib.nn.position import PE_TYPES

__all__ = [
    "MOATConfig",
    "DeiTConfig",
    "MOAT_VARIANTS",
    "MOATVariant",
    "MOAT_PE_TYPES",
    "DEIT_PE_TYPES",
    "ATTENTION_MODES",
    "config_from_dict",
]

MOAT_PE_TYPES: tuple[str, ...] = PE_TYPES
"""Position embeddings of MOAT's attention: ``"rpe"`` (per-head relative position bias, the
paper's), ``"single_rpe"`` (one bias table shared by the heads), ``"lepe"`` (depthwise 3x3 conv on
V plus an absolute embedding added to the attention input), ``"none"``."""

DEIT_PE_TYPES: tuple[str, ...] = ("absolute",)
"""DeiT's learned absolute position embedding (its only one)."""

ATTENTION_MODES: tuple[str, ...] = ("global", "local")

AttentionMode = Literal["global", "local"]


@dataclass(frozen=True)
class MOATVariant:
    """Widths and depths of one published MOAT (deeplab2 ``moat.py``)."""

    stem_sizes: tuple[int, int]
    depths: tuple[int, int, int, int]
    hidden_sizes: tuple[int, int, int, int]


MOAT_VARIANTS: dict[str, MOATVariant] = {
    "tiny_moat_0": MOATVariant((32, 32), (2, 3, 7, 2), (32, 64, 128, 256)),
    "tiny_moat_1": MOATVariant((40, 40), (2, 3, 7, 2), (40, 80, 160, 320)),
    "tiny_moat_2": MOATVariant((56, 56), (2, 3, 7, 2), (56, 112, 224, 448)),
    "tiny_moat_3": MOATVariant((80, 80), (2, 3, 7, 2), (80, 160, 320, 640)),
    "moat_0": MOATVariant((64, 64), (2, 3, 7, 2), (96, 192, 384, 768)),
    "moat_1": MOATVariant((64, 64), (2, 6, 14, 2), (96, 192, 384, 768)),
    "moat_2": MOATVariant((128, 128), (2, 6, 14, 2), (128, 256, 512, 1024)),
    "moat_3": MOATVariant((160, 160), (2, 12, 28, 2), (160, 320, 640, 1280)),
    "moat_4": MOATVariant((256, 256), (2, 12, 28, 2), (256, 512, 1024, 2048)),
    # Not a published variant: the reduced MOAT that chapter 9 trains on scikit-learn's digits
    # (one block per stage; see ane_lib.training.DIGITS_MOAT_OPTIONS for its build options).
    "digits_moat": MOATVariant((16, 16), (1, 1, 1, 1), (32, 32, 64, 64)),
}

MOAT_BLOCK_TYPES: tuple[str, str, str, str] = ("mbconv", "mbconv", "moat", "moat")
MOAT_STRIDE = 32  # stem 2 x four stages of 2


def _image_size(value: int | Sequence[int], multiple: int, why: str) -> tuple[int, int]:
    h, w = int_tuple("image_size", value, 2)
    if h % multiple or w % multiple:
        raise ValueError(
            f"image_size={value!r} must be a multiple of {multiple} in height and width ({why}); "
            f"allowed: {multiple}, {2 * multiple}, ..., e.g. {7 * multiple} or {8 * multiple}"
        )
    return h, w


@dataclass(frozen=True)
class MOATConfig:
    """A MOAT: architecture (from :data:`MOAT_VARIANTS`) plus the options of one build.

    Attributes:
        name: the variant, e.g. ``"tiny_moat_1"`` (informational).
        stem_sizes, depths, hidden_sizes: the architecture (see :data:`MOAT_VARIANTS`).
        image_size: ``(H, W)``, multiples of 32; an int means square.
        num_classes: width of the classification head.
        pe: one of :data:`MOAT_PE_TYPES`. The RPE table is sized from the attention grid: the
            window (local) or the stage's feature map at ``image_size`` (global); at 224 global
            this is the paper's ``P = 14`` (stage 3) and ``P = 7`` (stage 4).
        attention: ``"global"`` (the paper's classification setting) or ``"local"`` (windows).
        window: ``(wh, ww)`` (or int) for local attention, dividing the feature maps of stages
            3 and 4; ``None`` for global attention.
        head_size: channels per attention head (32); must divide the widths of stages 3 and 4.
        expansion_rate: MBConv expansion (4).
        se_ratio: squeeze-excitation ratio of the MBConv blocks (0.25).
    """

    name: str
    stem_sizes: tuple[int, ...]
    depths: tuple[int, ...]
    hidden_sizes: tuple[int, ...]
    image_size: tuple[int, int] = (224, 224)
    num_classes: int = 1000
    pe: str = "rpe"
    attention: str = "global"
    window: tuple[int, int] | None = None
    head_size: int = 32
    expansion_rate: int = 4
    se_ratio: float = 0.25
    block_types: tuple[str, ...] = field(default=MOAT_BLOCK_TYPES, init=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once here
        set_(self, "stem_sizes", int_tuple("stem_sizes", self.stem_sizes, 2))
        set_(self, "depths", int_tuple("depths", self.depths, 4))
        set_(self, "hidden_sizes", int_tuple("hidden_sizes", self.hidden_sizes, 4))
        set_(
            self,
            "image_size",
            _image_size(self.image_size, MOAT_STRIDE, "MOAT's output stride is 32"),
        )
        check_positive_int("num_classes", self.num_classes)
        check_choice("pe", self.pe, MOAT_PE_TYPES)
        check_choice("attention", self.attention, ATTENTION_MODES)
        check_positive_int("head_size", self.head_size)
        check_positive_int("expansion_rate", self.expansion_rate)
        if not (0 < self.se_ratio <= 1):
            raise ValueError(f"se_ratio must be in (0, 1], got {self.se_ratio!r}")
        for stage, width in self.attention_stages():
            if width % self.head_size:
                raise ValueError(
                    f"head_size={self.head_size} must divide the width of every attention stage, "
                    f"but stage {stage} has {width} channels; allowed head sizes are divisors "
                    f"of {self.hidden_sizes[2]} and {self.hidden_sizes[3]}"
                )
        if self.attention == "global":
            if self.window is not None:
                raise ValueError(
                    f"window={self.window!r} must be None with attention='global' "
                    "(use attention='local' for windows)"
                )
            return
        if self.window is None:
            raise ValueError(
                "window must be an int or (height, width) with attention='local', got None"
            )
        given = self.window
        window = int_tuple("window", given, 2)
        set_(self, "window", window)
        for stage, _ in self.attention_stages():
            size = self.stage_output_size(stage)
            if size[0] % window[0] or size[1] % window[1]:
                sizes = ", ".join(
                    f"stage {s} is {self.stage_output_size(s)}" for s, _ in self.attention_stages()
                )
                raise ValueError(
                    f"window={given!r} must divide the feature map of every attention "
                    f"stage at image_size={self.image_size}: {sizes}; allowed windows divide "
                    "both"
                )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> MOATConfig:
        """Rebuild a config from ``dataclasses.asdict(config)`` (e.g. read back from JSON)."""
        return cls(**_init_values(cls, values))

    def attention_stages(self) -> list[tuple[int, int]]:
        """``(stage number 1-4, width)`` of the stages made of MOAT blocks (3 and 4)."""
        return [
            (i + 1, w)
            for i, (kind, w) in enumerate(zip(self.block_types, self.hidden_sizes, strict=True))
            if kind == "moat"
        ]

    @property
    def stem_output_size(self) -> tuple[int, int]:
        """``(H / 2, W / 2)``: the stem's first conv has stride 2."""
        return self.image_size[0] // 2, self.image_size[1] // 2

    def stage_output_size(self, stage: int) -> tuple[int, int]:
        """``(H, W)`` after stage 1-4 (strides 4, 8, 16, 32)."""
        if stage not in (1, 2, 3, 4):
            raise ValueError(f"stage must be one of [1, 2, 3, 4], got {stage!r}")
        factor = 2 ** (stage + 1)
        return self.image_size[0] // factor, self.image_size[1] // factor


@dataclass(frozen=True)
class DeiTConfig:
    """A DeiT (ViT with DeiT's tiny setting): patch 16, width 192, depth 12, 3 heads.

    Attributes:
        name: ``"deit_tiny"`` (informational).
        image_size: ``(H, W)``, multiples of ``patch_size``; an int means square.
        num_classes: width of the classification head.
        patch_size, width, depth, num_heads, mlp_ratio: the architecture; ``num_heads`` must
            divide ``width``.
        pe: ``"absolute"`` (DeiT's learned embedding of the class token and every patch).
        attention: ``"global"`` (DeiT has no windows).
        ln_eps: LayerNorm epsilon (1e-6, as in DeiT/timm).
    """

    name: str = "deit_tiny"
    image_size: tuple[int, int] = (224, 224)
    num_classes: int = 1000
    patch_size: int = 16
    width: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: int = 4
    pe: str = "absolute"
    attention: str = "global"
    ln_eps: float = 1e-6

    def __post_init__(self) -> None:
        check_positive_int("patch_size", self.patch_size)
        object.__setattr__(
            self,
            "image_size",
            _image_size(self.image_size, self.patch_size, f"the patch size is {self.patch_size}"),
        )
        check_positive_int("num_classes", self.num_classes)
        check_positive_int("width", self.width)
        check_positive_int("depth", self.depth)
        check_positive_int("num_heads", self.num_heads)
        check_positive_int("mlp_ratio", self.mlp_ratio)
        if self.width % self.num_heads:
            raise ValueError(
                f"num_heads={self.num_heads} must divide the width {self.width}; allowed: "
                f"{[d for d in range(1, self.width + 1) if self.width % d == 0]}"
            )
        check_choice("pe", self.pe, DEIT_PE_TYPES)
        check_choice("attention", self.attention, ("global",))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DeiTConfig:
        """Rebuild a config from ``dataclasses.asdict(config)`` (e.g. read back from JSON)."""
        return cls(**_init_values(cls, values))

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patches per column and per row."""
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size

    @property
    def num_tokens(self) -> int:
        """Patches plus the class token."""
        return self.grid_size[0] * self.grid_size[1] + 1


def _init_values(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that are constructor fields of ``cls``; lists become tuples."""
    if not isinstance(values, Mapping):
        raise TypeError(f"values must be a mapping, got {type(values).__name__}")
    names = {f.name for f in fields(cls) if f.init}
    unknown = sorted(set(values) - names - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"unknown {cls.__name__} option(s) {unknown}; allowed: {sorted(names)}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names}


def config_from_dict(values: Mapping[str, Any]) -> MOATConfig | DeiTConfig:
    """A :class:`MOATConfig` or :class:`DeiTConfig` from its ``dataclasses.asdict`` form.

    The family is told by the fields: a MOAT config has ``stem_sizes``, a DeiT config
    ``patch_size``.
    """
    if not isinstance(values, Mapping):
        raise TypeError(f"values must be a mapping, got {type(values).__name__}")
    if "stem_sizes" in values:
        return MOATConfig.from_dict(values)
    if "patch_size" in values:
        return DeiTConfig.from_dict(values)
    raise ValueError(
        f"values must describe a MOATConfig (with 'stem_sizes') or a DeiTConfig (with "
        f"'patch_size'), got keys {sorted(values)}"
    )

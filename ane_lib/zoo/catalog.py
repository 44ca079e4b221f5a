"""The zoo: third-party models that people have, built from their configurations.

Each :class:`ZooEntry` names a Hugging Face ``transformers`` model class (vision classifiers
and text encoders whose code needs no torchvision), the configuration overrides that pick a
common size of it, and a *tiny* variant (fewer and narrower layers, smaller inputs) for tests
and the book. :func:`build` makes the model with random weights, nothing downloaded:
``torch.manual_seed(seed)`` around the class's own initialisation, then
:func:`ane_lib.models.unit_variance_init_` on the entry's example inputs, so that its
activations have the unit scale of a trained model's and fp16 measurements mean something
(the function's docstring says why Hugging Face's initialisation alone does not give that).

These models are not registered with :mod:`ane_lib.models.registry`: they stand for the
models a user brings. :func:`entry_point` gives the ``module:function(...)`` string with which
``ane-lib verify --model`` rebuilds one, the way a user points it at their own code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal, get_args

import torch
from torch import nn

from ane_lib._checks import check_choice, check_nonnegative_int, check_positive_int
from ane_lib._optional import import_optional
from ane_lib.coreml.signature import TensorSpec, sample_inputs
from ane_lib.models.weights import unit_variance_init_

__all__ = [
    "INITS",
    "TASKS",
    "ZOO",
    "Init",
    "Task",
    "ZooEntry",
    "build",
    "entry_point",
    "zoo_entry",
    "zoo_inputs",
    "zoo_names",
]

Task = Literal["image", "text"]
TASKS: tuple[Task, ...] = get_args(Task)
#: How :func:`build` initialises: ``"unit_variance"`` (the class's initialisation, then
#: :func:`~ane_lib.models.unit_variance_init_`) or ``"transformers"`` (the class's alone).
Init = Literal["unit_variance", "transformers"]
INITS: tuple[Init, ...] = get_args(Init)

#: Classes of every classifier head in the zoo.
NUM_LABELS = 10
#: The batch size baked into every zoo package.
BATCH = 1

# Tiny variants shared by several families: four one-block stages (CNNs and hierarchical
# transformers), a two-layer ViT, a two-layer text encoder.
_STAGES_TINY = {"hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 1, 1]}
_RESNET_TINY = {"embedding_size": 16, "hidden_sizes": [32, 64, 128, 256], "depths": [1, 1, 1, 1]}
_MIT_TINY = {**_STAGES_TINY, "num_attention_heads": [1, 1, 2, 4]}
_VIT_TINY = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
    "patch_size": 8,
}
_TEXT_TINY = {
    "vocab_size": 1000,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 128,  # room for the 128 tokens of the full entries
}


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """One model of the zoo.

    ``family``: the ``transformers`` prefix (``"MobileNetV2"`` -> ``MobileNetV2Config`` and
    ``MobileNetV2ForImageClassification`` or ``...ForSequenceClassification``). ``size``: image
    side (pixels) or sequence length (tokens) of the full entry; ``config``: its overrides of
    the configuration class's defaults. ``tiny_size`` and ``tiny``: the same for the tiny
    variant (``tiny`` is applied on top of ``config``). ``architecture``: what the full entry
    is, in the model authors' words. ``note``: what a reader should know (a known failure).
    """

    name: str
    family: str
    task: Task
    architecture: str
    size: int
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    tiny_size: int = 64
    tiny: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    note: str = ""

    @property
    def config_class(self) -> str:
        return f"{self.family}Config"

    @property
    def model_class(self) -> str:
        head = "ImageClassification" if self.task == "image" else "SequenceClassification"
        return f"{self.family}For{head}"


def _image(name: str, family: str, architecture: str, size: int = 224, **kw: Any) -> ZooEntry:
    return ZooEntry(name, family, "image", architecture, size, **kw)


def _text(name: str, family: str, architecture: str, **kw: Any) -> ZooEntry:
    return ZooEntry(name, family, "text", architecture, 128, tiny_size=16, **kw)


#: The zoo, vision models first. Full entries use the configuration class's defaults (the
#: architecture named) unless ``config`` overrides them.
ZOO: tuple[ZooEntry, ...] = (
    _image(
        "mobilenet_v1",
        "MobileNetV1",
        "MobileNetV1 1.0",
        tiny={"depth_multiplier": 0.25},
    ),
    _image(
        "mobilenet_v2",
        "MobileNetV2",
        "MobileNetV2 1.0",
        tiny={"depth_multiplier": 0.35},
    ),
    _image(
        "mobilevit",
        "MobileViT",
        "MobileViT-S",
        size=256,
        tiny={"hidden_sizes": [32, 48, 64], "neck_hidden_sizes": [8, 16, 24, 32, 40, 48, 96]},
    ),
    _image(
        "mobilevit_v2",
        "MobileViTV2",
        "MobileViTv2 1.0",
        size=256,
        tiny={"width_multiplier": 0.25, "n_attn_blocks": [1, 1, 1]},
    ),
    _image(
        "efficientnet_b0",
        "EfficientNet",
        "EfficientNet-B0",
        config={"width_coefficient": 1.0, "depth_coefficient": 1.0, "hidden_dim": 1280},
        tiny={"width_coefficient": 0.25, "depth_coefficient": 0.25, "hidden_dim": 320},
    ),
    _image(
        "resnet50",
        "ResNet",
        "ResNet-50",
        tiny=_RESNET_TINY,
    ),
    _image(
        "regnet_y_040",
        "RegNet",
        "RegNetY-4.0GF",
        tiny={
            "embedding_size": 16,
            "hidden_sizes": [16, 32, 64, 128],
            "depths": [1, 1, 1, 1],
            "groups_width": 8,
        },
    ),
    _image(
        "bit_50",
        "Bit",
        "BiT-M R50x1",
        tiny={**_RESNET_TINY, "num_groups": 4},
    ),
    _image(
        "convnext_tiny",
        "ConvNext",
        "ConvNeXt-T",
        tiny=_STAGES_TINY,
    ),
    _image(
        "convnextv2_tiny",
        "ConvNextV2",
        "ConvNeXt V2-T",
        tiny=_STAGES_TINY,
    ),
    _image(
        "poolformer_s12",
        "PoolFormer",
        "PoolFormer-S12",
        tiny=_STAGES_TINY,
    ),
    _image(
        "vit_base",
        "ViT",
        "ViT-B/16",
        tiny=_VIT_TINY,
    ),
    _image(
        "deit_base",
        "DeiT",
        "DeiT-B/16",
        tiny=_VIT_TINY,
    ),
    _image(
        "beit_base",
        "Beit",
        "BEiT-B/16",
        tiny=_VIT_TINY,
    ),
    _image(
        "dinov2_base",
        "Dinov2",
        "DINOv2 ViT-B/14",
        tiny={k: v for k, v in _VIT_TINY.items() if k != "intermediate_size"},
    ),
    _image(
        "swin_tiny",
        "Swin",
        "Swin-T, 7x7 windows",
        tiny={
            "embed_dim": 16,
            "depths": [1, 1, 2, 1],
            "num_heads": [1, 2, 2, 4],
            "patch_size": 2,
            "window_size": 4,
        },
    ),
    _image(
        "focalnet_tiny",
        "FocalNet",
        "FocalNet-T (SRF)",
        tiny={"embed_dim": 16, "hidden_sizes": [32, 64, 128, 128], "depths": [1, 1, 1, 1]},
    ),
    _image(
        "levit_128s",
        "Levit",
        "LeViT-128S",
        tiny={
            "hidden_sizes": [32, 48, 64],
            "num_attention_heads": [2, 3, 4],
            "depths": [1, 1, 1],
            "key_dim": [8, 8, 8],
        },
    ),
    _image(
        "cvt_13",
        "Cvt",
        "CvT-13",
        # depth[i] > i: CvT indexes its drop-path rates of stage i by i
        tiny={"embed_dim": [16, 32, 64], "num_heads": [1, 2, 4], "depth": [1, 2, 3]},
    ),
    _image(
        "pvt_v2_b0",
        "PvtV2",
        "PVTv2-B0",
        tiny=_MIT_TINY,
    ),
    _image(
        "segformer_b0",
        "Segformer",
        "MiT-B0 (SegFormer's encoder)",
        tiny=_MIT_TINY,
    ),
    _image(
        "swiftformer_xs",
        "SwiftFormer",
        "SwiftFormer-XS",
        tiny={"depths": [1, 1, 1, 1], "embed_dims": [16, 24, 32, 48]},
    ),
    _image(
        "hiera_base",
        "Hiera",
        "Hiera-B",
        tiny={"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2]},
        note="mask-unit attention reshapes to rank 6",
    ),
    _text(
        "distilbert_base",
        "DistilBert",
        "DistilBERT-base",
        tiny={
            "vocab_size": 1000,
            "dim": 64,
            "n_layers": 2,
            "n_heads": 2,
            "hidden_dim": 128,
            "max_position_embeddings": 128,
        },
    ),
    _text("bert_base", "Bert", "BERT-base", tiny=_TEXT_TINY),
    _text("roberta_base", "Roberta", "RoBERTa-base", tiny=_TEXT_TINY),
    _text(
        "albert_base",
        "Albert",
        "ALBERT-base v2",
        config={"hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072},
        tiny=_TEXT_TINY,
    ),
    _text("electra_small", "Electra", "ELECTRA-small discriminator", tiny=_TEXT_TINY),
    _text(
        "mobilebert",
        "MobileBert",
        "MobileBERT",
        tiny={
            **_TEXT_TINY,
            "embedding_size": 32,
            "intra_bottleneck_size": 32,
            "true_hidden_size": 32,
        },
    ),
    _text(
        "deberta_v3_base",
        "DebertaV2",
        "DeBERTa-v3-base",
        config={
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "pooler_hidden_size": 768,
        },
        tiny={**_TEXT_TINY, "pooler_hidden_size": 64},
    ),
    _text(  # the tiny variants keep the vocabulary: the special token ids lie at its end
        "modernbert_base",
        "ModernBert",
        "ModernBERT-base",
        tiny={k: v for k, v in _TEXT_TINY.items() if k != "vocab_size"},
    ),
    _text(
        "gpt2",
        "GPT2",
        "GPT-2 (124M), last-token classifier",
        config={"use_cache": False},
        tiny={"n_embd": 64, "n_layer": 2, "n_head": 2, "n_positions": 128},
    ),
)

_BY_NAME = {e.name: e for e in ZOO}


def zoo_names(task: Task | None = None) -> list[str]:
    """Names of the zoo's models in the zoo's order; only those of ``task`` if given."""
    if task is not None:
        check_choice("task", task, TASKS)
    return [e.name for e in ZOO if task is None or e.task == task]


def zoo_entry(name: str) -> ZooEntry:
    """The entry called ``name`` (one of :func:`zoo_names`)."""
    check_choice("name", name, list(_BY_NAME))
    return _BY_NAME[name]


def _transformers() -> Any:
    return import_optional("transformers", extra="hf", needed_for="the zoo's models")


def _size(entry: ZooEntry, tiny: bool, size: int | None) -> int:
    if size is None:
        return entry.tiny_size if tiny else entry.size
    return check_positive_int("size", size)


def _config(entry: ZooEntry, tiny: bool, size: int) -> Any:
    config_class = getattr(_transformers(), entry.config_class)
    values: dict[str, Any] = {"num_labels": NUM_LABELS, **entry.config}
    if tiny:
        values.update(entry.tiny)
    defaults = config_class()
    if entry.task == "image" and hasattr(defaults, "image_size"):
        values["image_size"] = size if isinstance(defaults.image_size, int) else [size, size]
    return config_class(**values)


def zoo_inputs(name: str, *, tiny: bool = False, size: int | None = None) -> dict[str, TensorSpec]:
    """The inputs of ``name``'s package: ``{"pixel_values": (1, 3, size, size)}`` floats in
    ``[0, 1)``, or ``{"input_ids": (1, size), "attention_mask": (1, size)}`` int32 (ids in
    ``[0, vocab)``, a 0/1 mask)."""
    entry = zoo_entry(name)
    side = _size(entry, tiny, size)
    if entry.task == "image":
        return {"pixel_values": TensorSpec((BATCH, 3, side, side))}
    vocab = int(_config(entry, tiny, side).vocab_size)
    return {
        "input_ids": TensorSpec((BATCH, side), torch.int32, high=vocab),
        "attention_mask": TensorSpec((BATCH, side), torch.int32, high=2),
    }


def build(
    name: str,
    *,
    tiny: bool = False,
    size: int | None = None,
    seed: int = 0,
    init: Init = "unit_variance",
) -> nn.Module:
    """The zoo model ``name`` with random weights, in eval mode.

    Args:
        name: one of :func:`zoo_names`, e.g. ``"mobilenet_v2"``.
        tiny: build the tiny variant (fewer, narrower layers) instead of the full entry.
        size: image side or sequence length (default: the entry's, or its tiny one's); a
            vision transformer's position embeddings are made for it.
        seed: seed of the weights; the same arguments give the same weights. The caller's
            random state is left untouched.
        init: ``"unit_variance"`` (default) rescales every linear and conv layer to unit
            output scale on the entry's sample inputs (seeded with ``seed``), as trained
            weights have; ``"transformers"`` keeps the class's own initialisation.
    """
    entry = zoo_entry(name)
    check_nonnegative_int("seed", seed)
    check_choice("init", init, INITS)
    side = _size(entry, tiny, size)
    config = _config(entry, tiny, side)
    model_class = getattr(_transformers(), entry.model_class)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: nn.Module = model_class(config).eval()
    if init == "unit_variance":
        sample = sample_inputs(zoo_inputs(name, tiny=tiny, size=side), seed)
        unit_variance_init_(model, **sample)
    return model


def entry_point(
    name: str,
    *,
    tiny: bool = False,
    size: int | None = None,
    seed: int = 0,
    init: Init = "unit_variance",
) -> str:
    """``ane-lib verify --model`` value that rebuilds this model, e.g.
    ``"ane_lib.zoo:build('swin_tiny', tiny=True)"`` (arguments at their defaults left out)."""
    entry = zoo_entry(name)
    args = [repr(name)]
    if tiny:
        args.append("tiny=True")
    if size is not None and size != _size(entry, tiny, None):
        args.append(f"size={size}")
    if seed:
        args.append(f"seed={seed}")
    if init != "unit_variance":
        args.append(f"init={init!r}")
    return f"ane_lib.zoo:build({', '.join(args)})"
